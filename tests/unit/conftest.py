"""Unit tests use moto's in-process mock and fakes; never a running service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession


@pytest.fixture(autouse=True)
def _no_service_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The integration fixtures point boto3 at moto server through AWS_ENDPOINT_URL for the
    # rest of the session; unit tests must reach moto's in-process mock instead.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One small local Spark session for the unit tests of the Spark jobs' pure parts."""
    existing = SparkSession.getActiveSession()
    if existing is not None:
        yield existing
        return
    session = (
        SparkSession.builder.master("local[1]")
        .appName("spotlake-unit")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    if SparkContext._active_spark_context is session.sparkContext:
        session.stop()
