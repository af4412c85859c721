"""The PostgreSQL sink alone: one transaction per micro-batch, as the click-stream job commits it.

    PYTHONPATH=plugins:. .venv/bin/python bench/sink_bench.py --events 50000 --batches 5

The batches are the generator's records (seeded; 0.5% malformed), made into the
sink's rows in Python beforehand (``streaming_bench.python_rows``, what the Spark job's
aggregation collects), so only :meth:`spark_jobs.clickstream.sink.PostgresSinkWriter.write` is
timed: the staging ``COPY``, the set inserts and upserts, and the commit, split into those
parts. Consecutive batches carry on the same stream (new windows and returning users), as
a running stream's do. It is the part of every micro-batch that no Spark setting changes.

Needs PostgreSQL running (``make up``); creates and drops its own schema. Results go to
docs/benchmarks/sink.md unless --print-only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from streaming_bench import WINDOW_S, python_rows

from spark_jobs.clickstream.sink import PostgresSinkWriter
from spotlake import sink_schema
from spotlake.stack import StackLayout
from spotlake_dev.clickgen.behaviour import ClickStream, StreamConfig
from spotlake_dev.clickgen.rate import ConstantRate
from spotlake_dev.localstack import services

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "docs" / "benchmarks" / "sink.md"
COMMAND = "PYTHONPATH=plugins:. .venv/bin/python bench/sink_bench.py"


class Message:
    """What :func:`python_rows` reads of a Kafka message."""

    __slots__ = ("_key", "_value", "_offset", "_partition", "_ts")

    def __init__(self, key: bytes, value: bytes, offset: int, partition: int, ts: int) -> None:
        self._key, self._value, self._offset, self._partition, self._ts = key, value, offset, partition, ts

    def topic(self) -> str:
        return "clicks"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def timed_cursor(parts: dict[str, float]) -> type:
    """A cursor class that adds each statement's time to ``parts``, by what the statement does."""

    class Cursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, params: Any = None) -> Any:
            text = query.decode() if isinstance(query, bytes) else str(query)
            started = time.perf_counter()
            try:
                return super().execute(query, params)
            finally:
                kind = (
                    "aggregates and user/session sets"
                    if "click_aggregates" in text and "new_users" in text
                    else "funnel and its sets"
                    if "click_funnel" in text and "new_sessions" in text
                    else "other statements"
                )
                parts[kind] = parts.get(kind, 0.0) + time.perf_counter() - started

        def copy_expert(self, sql: str, file: Any, size: int = 8192) -> Any:
            started = time.perf_counter()
            try:
                return super().copy_expert(sql, file, size)
            finally:
                parts["COPY into staging"] = parts.get("COPY into staging", 0.0) + time.perf_counter() - started

    return Cursor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="records per batch (default 50,000)")
    parser.add_argument("--batches", type=int, default=5, help="batches, one after the other (default 5)")
    parser.add_argument("--print-only", action="store_true", help="print; do not write docs/benchmarks/sink.md")
    args = parser.parse_args(argv)

    layout = StackLayout.default()
    pg = services.postgres_settings(layout)

    def connect() -> Any:
        return psycopg2.connect(
            host=pg["host"], port=int(pg["port"]), user=pg["user"], password=pg["password"], dbname=pg["database"]
        )

    schema = f"sink_bench_{uuid.uuid4().hex[:8]}"
    admin = connect()
    with admin.cursor() as cur:
        cur.execute("SHOW shared_buffers")
        shared_buffers = cur.fetchone()[0]
    sink_schema.apply(admin, schema)
    start_ms = int(time.time() * 1000)
    config = StreamConfig(
        seed=3, start_ms=start_ms, users=5000, late_fraction=0.02, late_max_seconds=60, malformed_fraction=0.005
    )
    records = list(ClickStream(config, ConstantRate(1000.0)).records(count=args.events * args.batches))
    writer = PostgresSinkWriter(
        connect,
        schema,
        "bench",
        uuid.uuid4().hex,
        window_s=WINDOW_S,
        watermark_delay_s=600,
        late_policy="count",
        allowed_lateness_s=86400,
    )
    results: list[dict[str, float]] = []
    try:
        writer.claim()
        for batch in range(args.batches):
            chunk = records[batch * args.events : (batch + 1) * args.events]
            messages = [
                Message(key, value.encode(), batch * args.events + n, n % 3, start_ms)
                for n, (key, value, _, _) in enumerate(chunk)
            ]
            rows = python_rows(messages, None, None)
            parts: dict[str, float] = {}
            writer.connection.cursor_factory = timed_cursor(parts)
            started = time.perf_counter()
            writer.write(batch, lambda _wm, _final, r=rows: r)
            parts["whole transaction"] = time.perf_counter() - started
            parts["set members"] = float(len(rows.members))
            results.append(parts)
            print(f"batch {batch}: {parts['whole transaction']:.2f} s, {len(rows.members):,} set members", file=sys.stderr)
    finally:
        writer.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.commit()
        admin.close()

    names = [
        "COPY into staging",
        "aggregates and user/session sets",
        "funnel and its sets",
        "other statements",
        "whole transaction",
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# The PostgreSQL sink alone",
        "",
        f"Measured {now} on {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"the local PostgreSQL (same machine, `shared_buffers={shared_buffers}`).",
        "",
        f"Reproduce: `{COMMAND} --events {args.events} --batches {args.batches}`",
        "",
        f"{args.batches} batches of {args.events:,} records each (0.5% malformed), one transaction "
        f"each; median over the batches, {statistics.median(r['set members'] for r in results):,.0f} "
        "distinct-set members a batch (users, sessions, funnel sessions per key). The whole transaction "
        "runs from the call of `write` to its commit, and so also holds the Python work of building the "
        "`COPY` data and the commit.",
        "",
        "| part | median (s) | per batch (s) |",
        "|---|---:|---|",
    ]
    for name in names:
        values = [r.get(name, 0.0) for r in results]
        lines.append(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    whole = statistics.median(r["whole transaction"] for r in results)
    lines += [
        "",
        f"At {whole:.2f} s per {args.events:,} records, the sink alone takes at most "
        f"{args.events / whole:,.0f} events/s on this machine, whatever computes the rows.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.print_only:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
