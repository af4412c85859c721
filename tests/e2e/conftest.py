"""End-to-end tests use the same service fixtures as the integration tests (tests/support/service_fixtures.py)."""

from __future__ import annotations

import pytest

from tests.support.browser import SCREENSHOTS
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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say where the browser tests saved their screenshots."""
    for folder in config.stash.get(SCREENSHOTS, []):
        terminalreporter.write_line(f"operations page screenshots: {folder}")
