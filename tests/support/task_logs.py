"""A task's log as stdlib records, for asserting on its exact lines with pytest's caplog.

Operators, sensors and hooks log through Airflow's structlog loggers (``self.log``); in a task
their lines are the task log. Here they are routed to the standard library's logger of the
same name (``airflow.task.operators.<module>.<class>``, ``airflow.task.hooks...``; an async
hook logs as ``<module>.<class>``), with the ``%s`` arguments formatted, so caplog sees each
line with its level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog


@contextmanager
def task_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` capturing every level of the task's loggers (and the core library's) while open."""
    before = structlog.get_config()
    structlog.configure(
        processors=[structlog.stdlib.PositionalArgumentsFormatter(), structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="airflow.task"):
            yield caplog
    finally:
        structlog.configure(**before)


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO, logger: str = "") -> list[str]:
    """The messages logged at exactly ``level`` by loggers whose name starts with ``logger``."""
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith(logger)]
