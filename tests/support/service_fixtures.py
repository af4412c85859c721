"""Fixtures that start the real local services (idempotently) and hand out their addresses.

A service already running (from `make up`) is reused and left running; one that is not is
started for the session and stopped at its end, clients before the servers they use, without
saving moto's registry over the one `make down` saved for the stack.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spotlake import maven, stack
from spotlake.stack import StackLayout
from spotlake_dev.localstack import kafka_server, livy_server, s3_server, services
from spotlake_dev.localstack.process import Supervisor, free_port


@pytest.fixture(scope="session")
def layout() -> StackLayout:
    layout = StackLayout.default()
    layout.ensure()
    return layout


@pytest.fixture(scope="session")
def supervisor(layout: StackLayout) -> Iterator[Supervisor]:
    supervisor = Supervisor(layout)
    before = running(layout, supervisor)
    yield supervisor
    started = running(layout, supervisor) - before
    for name in stop_order(started):
        supervisor.stop(name)


def running(layout: StackLayout, supervisor: Supervisor) -> set[str]:
    names = {p.stem for p in layout.run_dir.glob("*.pid")} if layout.run_dir.exists() else set()
    return {n for n in names if n != "mariadbd" and supervisor.is_running(n)}


def stop_order(names: set[str]) -> list[str]:
    """Clients first, the servers they use last (as `make down` stops them)."""
    from spotlake_dev.localstack.__main__ import STOP_LAST, STOP_ORDER

    ordered = [n for n in STOP_ORDER if n in names]
    ordered += sorted(n for n in names if n not in STOP_ORDER and n not in STOP_LAST)
    return ordered + [n for n in STOP_LAST if n in names]


@pytest.fixture(scope="session")
def mysql(layout: StackLayout, supervisor: Supervisor) -> dict[str, str]:
    supervisor.start(services.mariadb_spec(layout))
    services.bootstrap_mariadb(layout)
    return stack.mysql_settings(layout)


@pytest.fixture(scope="session")
def postgres(layout: StackLayout, supervisor: Supervisor) -> dict[str, str]:
    supervisor.start(services.postgres_spec(layout))
    services.bootstrap_postgres(layout)
    return services.postgres_settings(layout)


@pytest.fixture(scope="session")
def moto_endpoint(layout: StackLayout, supervisor: Supervisor) -> Iterator[str]:
    """moto server (DynamoDB, Secrets Manager, EMR) and the local S3 server, with the process's
    AWS environment pointing at them (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``)."""
    supervisor.start(s3_server.s3_spec(layout))
    supervisor.start(services.moto_spec(layout))
    saved = {k: os.environ.get(k) for k in stack.aws_env(layout)}
    os.environ.update(stack.aws_env(layout))
    yield stack.moto_endpoint(layout)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_endpoint(layout: StackLayout, moto_endpoint: str) -> str:
    """The local S3 server's URL (started with moto by ``moto_endpoint``)."""
    return stack.s3_endpoint(layout)


@pytest.fixture(scope="session")
def catalog_secret(layout: StackLayout, postgres: dict[str, str], moto_endpoint: str) -> str:
    """A Secrets Manager secret of the lake's JDBC catalog database (the stack's PostgreSQL)."""
    from tests.support.stream_harness import lake_catalog_secret

    return lake_catalog_secret(postgres)


@pytest.fixture(scope="session")
def kafka_bootstrap(layout: StackLayout, supervisor: Supervisor) -> str:
    maven.resolve_jars(layout, "kafka")
    supervisor.start(kafka_server.kafka_spec(layout))
    return f"127.0.0.1:{layout.port('kafka')}"


_livy_ports = itertools.count(0)


@pytest.fixture(scope="session")
def job_dependencies(layout: StackLayout) -> Any:
    """The jobs' jars and Python archive, published where the operators publish job code (as
    `make up` does): every batch a local Livy runs gets them from there, never from its own Spark."""
    from spotlake import artifacts
    from spotlake import job_dependencies as deps

    return deps.build_and_publish(artifacts.artifacts_root(), layout=layout)


@pytest.fixture(scope="session")
def start_livy(layout: StackLayout, supervisor: Supervisor, job_dependencies: Any) -> Iterator[Callable[[str], str]]:
    """Start a named Livy server (one local cluster); returns its URL. Stopped at session end."""
    maven.resolve_jars(layout, "livy")
    maven.resolve_jars(layout, "spark")
    started: list[str] = []
    # below Linux's ephemeral range (32768-60999), where outgoing connections take ports
    base = int(layout.setting("SPOTLAKE_LIVY_TEST_BASE_PORT", "28998"))

    def start(name: str) -> str:
        port = free_port(base + next(_livy_ports))
        spec = livy_server.livy_spec(layout, name, port, master="local[2]")
        supervisor.start(spec)
        started.append(spec.name)
        return f"http://127.0.0.1:{port}"

    yield start
    for name in started:
        supervisor.stop(name)


# ------------------------------------------- the Spark jobs in-process (tests/support/job_harness.py)
@pytest.fixture(scope="session")
def spark(moto_endpoint: str, s3_endpoint: str, mysql: dict[str, str], job_dependencies: Any) -> Iterator[Any]:
    """One local Spark session with Iceberg for the in-process job tests (test_streaming.py has its own)."""
    from tests.support.job_harness import iceberg_session

    yield from iceberg_session(s3_endpoint)


@pytest.fixture
def pipe(mysql: dict[str, str], catalog_secret: str, spark: Any, tmp_path: Path) -> Iterator[Any]:
    """A pipeline of its own over a new orders table (job_harness.orders_pipeline), dropped afterwards."""
    from tests.support.job_harness import orders_pipeline

    env = orders_pipeline(mysql, catalog_secret, tmp_path)
    yield env
    env.sql(f"DROP TABLE IF EXISTS {env.table}")
