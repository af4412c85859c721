"""The integration tests' fixtures: the real local services (tests/support/service_fixtures.py)."""

from __future__ import annotations

from tests.support.service_fixtures import (  # noqa: F401 - fixtures
    catalog_secret,
    job_dependencies,
    kafka_bootstrap,
    layout,
    moto_endpoint,
    mysql,
    pipe,
    postgres,
    s3_endpoint,
    spark,
    start_livy,
    supervisor,
)
