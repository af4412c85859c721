"""What the cluster-loss tests (tests/e2e/test_cluster_loss.py) and bench/recovery_bench.py share:
the fleet's loop in a thread, a large source table, a call in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from spotlake.fleet import Fleet
from spotlake.pools import PoolConfig
from tests.support.extraction_harness import ExtractionEnv, base_window, naive

ROWS = 300_000  # the rotation test's table


class FleetLoop:
    """What the fleet DAG does every health-check interval, in a background thread."""

    def __init__(self, fleet: Fleet, pool: PoolConfig) -> None:
        self.fleet, self.pool = fleet, pool
        self.events: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            report = self.fleet.check_health(self.pool)
            self.fleet.heal(self.pool, report)
            self.fleet.rotate(self.pool, report)
            self.fleet.drain(self.pool, report)
            now = time.monotonic()
            self.events.extend((now, line) for line in report.lines())
            self._stop.wait(self.pool.health_check_interval.total_seconds())

    def first(self, needle: str) -> float | None:
        return next((t for t, line in self.events if needle in line), None)

    def __enter__(self) -> FleetLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def big_table(env: ExtractionEnv, name: str, rows: int) -> tuple[str, datetime]:
    """A table of ``rows`` rows from before the pipeline: its initial snapshot runs for a while."""
    table = f"{name}_{env.tag}"
    w = base_window()
    with env.connect().cursor() as cur:
        cur.execute(f"""CREATE TABLE {table} (
            id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
            amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL,
            KEY ix_updated (updated_at))""")
        cur.execute(
            f"INSERT INTO {table} SELECT seq, CONCAT('customer-', seq %% 997), ELT(1 + seq %% 3, 'placed', 'paid', "
            f"'shipped'), (seq %% 10000) / 4, TIMESTAMPADD(MICROSECOND, -(seq %% 86400000) * 1000, %s), NULL "
            f"FROM seq_1_to_{rows}",
            (naive(w - timedelta(days=1)),),
        )
    return table, w


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test to raise
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out
