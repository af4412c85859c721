"""Reconciliation: what the cursor windows cannot see, found by comparing the source with the lake.

A hard delete leaves no row for a window to read; an update that leaves the cursor column
unchanged, or a transaction open longer than ``read.max_open_transaction``, leaves a row the
windows never read again. So, hourly by default (a ``reconcile_<pipeline>`` DAG), a job
compares source and lake in the manner of pt-table-checksum, without reading rows that agree:

1. Every row version in the lake carries ``_source_key`` and ``_source_hash``: MD5 of its
   primary key and of the whole row as MySQL renders them (``QUOTE``), computed by MySQL in the
   extraction's SELECT (:func:`spark_jobs.extraction.source_types.hash_sql`).
2. Rows fall into ``N`` buckets by their key hash (``N`` = rows / ``reconcile.chunk_rows``). The
   source computes, in one ``GROUP BY``, each bucket's row count and the XOR of its row hashes;
   Spark computes the same from the lake's current-state table (read at one snapshot, pinned
   before the source is read). Buckets that agree are done: when nothing changed, the job has
   read from MySQL only the ``N`` checksum rows.
3. For the buckets that differ, the source's (key hash, row hash, key) per row is joined with
   the lake's: a row missing from the lake or with another hash is re-extracted by its primary
   key (transformed and merged as a window's rows are); a key in the lake that the source no
   longer has is a delete: a ``_op = delete`` row in the changes table, and the row removed
   from the current-state table (``reconcile.deletes: remove``) or its ``soft_delete`` column set
   (``flag``), unless a window committed a newer version of it meanwhile.

With ``reconcile.replica_secret_id`` the checksums and per-row hashes are read from the
replica; re-extraction and the confirmation of deletes read the primary, so replica lag can
never delete a row. Rows written before the lake had ``_source_key`` (an older release) make
the first run re-read the whole table once (in key-ordered chunks, as the initial snapshot)
and then delete the lake rows it did not see. A pipeline with a ``filter`` step is refused:
a row the filter drops looks like a row missing from the lake.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from spark_jobs.common.commit_lock import take_lock
from spark_jobs.common.errors import ExtractionError
from spark_jobs.common.job_documents import CONFIG_FILE, UTC, quote_identifier
from spark_jobs.common.lake_catalog import commit_id, current_snapshot, live_rows, table_exists, with_commit_properties
from spark_jobs.common.lake_state import WindowRecord, iso
from spark_jobs.extraction.lake_commit import Chunk, CommitResult, aligned, commit_properties, replace_changes
from spark_jobs.extraction.mysql_source import (
    BINARY_TYPES,
    MYSQL_DRIVER,
    ReadStats,
    chunk_condition,
    chunk_upper,
    jdbc_connection,
    key_literal,
    query_rows,
    read_rows,
    resolve_source,
    source_name,
    source_now,
)
from spark_jobs.extraction.run import Run, commit_with_retries, read_chunk
from spark_jobs.extraction.source_types import CARRIED, SOURCE_HASH, SOURCE_KEY, hash_sql
from spark_jobs.extraction.transforms import apply_transforms

LOG = logging.getLogger(__name__)
BUCKET_HEX = 8  # hex digits of the key hash that pick the bucket
ROW_HEX = 15  # hex digits of the row hash that are XORed (60 bits: a signed long on both sides)


# ----------------------------------------------------------------- checksums
def bucket_sql(job_key: Sequence[str], buckets: int) -> str:
    return f"CAST(CONV(LEFT({hash_sql(job_key)}, {BUCKET_HEX}), 16, 10) AS UNSIGNED) % {int(buckets)}"


def row_value_sql(columns: Sequence[str]) -> str:
    return f"CAST(CONV(LEFT({hash_sql(columns)}, {ROW_HEX}), 16, 10) AS UNSIGNED)"


def lake_bucket(buckets: int) -> Any:
    return F.pmod(F.conv(F.substring("_source_key", 1, BUCKET_HEX), 16, 10).cast("long"), F.lit(int(buckets)))


def lake_row_value() -> Any:
    return F.conv(F.substring("_source_hash", 1, ROW_HEX), 16, 10).cast("long")


def source_checksums(run: Run, checker: Any, buckets: int) -> dict[int, tuple[int, int]]:
    """bucket -> (rows, XOR of row hashes), computed by MySQL in one pass; only these rows travel."""
    query = (
        f"(SELECT b, COUNT(*) AS n, CAST(BIT_XOR(h) AS SIGNED) AS x FROM (SELECT "
        f"{bucket_sql(run.job.primary_key, buckets)} AS b, {row_value_sql(list(run.table.columns))} AS h "
        f"FROM {source_name(run.job)}) AS spotlake_rows GROUP BY b) AS spotlake_buckets"
    )
    rows = jdbc_frame(run, checker, query).collect()
    return {int(r["b"]): (int(r["n"]), int(r["x"] or 0)) for r in rows}


def jdbc_frame(run: Run, source: Any, query: str) -> DataFrame:
    return (
        run.spark.read.format("jdbc")
        .options(
            url=source.url,
            driver=MYSQL_DRIVER,
            user=source.username,
            password=source.password,
            dbtable=query,
            fetchsize=str(run.job.read.fetch_size),
        )
        .load()
    )


def lake_checksums(lake: DataFrame, buckets: int) -> tuple[dict[int, tuple[int, int]], int]:
    """bucket -> (rows, XOR of row hashes) of the lake's current rows, and how many rows have no
    ``_source_key`` (written before the lake stored it)."""
    found: dict[int, tuple[int, int]] = {}
    legacy = 0
    grouped = lake.groupBy(F.when(F.col("_source_key").isNotNull(), lake_bucket(buckets)).alias("b")).agg(
        F.count(F.lit(1)).alias("n"), F.bit_xor(lake_row_value()).alias("x")
    )
    for row in grouped.collect():
        if row["b"] is None:
            legacy = int(row["n"])
        else:
            found[int(row["b"])] = (int(row["n"]), int(row["x"] or 0))
    return found, legacy


def differing(source: dict[int, tuple[int, int]], lake: dict[int, tuple[int, int]]) -> list[int]:
    return sorted(b for b in set(source) | set(lake) if source.get(b, (0, 0)) != lake.get(b, (0, 0)))


# ---------------------------------------------------------------------- run
@contextmanager
def checker_connection(run: Run) -> Iterator[tuple[Any, Any]]:
    """(connection, source) the checksums are read from: the replica when one is configured."""
    replica = run.job.reconcile.replica_secret_id
    if replica is None:
        yield run.connection, run.source
        return
    source = resolve_source(run.job, replica)
    with jdbc_connection(run.spark, source, run.job) as connection:
        yield connection, source


def run_reconcile(run: Run) -> dict[str, Any]:
    job = run.job
    state = run.store.get(job.pipeline)
    if state is None or not state.phase.finished:
        raise ExtractionError(f"{job.context}: the initial snapshot is not finished; nothing to reconcile yet")
    filtering = next((step for step in job.transforms if step.op == "filter"), None)
    if filtering is not None:
        raise ExtractionError(
            f"{job.context}: reconciliation cannot tell a row that {filtering.label} drops from a row missing "
            f"from the lake — filter when reading instead, or set reconcile: {{enabled: false}} for this "
            f"pipeline in {CONFIG_FILE}"
        )
    data, _ = transformed_empty(run)
    if SOURCE_KEY not in data.columns or SOURCE_HASH not in data.columns:
        raise ExtractionError(
            f"{job.context}: a transform drops spotlake's row hash columns ({SOURCE_KEY}, {SOURCE_HASH}), so "
            f"the lake cannot be compared with the source — keep every column starting with {CARRIED} in user "
            f"functions, or set reconcile: {{enabled: false}} for this pipeline in {CONFIG_FILE}"
        )
    started = source_now(run.connection)
    label = job.label
    run.store.plan_window(
        WindowRecord(
            pipeline=job.pipeline,
            window=label,
            job_key=job.job_key,
            start=iso(started),
            end=iso(started),
            read_from=iso(started),
            planned_at=iso(datetime.now(UTC)),
        )
    )
    pinned = current_snapshot(run.spark, job.lake.current_table)
    lake = pinned_lake(run, pinned)
    result: dict[str, Any] = {
        "kind": "reconcile",
        "job_key": job.job_key,
        "pipeline": job.pipeline,
        "attempt": job.attempt,
        "run_id": job.run_id,
        "lake_snapshot": pinned.snapshotId() if pinned is not None else None,
        "rows_repaired": 0,
        "deletes": 0,
        "deletes_still_in_source": 0,
        "rows_compared": 0,
    }
    with checker_connection(run) as (connection, checker):
        estimate = table_rows(connection, run)
        buckets = max(1, math.ceil(max(estimate, live_rows(pinned) or 0) / job.reconcile.chunk_rows))
        with run.clock.phase("checksum_s"):
            source = source_checksums(run, checker, buckets)
            lake_sums, legacy = lake_checksums(lake, buckets)
        diff = differing(source, lake_sums)
        result.update(
            {
                "rows_checked": sum(n for n, _ in source.values()),
                "lake_rows": sum(n for n, _ in lake_sums.values()) + legacy,
                "chunks": buckets,
                "chunks_differing": len(diff),
                "rows_without_hash": legacy,
                "replica": checker is not run.source,
            }
        )
        LOG.info(
            "%s: %s: %d source rows in %d chunks, %d differ from the lake%s",
            job.context,
            label,
            result["rows_checked"],
            buckets,
            len(diff),
            f"; {legacy} lake rows have no _source_key (written before it existed): re-reading the table" if legacy else "",
        )
        if legacy:
            full_pass(run, label, result)
        elif diff:
            repair_buckets(run, label, lake, checker, buckets, diff, result)
    result["chunks_repaired"] = result["chunks_differing"]
    finish(run, label, result)
    return result


def table_rows(connection: Any, run: Run) -> int:
    ((rows,),) = query_rows(
        connection,
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        run.job.database,
        run.job.table,
    ) or [[None]]
    return int(rows or 0)


def pinned_lake(run: Run, snapshot: Any) -> DataFrame:
    """The current-state table as of ``snapshot`` (an empty frame if it has none yet)."""
    name = run.job.lake.current_table
    if snapshot is None or not table_exists(run.spark, name):
        return run.spark.createDataFrame([], "_source_key string, _source_hash string, _extracted_at timestamp")
    lake = run.spark.read.option("snapshot-id", snapshot.snapshotId()).format("iceberg").load(name)
    # A table written before the lake stored the hashes has no such columns (in its schema now)
    # until a commit adds them: its rows are then rows without a hash (the full pass below).
    now = set(run.spark.table(name).columns)
    missing = [c for c in ("_source_key", "_source_hash") if c not in now or c not in lake.columns]
    if not missing:
        return lake
    return lake.drop(*[c for c in missing if c in lake.columns]).withColumns({c: F.lit(None).cast("string") for c in missing})


# ------------------------------------------------------------------ repairs
def key_text_sql(run: Run) -> list[str]:
    """The key's columns as text the job can turn back into typed literals (binary as hex)."""
    out = []
    for i, column in enumerate(run.job.primary_key):
        name = quote_identifier(column)
        text = f"HEX({name})" if run.table.types[column] in BINARY_TYPES else f"CAST({name} AS CHAR)"
        out.append(f"{text} AS __k{i}")
    return out


def key_value(run: Run, column: str, text: str) -> Any:
    return {"hex": text.lower()} if run.table.types[column] in BINARY_TYPES else text


def keys_condition(run: Run, keys: Sequence[Sequence[str]]) -> str:
    """``key IN (...)`` for these keys, every value a typed literal."""
    pk = run.job.primary_key
    literals = [[key_literal(run.table, c, key_value(run, c, key[i])) for i, c in enumerate(pk)] for key in keys]
    if len(pk) == 1:
        return f"{quote_identifier(pk[0])} IN ({', '.join(lit[0] for lit in literals)})"
    columns = ", ".join(quote_identifier(c) for c in pk)
    return f"({columns}) IN ({', '.join('(' + ', '.join(lit) + ')' for lit in literals)})"


def source_rows(run: Run, checker: Any, condition: str) -> DataFrame:
    """(k, h, __k0..) of the source rows matching ``condition``: key hash, row hash, key as text."""
    job = run.job
    query = (
        f"(SELECT {hash_sql(job.primary_key)} AS k, {hash_sql(list(run.table.columns))} AS h, "
        f"{', '.join(key_text_sql(run))} FROM {source_name(job)} WHERE {condition}) AS spotlake_rows"
    )
    return jdbc_frame(run, checker, query)


def repair_buckets(
    run: Run, label: str, lake: DataFrame, checker: Any, buckets: int, diff: list[int], result: dict[str, Any]
) -> None:
    job = run.job
    in_buckets = f"{bucket_sql(job.primary_key, buckets)} IN ({', '.join(str(b) for b in diff)})"
    with run.clock.phase("compare_s"):
        theirs = source_rows(run, checker, in_buckets).cache()
        ours = lake.filter(lake_bucket(buckets).isin(diff)).select(
            F.col("_source_key").alias("k"), F.col("_source_hash").alias("lh"), F.col("_extracted_at").alias("seen")
        )
        joined = theirs.join(ours, "k", "full_outer")
        key_columns = [f"__k{i}" for i in range(len(job.primary_key))]
        repairs = [
            [str(r[c]) for c in key_columns]
            for r in joined.filter(F.col("h").isNotNull() & (F.col("lh").isNull() | (F.col("lh") != F.col("h"))))
            .select(*key_columns)
            .collect()
        ]
        gone = {r["k"]: r["seen"] for r in joined.filter(F.col("h").isNull()).select("k", "seen").collect()}
        result["rows_compared"] = theirs.count()
        theirs.unpersist()
    if repairs:
        with run.clock.phase("repair_s"):
            result["rows_repaired"] = reextract(run, label, repairs)
    if gone:
        if job.reconcile.replica_secret_id is not None:
            with run.clock.phase("confirm_s"):
                present = {r["k"] for r in source_rows(run, run.source, in_buckets).select("k").collect()}
            result["deletes_still_in_source"] = len(set(gone) & present)
            gone = {k: v for k, v in gone.items() if k not in present}
        with run.clock.phase("delete_s"):
            result["deletes"] = remove_gone(run, label, lake, gone)


def reextract(run: Run, label: str, keys: list[list[str]]) -> int:
    """Read these keys' rows from the source (the primary) and merge them as a window's rows."""
    job, written = run.job, 0
    size = job.reconcile.repair_rows
    for number, first in enumerate(range(0, len(keys), size), start=1):
        written += commit_read(run, label, number, keys_condition(run, keys[first : first + size]))
    LOG.info("%s: %s: re-read %d rows whose content or presence differed", job.context, label, written)
    return written


def commit_read(run: Run, label: str, number: int, condition: str) -> int:
    extracted_at = source_now(run.connection)
    chunk = Chunk(label, number, "upsert", extracted_at)
    read = read_chunk(run, condition, chunk)
    try:
        commit_with_retries(run, read, chunk, lambda st, rec, res, n=number, r=read: recorded(run, rec, res, n, r))
    finally:
        read.staged.unpersist()
    return read.rows_written


def recorded(
    run: Run, record: WindowRecord, result: CommitResult | None, number: int, read: Any
) -> tuple[dict[str, Any], WindowRecord]:
    """A reconciliation chunk's record: the watermark does not move."""
    now = iso(datetime.now(UTC))
    done = replace(
        record,
        state="COMMITTING",
        chunks=number,
        run_id=run.job.run_id,
        attempt=run.job.attempt,
        rows_written=record.rows_written + read.rows_written,
        committed_at=now,
        timings=dict(run.clock.timings),
    )
    if result is not None:
        done.changes_snapshot = result.changes_snapshot or done.changes_snapshot
        done.current_snapshot = result.current_snapshot or done.current_snapshot
        done.current_rows = result.current_rows if result.current_rows is not None else done.current_rows
    return {"committed_at": now, "last_job": run.job.job_key}, done


def full_pass(run: Run, label: str, result: dict[str, Any]) -> None:
    """Re-read the whole table in key order (rows then carry their hashes); then the lake rows
    without ``_source_key`` that were not re-read are gone from the source."""
    job, number, after, written = run.job, 0, None, 0
    started = source_now(run.connection)  # every row the pass merges is read after this
    with run.clock.phase("repair_s"):
        while True:
            number += 1
            upper = chunk_upper(run.connection, job, run.table, after, job.read.chunk_rows)
            written += commit_read(run, label, number, chunk_condition(job, run.table, after, upper))
            if upper is None:
                break
            after = upper
    result["rows_repaired"] = written
    with run.clock.phase("delete_s"):
        # Read again (the table as it is now): the rows still without a key hash, read before the
        # pass began, are the ones the pass did not see.
        current = run.spark.read.format("iceberg").load(job.lake.current_table)
        unseen = current.filter(F.col("_extracted_at") < F.lit(started).cast("timestamp"))
        result["deletes"] = remove_gone(run, label, unseen, {None: None}, number + 1)


# ------------------------------------------------------------------ deletes
def remove_gone(run: Run, label: str, lake: DataFrame, gone: dict[Any, Any], number: int | None = None) -> int:
    """Record the lake rows whose key the source no longer has as deletes, under the commit lock:
    a delete row in the changes table, and the row removed (or flagged) in the current-state
    table if no window committed a newer version of it since the lake was read. ``gone`` maps key
    hashes to the ``_extracted_at`` seen; ``{None: None}`` means the rows without a key hash."""
    job = run.job
    record = run.store.window(job.pipeline, label)
    number = number or (record.chunks + 1 if record else 1)
    extracted_at = source_now(run.connection)
    if None in gone:
        rows = lake.filter(F.col("_source_key").isNull()).withColumn("_seen", F.col("_extracted_at"))
    else:
        seen = run.spark.createDataFrame([(k, v) for k, v in gone.items()], "k string, _seen timestamp")
        rows = lake.join(seen, lake["_source_key"] == seen["k"]).drop("k")
    chunk = Chunk(label, number, "delete", extracted_at)
    meta = {
        "_op": F.lit("delete"),
        "_window": F.lit(label),
        "_job_key": F.lit(job.job_key),
        "_chunk": F.lit(number).cast("int"),
        "_attempt": F.lit(job.attempt).cast("int"),
        "_run_id": F.lit(job.run_id),
        "_extracted_at": F.lit(extracted_at).cast("timestamp"),
    }
    rows = rows.withColumns(meta).cache()
    try:
        count = rows.count()
        if count:
            commit_deletes(run, rows, chunk, legacy=None in gone)
    finally:
        rows.unpersist()
    LOG.info(
        "%s: %s: %d rows are gone from the source: %s",
        job.context,
        label,
        count,
        "removed from the current-state table" if job.reconcile.deletes == "remove" else f"flagged ({job.soft_delete} set)",
    )
    return count


def transformed_empty(run: Run) -> tuple[DataFrame, Any]:
    """The transforms applied to no rows: the columns and key names a chunk will have."""
    empty = read_rows(run.spark, run.source, run.job, run.table, "1 = 0", ReadStats(rows=0), run.line)
    return apply_transforms(empty, run.job)


def commit_deletes(run: Run, rows: DataFrame, chunk: Chunk, legacy: bool) -> None:
    job = run.job
    held = take_lock(run.store, job.pipeline, run.owner, job.commit.lease_s, job.commit.wait_s)
    try:
        record = run.store.window(job.pipeline, chunk.label)
        assert record is not None
        held.check()
        run.store.mark_touched(held.lock, chunk.label, chunk.number)
        props = commit_properties(job, chunk)
        changes = replace_changes(run.spark, job, aligned(rows, run.spark.table(job.lake.changes_table).schema), chunk, props)
        held.check()
        view = f"spotlake_gone_{job.run_id}".replace("-", "_")
        _, keys = transformed_empty(run)
        pk = [quote_identifier(c) for c in keys.primary_key]
        rows.select(*pk, "_source_key", "_seen", "_extracted_at", "_window", "_job_key").createOrReplaceTempView(view)
        if job.reconcile.deletes == "remove":
            action = "DELETE"
        else:
            soft = quote_identifier(str(keys.soft_delete))
            action = (
                f"UPDATE SET t.{soft} = s._extracted_at, t._op = 'delete', t._window = s._window, "
                "t._job_key = s._job_key, t._extracted_at = s._extracted_at"
            )
        # The row by its key, and only the version that was read: a window that committed a newer
        # one since wins.
        same = " AND ".join([*(f"t.{c} = s.{c}" for c in pk), "t._extracted_at <=> s._seen"])
        key = f"t._source_key IS NULL AND {same}" if legacy else f"t._source_key = s._source_key AND {same}"
        statement = f"MERGE INTO {job.lake.current_table} t USING {view} s ON {key} WHEN MATCHED THEN {action}"
        try:
            with_commit_properties(
                run.spark, {**props, "spotlake.commit-id": commit_id()}, lambda: run.spark.sql(statement).collect()
            )
        finally:
            run.spark.catalog.dropTempView(view)
        snapshot = current_snapshot(run.spark, job.lake.current_table)
        done = replace(
            record,
            state="COMMITTING",
            chunks=chunk.number,
            run_id=job.run_id,
            attempt=job.attempt,
            committed_at=iso(datetime.now(UTC)),
            changes_snapshot=changes or record.changes_snapshot,
            current_snapshot=snapshot.snapshotId() if snapshot is not None else record.current_snapshot,
            current_rows=live_rows(snapshot),
        )
        held.check()
        run.store.release(held.lock, {"committed_at": done.committed_at, "last_job": job.job_key}, done)
    finally:
        held.stop()


# ------------------------------------------------------------------- record
def finish(run: Run, label: str, result: dict[str, Any]) -> None:
    """Mark the reconciliation's record COMMITTED and note it in the pipeline's state."""
    job = run.job
    summary = (
        f"{result['rows_checked']} rows checked, {result['chunks_differing']} of {result['chunks']} chunks "
        f"repaired, {result['rows_repaired']} rows re-read, {result['deletes']} deletes"
    )
    held = take_lock(run.store, job.pipeline, run.owner, job.commit.lease_s, job.commit.wait_s)
    try:
        record = run.store.window(job.pipeline, label)
        assert record is not None
        done = replace(
            record,
            state="COMMITTED",
            run_id=job.run_id,
            attempt=job.attempt,
            rows_read=int(result["rows_checked"]),
            committed_at=iso(datetime.now(UTC)),
            timings=dict(run.clock.timings),
        )
        held.check()
        run.store.release(held.lock, {"reconciled_at": done.committed_at, "reconcile_result": summary}, done)
    finally:
        held.stop()
    result["summary"] = summary
