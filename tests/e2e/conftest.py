"""End-to-end tests use the same service fixtures as the integration tests (tests/support/service_fixtures.py)."""

from __future__ import annotations

from tests.support.service_fixtures import (  # noqa: F401 - fixtures
    catalog_secret,
    job_dependencies,
    kafka_bootstrap,
    layout,
    moto_endpoint,
    mysql,
    postgres,
    s3_endpoint,
    start_livy,
    supervisor,
)
