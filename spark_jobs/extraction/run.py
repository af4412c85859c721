"""Extract one job of one MySQL table into the lake: a window, the initial snapshot, or a
reconciliation (:mod:`spark_jobs.extraction.reconcile`, which builds on the reads and commits here).

:func:`run_extraction` is a function of (Spark session, job), so it runs the same
in a one-shot ``spark-submit`` (see ``extraction/main.py``) and in a long-lived session.

- A **window** job reads the rows whose cursor lies in the window's planned range
  ``[read_from, end)`` (planned by the operator from the pipeline's committed watermark,
  so a pause or a failed window leaves no gap), in chunks of at most
  ``read.window_chunk_s`` seconds, each committed on its own and each moving the
  watermark forward.
- A window reads only up to the start of the oldest transaction still open on the source (less
  ``read.open_transaction_margin_s``), so rows that transaction commits later, with cursor values
  from before their commit, are read by a later window (see docs/types.md).
- The **snapshot** job is the initial load: the rows already in the table, read in
  primary-key chunks of ``read.chunk_rows`` rows, each committed on its own and recorded
  in the registry, so a new attempt (after a cluster death) resumes after the last
  committed chunk. When the last chunk is committed the snapshot is DONE and the
  watermark starts at the time the snapshot began (on the source's clock): every row
  changed since is read by the windows.

Each chunk: read and transform the rows and keep them on the executors (outside the
lock), then under the pipeline's commit lock evolve the tables' schema, commit the
changes table and the current-state table (:mod:`spark_jobs.extraction.lake_commit`), and record
the commit (watermark, window record) in the same registry transaction that frees the
lock. A chunk that read no rows and that no earlier attempt touched commits nothing to
Iceberg; only the watermark moves.

Phases, timed into the result's ``timings`` (summed over chunks): ``secret_s``,
``catalog_s``, ``validate_s``, ``read_s`` (count, fetch, transform, cache), ``lock_s``
(waiting for the commit lock), ``schema_s``, ``changes_s``, ``current_s``, ``record_s``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import boto3
import pyspark.sql.functions as F
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import IntegerType, LongType

from spark_jobs.common.commit_lock import take_lock
from spark_jobs.common.errors import CommitConflict, ExtractionError
from spark_jobs.common.job_documents import UTC, ExtractJob, quote_identifier
from spark_jobs.common.lake_catalog import configure_catalog, current_snapshot, ensure_tables, live_rows
from spark_jobs.common.lake_state import (
    SNAPSHOT_LABEL,
    LakeState,
    Owner,
    PipelineState,
    SnapshotPhase,
    WindowRecord,
    iso,
    parse_iso,
)
from spark_jobs.extraction.data_errors import data_error
from spark_jobs.extraction.lake_commit import (
    Chunk,
    CommitResult,
    aligned,
    commit_properties,
    merge_current,
    replace_changes,
    with_change_columns,
)
from spark_jobs.extraction.mysql_source import (
    ReadLimit,
    SourceTable,
    TimeLine,
    check_table,
    chunk_condition,
    chunk_upper,
    describe_table,
    jdbc_connection,
    open_transactions,
    range_condition,
    read_limit,
    read_rows,
    read_stats,
    resolve_source,
    source_now,
    time_line,
)
from spark_jobs.extraction.source_types import CARRIED, INVALID_DATES, SOURCE_HASH
from spark_jobs.extraction.transforms import KeyColumns, apply_transforms

__all__ = ["ExtractJob", "run_extraction"]

LOG = logging.getLogger(__name__)

# Set for the duration of a run and restored afterwards (the session may be long-lived).
SESSION_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Dates before 1582 are written and read as they are (proleptic Gregorian, as MySQL and Iceberg).
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
    # A cast or expression that cannot hold a value fails the window instead of storing NULL.
    "spark.sql.ansi.enabled": "true",
    # CHAR(n) values as MySQL returns them (without trailing spaces), not padded to n by Spark.
    "spark.sql.legacy.charVarcharAsString": "true",
    "spark.sql.readSideCharPadding": "false",
}
ISO_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSxxx"
COMMIT_TRIES = 3


class PhaseClock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 3)


@contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def lake_state(job: ExtractJob) -> LakeState:
    client = boto3.client("dynamodb", **({"region_name": job.registry.region} if job.registry.region else {}))
    return LakeState(client, job.registry.prefix)


@dataclass
class Run:
    """What one run of the job works with."""

    spark: SparkSession
    job: ExtractJob
    store: LakeState
    connection: Any
    table: SourceTable
    source: Any
    clock: PhaseClock
    line: TimeLine

    @property
    def owner(self) -> Owner:
        return Owner(self.job.job_key, self.job.run_id, self.job.attempt)


@dataclass
class ChunkRead:
    """A chunk's rows, transformed and cached, with what the read saw."""

    staged: DataFrame
    keys: KeyColumns
    data_schema: Any
    rows_read: int
    rows_written: int
    cursor_min: str | None
    cursor_max: str | None
    key_range: tuple[int, int] | None = None  # lowest and highest key, for a single integer key
    null_dates: int = 0  # zero or invalid date values stored as NULL
    null_date_columns: tuple[str, ...] = ()


def run_extraction(spark: SparkSession, job: ExtractJob) -> dict[str, Any]:
    """Run the job and return its result (what it committed, its timings)."""
    clock = PhaseClock()
    with session_settings(spark, SESSION_SETTINGS):
        with clock.phase("secret_s"):
            source = resolve_source(job)
        with clock.phase("catalog_s"):
            configure_catalog(spark, job)
        with jdbc_connection(spark, source, job) as connection:
            with clock.phase("validate_s"):
                table = describe_table(connection, job)
                check_table(job, table)
                line = time_line(connection, job, table)
            run = Run(spark, job, lake_state(job), connection, table, source, clock, line)
            if job.kind == "reconcile":
                from spark_jobs.extraction.reconcile import run_reconcile  # it builds on this module

                result = run_reconcile(run)
            else:
                result = run_snapshot(run) if job.kind == "snapshot" else run_window(run)
    result["timings"] = dict(clock.timings)
    LOG.info("%s: %s", job.context, json.dumps(result, default=str))
    return result


# ------------------------------------------------------------------ windows
def window_chunks(read_from: datetime, end: datetime, span_s: int) -> list[tuple[datetime, datetime]]:
    """``[read_from, end)`` cut into consecutive ranges of at most ``span_s`` seconds."""
    chunks, low, span = [], read_from, timedelta(seconds=span_s)
    while low < end:
        high = min(low + span, end)
        chunks.append((low, high))
        low = high
    return chunks


def run_window(run: Run) -> dict[str, Any]:
    job = run.job
    assert job.window is not None
    state = run.store.get(job.pipeline)
    if state is None or not state.phase.finished:
        raise ExtractionError(
            f"{job.context}: the initial snapshot is not finished (state {state.snapshot if state else 'missing'}); "
            "the extraction task runs it before the first window — re-run the task"
        )
    record = run.store.window(job.pipeline, job.label)
    if record is None:
        raise ExtractionError(f"{job.context}: window {job.label} has no plan in the registry; re-run the task")
    limit = source_limit(run)
    end = job.window.end
    if limit.until is not None and limit.until < end:
        end = max(job.window.read_from, limit.until)
        LOG.warning(
            "%s: window %s reads up to %s only, not %s: %s is open on the source, and rows it commits "
            "later keep cursor values from before their commit",
            job.context,
            job.label,
            end.isoformat(),
            job.window.end.isoformat(),
            limit.holding.describe() if limit.holding else "a transaction",
        )
    chunks = window_chunks(job.window.read_from, end, job.read.window_chunk_s) or [(end, end)]
    if len(chunks) > 1:
        LOG.info(
            "%s: window %s covers %s to %s: reading it in %d chunks of at most %d s",
            job.context,
            job.label,
            job.window.read_from.isoformat(),
            job.window.end.isoformat(),
            len(chunks),
            job.read.window_chunk_s,
        )
    totals = {"rows_read": 0, "rows_written": 0, "null_dates": 0}
    committed = False
    for number, (low, high) in enumerate(chunks, start=1):
        with run.clock.phase("read_s"):
            extracted_at = source_now(run.connection)
            read = read_chunk(run, range_condition(job, low, high, run.line), Chunk(job.label, number, "upsert", extracted_at))
        try:
            totals["rows_read"] += read.rows_read
            totals["rows_written"] += read.rows_written
            totals["null_dates"] += read.null_dates
            last = number == len(chunks)
            result = commit_with_retries(
                run,
                read,
                Chunk(job.label, number, "upsert", extracted_at),
                lambda st, rec, res, n=number, lo=low, hi=high, r=read, lst=last: window_changes(
                    run, st, rec, res, n, lo, hi, r, totals, lst, limit
                ),
            )
            committed = committed or bool(result and result.changes_snapshot)
        finally:
            read.staged.unpersist()
    final = run.store.window(job.pipeline, job.label)
    state = run.store.get(job.pipeline)
    return {
        "kind": "window",
        "job_key": job.job_key,
        "attempt": job.attempt,
        "run_id": job.run_id,
        "pipeline": job.pipeline,
        "window": job.label,
        "read_from": iso(job.window.read_from),
        "end": iso(job.window.end),
        "read_until": iso(end) if end < job.window.end else None,
        "held_by": limit.holding.describe() if limit.holding and end < job.window.end else None,
        "chunks": len(chunks),
        **totals,
        "changes_snapshot": final.changes_snapshot if final else None,
        "current_snapshot": final.current_snapshot if final else None,
        "current_rows": final.current_rows if final else None,
        "watermark": state.watermark if state else None,
        "committed_to_lake": committed,  # whether any chunk wrote to Iceberg (an empty one need not)
    }


def source_limit(run: Run) -> ReadLimit:
    """How far the source lets a window read now (see :func:`spark_jobs.extraction.mysql_source.read_limit`);
    transactions open too long to wait for are logged."""
    job = run.job
    if not job.read.wait_for_open_transactions:
        return ReadLimit(None)
    limit = read_limit(
        open_transactions(run.connection, job), job.read.open_transaction_margin_s, job.read.max_open_transaction_s
    )
    for trx in limit.ignored:
        LOG.warning(
            "%s: %s, longer than read.max_open_transaction (%.0f s): not waited for; rows it commits "
            "with older cursor values are found by reconciliation",
            job.context,
            trx.describe(),
            job.read.max_open_transaction_s,
        )
    return limit


def advanced(watermark: str | None, low: datetime, high: datetime) -> str | None:
    """The watermark after committing ``[low, high)``: ``high`` if that range starts at or before
    it (no gap) and ends after it, else unchanged."""
    if watermark is None:
        return None
    current = parse_iso(watermark)
    return iso(high) if low <= current < high else watermark


def window_changes(
    run: Run,
    state: PipelineState,
    record: WindowRecord,
    result: CommitResult | None,
    number: int,
    low: datetime,
    high: datetime,
    read: ChunkRead,
    totals: Mapping[str, int],
    last: bool,
    limit: ReadLimit,
) -> tuple[dict[str, Any], WindowRecord]:
    """What a window chunk's commit records: the state's new watermark and the window's result."""
    job = run.job
    watermark = advanced(state.watermark, low, high)
    moved = watermark != state.watermark
    now = iso(datetime.now(UTC))
    assert job.window is not None
    held = limit.holding is not None and limit.until is not None and limit.until < job.window.end
    changes: dict[str, Any] = {
        "watermark": watermark,
        "committed_at": now,
        "last_job": job.job_key,
        "held_by": limit.holding.describe() if held and limit.holding else None,
        "unwaited": "; ".join(t.describe() for t in limit.ignored) or None,
    }
    if moved:
        changes.update({"advanced_at": now, "failure_job": None, "failure_at": None, "failure_reason": None})
    done = replace(
        record,
        state="COMMITTED" if last else "COMMITTING",
        chunks=number,
        run_id=job.run_id,
        attempt=job.attempt,
        rows_read=totals["rows_read"],
        rows_written=totals["rows_written"],
        committed_at=iso(datetime.now(UTC)),
        timings=dict(run.clock.timings),
        cursor_min=_earliest(record.cursor_min if number > 1 else None, read.cursor_min),
        cursor_max=max(filter(None, [record.cursor_max if number > 1 else None, read.cursor_max]), default=None),
        read_until=iso(high) if held else None,
        null_dates=totals["null_dates"],
        null_date_columns=sorted(set(record.null_date_columns if number > 1 else []) | set(read.null_date_columns)),
    )
    if result is not None:
        done.changes_snapshot = result.changes_snapshot or done.changes_snapshot
        done.current_snapshot = result.current_snapshot or done.current_snapshot
        done.current_rows = result.current_rows if result.current_rows is not None else done.current_rows
    return changes, done


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(filter(None, [a, b]), default=None)


# ----------------------------------------------------------------- snapshot
def run_snapshot(run: Run) -> dict[str, Any]:
    job = run.job
    state = run.store.get(job.pipeline)
    if state is None:
        raise ExtractionError(f"{job.context}: the pipeline has no state in the registry; re-run the task")
    if state.phase.finished:
        LOG.info("%s: the initial snapshot is %s already; nothing to do", job.context, state.snapshot)
        return {
            "kind": "snapshot",
            "job_key": job.job_key,
            "pipeline": job.pipeline,
            "snapshot": state.snapshot,
            "chunks": state.snapshot_chunks,
            "rows": state.snapshot_rows,
            "watermark": state.watermark,
            "already_done": True,
        }
    started = state.snapshot_started_at or iso(snapshot_start(run))
    run.store.plan_window(
        WindowRecord(
            pipeline=job.pipeline,
            window=SNAPSHOT_LABEL,
            job_key=job.job_key,
            start=started,
            end=started,
            read_from=started,
            planned_at=iso(datetime.now(UTC)),
        )
    )
    number, after, rows_total = state.snapshot_chunks, state.after_key(), state.snapshot_rows
    if number:
        LOG.info("%s: resuming the initial snapshot after chunk %d (%d rows so far)", job.context, number, rows_total)
    while True:
        number += 1
        with run.clock.phase("read_s"):
            extracted_at = source_now(run.connection)
            upper = chunk_upper(run.connection, job, run.table, after, job.read.chunk_rows)
            read = read_chunk(
                run, chunk_condition(job, run.table, after, upper), Chunk(SNAPSHOT_LABEL, number, "snapshot", extracted_at)
            )
        chunk = Chunk(SNAPSHOT_LABEL, number, "snapshot", extracted_at)
        try:
            commit_with_retries(
                run,
                read,
                chunk,
                lambda st, rec, res, n=number, u=upper, r=read: snapshot_changes(run, st, rec, res, n, u, r, started),
            )
        finally:
            read.staged.unpersist()
        rows_total += read.rows_written
        LOG.info(
            "%s: snapshot chunk %d committed: %d rows (%d in all)%s",
            job.context,
            number,
            read.rows_written,
            rows_total,
            "" if upper is None else f", up to key {upper}",
        )
        if upper is None:
            break
        after = upper
    state = run.store.get(job.pipeline)
    return {
        "kind": "snapshot",
        "job_key": job.job_key,
        "attempt": job.attempt,
        "run_id": job.run_id,
        "pipeline": job.pipeline,
        "snapshot": state.snapshot if state else None,
        "chunks": number,
        "rows": rows_total,
        "watermark": state.watermark if state else None,
        "already_done": False,
    }


def snapshot_start(run: Run) -> datetime:
    """Where the windows take over from the snapshot: now on the source's clock, or before the
    oldest transaction open now (rows it commits later are not in the snapshot's reads)."""
    now = source_now(run.connection)
    limit = source_limit(run)
    if limit.until is not None and limit.until < now:
        LOG.info(
            "%s: the windows after the snapshot start at %s: %s is open on the source",
            run.job.context,
            limit.until.isoformat(),
            limit.holding.describe() if limit.holding else "a transaction",
        )
        return limit.until
    return now


def snapshot_changes(
    run: Run,
    state: PipelineState,
    record: WindowRecord,
    result: CommitResult | None,
    number: int,
    upper: list[Any] | None,
    read: ChunkRead,
    started: str,
) -> tuple[dict[str, Any], WindowRecord]:
    if state.snapshot_chunks != number - 1:
        raise ExtractionError(
            f"{run.job.context}: snapshot chunk {number} is out of order: the registry has {state.snapshot_chunks} "
            "chunks committed; another attempt of the snapshot ran — re-run the task to resume"
        )
    changes: dict[str, Any] = {
        "snapshot": SnapshotPhase.DONE.value if upper is None else SnapshotPhase.RUNNING.value,
        "snapshot_started_at": started,
        "snapshot_after": json.dumps(upper) if upper is not None else state.snapshot_after,
        "snapshot_chunks": number,
        "snapshot_rows": state.snapshot_rows + read.rows_written,
        "committed_at": iso(datetime.now(UTC)),
        "last_job": run.job.job_key,
    }
    if upper is None:
        changes.update({"watermark": started, "advanced_at": changes["committed_at"]})
    done = replace(
        record,
        state="COMMITTED" if upper is None else "COMMITTING",
        chunks=number,
        run_id=run.job.run_id,
        attempt=run.job.attempt,
        rows_read=record.rows_read + read.rows_read,
        rows_written=record.rows_written + read.rows_written,
        null_dates=record.null_dates + read.null_dates,
        null_date_columns=sorted(set(record.null_date_columns) | set(read.null_date_columns)),
        committed_at=iso(datetime.now(UTC)),
        timings=dict(run.clock.timings),
    )
    if result is not None:
        done.changes_snapshot = result.changes_snapshot or done.changes_snapshot
        done.current_snapshot = result.current_snapshot or done.current_snapshot
        done.current_rows = result.current_rows if result.current_rows is not None else done.current_rows
    return changes, done


# -------------------------------------------------------------- one chunk
def read_chunk(run: Run, condition: str, chunk: Chunk) -> ChunkRead:
    """Read, transform and cache the rows matching ``condition`` (no lock held): one pass over
    MySQL; the two commits read the cache. ``rows_read`` is MySQL's count of the rows matching
    at the start of the read; the cursor bounds are those of the rows written."""
    job = run.job
    stats = read_stats(run.connection, job, run.table, condition)
    raw = read_rows(run.spark, run.source, job, run.table, condition, stats, run.line)
    data, keys = apply_transforms(raw, job)
    carried = INVALID_DATES in data.columns  # a user function may have dropped it
    if SOURCE_HASH not in data.columns:
        LOG.warning(
            "%s: a transform dropped spotlake's row hash columns (%s*); reconciliation cannot tell this "
            "pipeline's unchanged rows from changed ones — keep them in user functions",
            job.context,
            CARRIED,
        )
    staged = with_change_columns(data, job, keys, chunk).persist(StorageLevel.MEMORY_AND_DISK)
    data = data.drop(*[c for c in data.columns if c.startswith(CARRIED)])
    cursor = F.col(quote_identifier(keys.cursor))
    key = keys.primary_key[0]
    integral = len(keys.primary_key) == 1 and isinstance(data.schema[key].dataType, (IntegerType, LongType))
    try:
        seen = staged_totals(staged, cursor, key, integral, carried)
    except Exception as exc:
        staged.unpersist()
        found = data_error(exc, raw, job, f"{chunk.label} chunk {chunk.number}")
        if found is None:
            raise
        raise found from None
    key_range = (int(seen["key_min"]), int(seen["key_max"])) if seen["key_min"] is not None else None
    null_dates, null_columns = int(seen["null_dates"] or 0), tuple(sorted(seen["null_date_columns"] or ()))
    if null_dates:
        LOG.warning(
            "%s: %s chunk %d: %d zero or invalid date values stored as NULL (columns: %s)",
            job.context,
            chunk.label,
            chunk.number,
            null_dates,
            ", ".join(null_columns),
        )
    return ChunkRead(
        staged,
        keys,
        data.schema,
        stats.rows,
        int(seen["rows"]),
        seen["cursor_min"],
        seen["cursor_max"],
        key_range,
        null_dates,
        null_columns,
    )


def staged_totals(staged: DataFrame, cursor: Any, key: str, integral: bool, carried: bool) -> Any:
    """What a chunk's rows hold (one action, which also fills the cache)."""
    (seen,) = staged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.date_format(F.min(cursor), ISO_PATTERN).alias("cursor_min"),
        F.date_format(F.max(cursor), ISO_PATTERN).alias("cursor_max"),
        F.min(quote_identifier(key)).alias("key_min") if integral else F.lit(None).alias("key_min"),
        F.max(quote_identifier(key)).alias("key_max") if integral else F.lit(None).alias("key_max"),
        F.sum(F.size(INVALID_DATES)).alias("null_dates") if carried else F.lit(0).alias("null_dates"),
        F.array_distinct(F.flatten(F.collect_set(INVALID_DATES))).alias("null_date_columns")
        if carried
        else F.array().cast("array<string>").alias("null_date_columns"),
    ).collect()
    return seen


def commit_with_retries(run: Run, read: ChunkRead, chunk: Chunk, record_changes: Any) -> CommitResult | None:
    """Commit the chunk under the lock; a lost Iceberg race is retried here, not by Airflow."""
    for attempt in range(1, COMMIT_TRIES + 1):
        try:
            return commit_locked(run, read, chunk, record_changes)
        except CommitConflict as exc:
            if attempt == COMMIT_TRIES:
                raise
            LOG.warning("%s: %s; retrying the commit (%d of %d)", run.job.context, exc, attempt + 1, COMMIT_TRIES)
    return None


def commit_locked(run: Run, read: ChunkRead, chunk: Chunk, record_changes: Any) -> CommitResult | None:
    job = run.job
    with run.clock.phase("lock_s"):
        held = take_lock(run.store, job.pipeline, run.owner, job.commit.lease_s, job.commit.wait_s)
    try:
        record = run.store.window(job.pipeline, chunk.label)
        if record is None:
            raise ExtractionError(f"{job.context}: window {chunk.label} has no record in the registry; re-run the task")
        result = None
        if read.rows_written > 0 or chunk.number in record.touched:
            held.check()
            run.store.mark_touched(held.lock, chunk.label, chunk.number)
            with run.clock.phase("schema_s"):
                schema = ensure_tables(run.spark, job, read.data_schema, read.keys.primary_key)
            props = commit_properties(job, chunk)
            held.check()
            with run.clock.phase("changes_s"):
                changes = replace_changes(run.spark, job, aligned(read.staged, schema.changes), chunk, props)
            result = CommitResult(changes, None, None)
            if read.rows_written > 0:
                held.check()
                with run.clock.phase("current_s"):
                    result = merge_current(
                        run.spark, job, read.keys, aligned(read.staged, schema.current), props, changes, read.key_range
                    )
            record = run.store.window(job.pipeline, chunk.label) or record
        else:
            snapshot = current_snapshot(run.spark, job.lake.current_table)
            if snapshot is not None:
                result = CommitResult(None, snapshot.snapshotId(), live_rows(snapshot))
        held.check()
        with run.clock.phase("record_s"):
            changes_to_state, done = record_changes(held.lock.state, record, result)
            run.store.release(held.lock, changes_to_state, done)
        return result
    finally:
        held.stop()
