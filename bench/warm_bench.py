"""Warm execution against the batch path, on the local stack: one run, side by side.

For each path (a window as a statement in a long-lived Livy session; a window as a Livy batch of
its own) on one local cluster (a Livy server, ``local[2]``):

- task start -> commit of a quiet window (no changed row) and of a 20,000-row window (every row of
  a 20,000-row table updated inside the window), p50 and p95 over ``--windows`` of each: the time
  from the operator's ``execute`` to its committed summary, with the deferral and its trigger run
  in process (no scheduler: Airflow's own scheduling latency is not in these figures);
- table-windows per cluster per five minutes: as many workers as the cluster has slots (2) each
  run quiet windows of a pipeline of its own back to back for ``--seconds``; the count is scaled to
  five minutes.

Beside them, the limit: the same 20,000-row window read by connectorx into Arrow.

    PYTHONPATH=plugins:. .venv/bin/python bench/warm_bench.py --windows 8 --seconds 150

Needs the core services running (`python -m spotlake_dev.localstack up core`). Writes
docs/benchmarks/warm-sessions.md unless --print-only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import connectorx as cx

from spark_jobs.common.lake_state import parse_iso
from spotlake import artifacts, job_dependencies, stack
from spotlake.stack import StackLayout
from spotlake_dev.demo import CATALOG_SECRET_ID, aws_resources
from spotlake_dev.localstack import livy_server
from spotlake_dev.localstack.process import Supervisor, free_port
from tests.support.extraction_harness import (
    ExtractionEnv,
    aws_connection,
    run_operator,
)

ROOT = Path(__file__).resolve().parents[1]

FIVE = timedelta(minutes=5)
ROWS = 20_000
QUIET_JOB: dict[str, list[float]] = {}  # path -> seconds inside the job of each quiet window (its phases)
PHASES: dict[tuple[str, str], list[float]] = {}  # (path, job phase) -> seconds of each busy window
SESSIONS = {"per_cluster": 2, "inline_wait": "20s", "statement_timeout": "30m"}


def naive(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Path_:
    """One path (sessions or batches): its environment (registry, lake, pool) and its tables."""

    def __init__(self, name: str, env: ExtractionEnv, endpoint: str) -> None:
        self.name, self.env, self.endpoint = name, env, endpoint

    def environ(self) -> dict[str, str]:
        return {**self.env.environ(), "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(self.endpoint)}

    def table(self, name: str) -> tuple[str, str, datetime]:
        """A table of ROWS rows and its pipeline (lookback 0: a window reads only its own range),
        with its initial snapshot done; returns (table, pipeline, first window after the snapshot)."""
        env = self.env
        table = f"{name}_{env.tag}"
        with env.connect().cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"""CREATE TABLE {table} (
                id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
                amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL,
                KEY ix_updated (updated_at))""")
            cur.execute(
                f"INSERT INTO {table} SELECT seq, CONCAT('c', seq %% 97), 'placed', seq / 4, %s, NULL FROM seq_1_to_{ROWS}",
                (naive(datetime.now(UTC) - timedelta(days=1)),),
            )
        pipeline = env.add_pipeline(f"{name}_{env.tag}", table, lookback="0s")
        first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
        run_operator(env.operator(pipeline), first, first + FIVE)
        watermark = parse_iso(env.state(pipeline).watermark)
        start = watermark.replace(second=0, microsecond=0) + FIVE - timedelta(minutes=watermark.minute % 5)
        return table, pipeline, start

    def window(self, pipeline: str, start: datetime) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        result = run_operator(self.env.operator(pipeline), start, start + FIVE)
        return time.perf_counter() - started, result

    def phases(self, pipeline: str, start: datetime) -> dict[str, float]:
        """The job's own phase timings of the window (its record in the registry)."""
        record = self.env.lake_state.window(pipeline, start.strftime("%Y%m%dT%H%M%SZ"))
        return dict(record.timings or {}) if record else {}


def with_environ(values: dict[str, str]) -> dict[str, str | None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    return saved


def restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def latencies(path: Path_, windows: int) -> tuple[dict[str, list[float]], str, datetime]:
    table, pipeline, start = path.table(f"lat{path.name}")
    quiet: list[float] = []
    busy: list[float] = []
    # One unmeasured window first: a session's start and code loading are paid once per session.
    path.window(pipeline, start)
    start += FIVE
    for _ in range(windows):
        seconds, result = path.window(pipeline, start)
        assert result["rows_read"] == 0, result
        quiet.append(seconds)
        QUIET_JOB.setdefault(path.name, []).append(sum(path.phases(pipeline, start).values()))
        start += FIVE
        with path.env.connect().cursor() as cur:
            cur.execute(f"UPDATE {table} SET status = 'paid', updated_at = %s", (naive(start + timedelta(seconds=30)),))
        seconds, result = path.window(pipeline, start)
        assert result["rows_read"] == ROWS and result["rows_written"] == ROWS, result
        busy.append(seconds)
        for name, value in path.phases(pipeline, start).items():
            PHASES.setdefault((path.name, name), []).append(value)
        start += FIVE
        print(f"{path.name}: quiet {quiet[-1]:.2f} s, {ROWS:,} rows {busy[-1]:.2f} s", flush=True)
    return {"quiet": quiet, "busy": busy}, table, start


def throughput(path: Path_, seconds: float, workers: int = 2) -> int:
    tables = [path.table(f"tp{path.name}{n}") for n in range(workers)]
    for _, pipeline, start in tables:  # warm the sessions (or the batch path's caches) first
        path.window(pipeline, start)
    done = [0] * workers
    deadline = time.monotonic() + seconds

    def work(n: int) -> None:
        _, pipeline, start = tables[n]
        start += FIVE
        while time.monotonic() < deadline:
            path.window(pipeline, start)
            if time.monotonic() <= deadline:
                done[n] += 1
            start += FIVE

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def limit_read(path: Path_, table: str, start: datetime, windows: int) -> list[float]:
    m = path.env.mysql
    uri = f"mysql://{m['user']}:{m['password']}@{m['host']}:{m['port']}/{m['database']}"
    with path.env.connect().cursor() as cur:
        cur.execute(f"UPDATE {table} SET updated_at = %s", (naive(start + timedelta(seconds=30)),))
    query = f"SELECT * FROM {table} WHERE updated_at >= '{naive(start)}' AND updated_at < '{naive(start + FIVE)}'"
    times = []
    for _ in range(windows):
        started = time.perf_counter()
        arrow = cx.read_sql(uri, query, return_type="arrow")
        times.append(time.perf_counter() - started)
        assert arrow.num_rows == ROWS
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()

    layout = StackLayout.default()
    supervisor = Supervisor(layout)
    mysql = stack.mysql_settings(layout)
    os.environ.update(stack.aws_env(layout))
    endpoint = stack.moto_endpoint(layout)
    aws_resources(layout)  # the lake catalog's secret, as `make up` creates it
    job_dependencies.build_and_publish(artifacts.artifacts_root(), layout=layout)
    port = free_port(27998)
    spec = livy_server.livy_spec(layout, "bench-warm", port, master="local[2]")
    supervisor.start(spec)
    livy_url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="warm-bench-"))
    for name in ("warm", "cold"):
        (tmp / name).mkdir()
    paths = [
        Path_(
            "session",
            ExtractionEnv(mysql, endpoint, livy_url, tmp / "warm", CATALOG_SECRET_ID, sessions=dict(SESSIONS)),
            endpoint,
        ),
        Path_("batch", ExtractionEnv(mysql, endpoint, livy_url, tmp / "cold", CATALOG_SECRET_ID), endpoint),
    ]
    figures: dict[str, dict[str, Any]] = {}
    try:
        for path in paths:
            saved = with_environ(path.environ())
            try:
                lat, table, start = latencies(path, args.windows)
                count = throughput(path, args.seconds)
                figures[path.name] = {"quiet": lat["quiet"], "busy": lat["busy"], "per_5min": count * 300.0 / args.seconds}
                if path.name == "session":
                    figures["limit"] = {"busy": limit_read(path, table, start, args.windows)}
            finally:
                restore(saved)
            print(f"{path.name}: {figures[path.name]['per_5min']:.0f} table-windows per 5 min", flush=True)
    finally:
        supervisor.stop(spec.name)
    report = render(figures, args)
    print(report)
    if not args.print_only:
        (ROOT / "docs" / "benchmarks" / "warm-sessions.md").write_text(report)
    return 0


def render(figures: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    s, b, lim = figures["session"], figures["batch"], figures["limit"]

    def row(name: str, values: list[float] | None) -> str:
        if not values:
            return f"| {name} | – | – |"
        return f"| {name} | {statistics.median(values):.2f} | {pct(values, 0.95):.2f} |"

    ratio = s["per_5min"] / b["per_5min"] if b["per_5min"] else float("inf")
    return "\n".join(
        [
            "# Warm execution: windows as statements in long-lived Livy sessions",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d} on the local stack (2 cores, one local cluster: a Livy",
            "server running `local[2]`), one run, both paths side by side:",
            "`PYTHONPATH=plugins:. .venv/bin/python bench/warm_bench.py "
            f"--windows {args.windows} --seconds {args.seconds:.0f}` with `python -m spotlake_dev.localstack up core` running.",
            "",
            "Task start -> commit: from the operator's `execute` to its committed summary (the deferral's",
            "trigger runs in process; Airflow's scheduling latency is not included). A quiet window has no",
            f"changed row; a busy window updates all {ROWS:,} rows of its table inside the window. Each path",
            "ran one unmeasured window first (a session's start and code loading are paid once per session).",
            "",
            f"## Task start -> commit, seconds ({args.windows} windows of each)",
            "",
            "| path | p50 | p95 |",
            "|---|---|---|",
            row("statement, quiet window", s["quiet"]),
            row(f"statement, {ROWS:,}-row window", s["busy"]),
            row("batch, quiet window", b["quiet"]),
            row(f"batch, {ROWS:,}-row window", b["busy"]),
            row(f"limit: connectorx -> Arrow, the {ROWS:,} rows (read only)", lim["busy"]),
            row("statement, quiet window: inside the job (sum of its phases)", QUIET_JOB.get("session")),
            row("batch, quiet window: inside the job (sum of its phases)", QUIET_JOB.get("batch")),
            "",
            f"Inside the job, the {ROWS:,}-row windows' phases (p50 seconds; `spark_jobs/extraction/run.py`):",
            "",
            "| phase | statement | batch |",
            "|---|---|---|",
            *[
                f"| `{phase}` | {statistics.median(PHASES.get(('session', phase), [0])):.2f} | "
                f"{statistics.median(PHASES.get(('batch', phase), [0])):.2f} |"
                for phase in sorted({p for _, p in PHASES})
            ],
            "",
            "## Table-windows per cluster per five minutes",
            "",
            "Two workers (the cluster's two slots), each running quiet windows of a pipeline of its own back to",
            f"back for {args.seconds:.0f} s; the count scaled to five minutes.",
            "",
            "| path | table-windows / 5 min |",
            "|---|---|",
            f"| statement | {s['per_5min']:.0f} |",
            f"| batch | {b['per_5min']:.0f} |",
            f"| ratio | {ratio:.1f}x |",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
