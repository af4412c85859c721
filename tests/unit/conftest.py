"""Unit tests use moto's in-process mock and fakes; never a running service.

A unit test that starts another process says so with a marker (``pyproject.toml``):
``spark`` (it starts a local Spark JVM; any test using the ``spark`` fixture is marked by
itself) or ``tools`` (it runs another program: Maven, Java, compose, pip, a shell, a CLI or
worker processes). ``make unit`` runs the rest, the pure tier, in one process; an unmarked
test that starts a process fails (tests/support/process_guard.py), naming the process and
the markers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore.loaders import Loader
from pyspark import SparkContext
from pyspark.sql import SparkSession

from spotlake import expressions
from tests.support import task_logs
from tests.support.process_guard import ProcessGuard

UNIT_DIR = Path(__file__).resolve().parent
# Fixtures that start a process, and the marker a test using one (directly or through
# another fixture) gets.
PROCESS_FIXTURES = {"spark": "spark"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_DIR not in Path(str(item.fspath)).parents:
            continue
        for fixture, marker in PROCESS_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


# ---------------------------------------------------------------- no process from a pure test


_GUARD = ProcessGuard()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _GUARD.phase(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _GUARD.phase(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield from _GUARD.phase(item)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_service_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The integration fixtures point boto3 at moto server through AWS_ENDPOINT_URL for the
    # rest of the session; unit tests must reach moto's in-process mock instead.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _one_botocore_loader() -> Iterator[None]:
    # moto gives every mock a new boto3 default session, and each new botocore session parses
    # botocore's JSON (endpoints, partitions, service models) again: a tenth of a second for
    # each test that makes a client. Here the sessions share one loader, as one session's
    # clients do; what they load is read-only to them.
    loaders: dict[str | None, Loader] = {}
    real = botocore.session.create_loader

    def shared(search_path_string: str | None = None) -> Loader:
        if search_path_string not in loaders:
            loaders[search_path_string] = real(search_path_string)
        return loaders[search_path_string]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", shared)
        yield


@pytest.fixture(autouse=True, scope="session")
def _fresh_expression_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Expressions that passed Spark's parser are remembered in the temp folder across runs; a
    # test must not start a JVM or not depending on what an earlier run left there.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(expressions, "CACHE_DIR", tmp_path_factory.mktemp("checked-expressions"))
        yield


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog with the lines operators, sensors and hooks log (Airflow's structlog loggers) as records."""
    with task_logs.task_log(caplog) as captured:
        yield captured


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
