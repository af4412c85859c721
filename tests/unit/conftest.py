"""Unit tests use moto's in-process mock and fakes; never a running service."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_service_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The integration fixtures point boto3 at moto server through AWS_ENDPOINT_URL for the
    # rest of the session; unit tests must reach moto's in-process mock instead.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
