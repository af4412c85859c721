"""Commit one chunk of rows into a pipeline's two Iceberg tables.

A chunk is the unit of commit: one window (or one slice of a long window, or one
primary-key chunk of the initial snapshot), identified by its job key and chunk
number. Its commit is two Iceberg commits, made while the attempt holds the
pipeline's commit lock (:mod:`spark_jobs.common.lake_state`):

1. the **changes table** (every row version read, append-only across windows):
   one ``MERGE INTO`` that deletes the rows an earlier attempt or run of the same
   job key and chunk committed and inserts this attempt's rows. If any of those
   earlier rows came from a *newer* attempt, the statement fails inside its own scan
   (``raise_error``) and commits nothing; and if a newer attempt commits the chunk
   while this statement runs, Iceberg's serializable validation refuses this commit.
   So a zombie attempt can never replace a newer attempt's rows.
2. the **current-state table** (one row per primary key): ``MERGE INTO`` from the
   chunk's rows, newest cursor first (ties: the row read later from the source),
   which updates a key only with a newer version. Merging is therefore
   order-independent: any set of windows merged in any order, any number of times,
   leaves the same table.

Both commits carry the job key, attempt, run id, chunk and window in their snapshot
summary (``spotlake.*`` keys), so every snapshot says which attempt made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import pyspark.sql.functions as F
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql.types import StructType

from spark_jobs.common.errors import CommitConflict, StaleAttemptError
from spark_jobs.common.job_documents import ExtractJob, quote_identifier
from spark_jobs.common.lake_catalog import (
    commit_id,
    live_rows,
    snapshot_with,
    with_commit_properties,
)
from spark_jobs.extraction.source_types import SOURCE_HASH, SOURCE_KEY
from spark_jobs.extraction.transforms import KeyColumns

STALE_MARK = "spotlake-stale-attempt"
MARKER = "__spotlake_marker"
RANK = "__spotlake_rank"


@dataclass(frozen=True)
class Chunk:
    """One chunk's identity and where its rows come from."""

    label: str  # the window label, or "snapshot"
    number: int
    op: str  # "upsert" for a window, "snapshot" for the initial load
    extracted_at: datetime  # the source's clock when the chunk was read


@dataclass(frozen=True)
class CommitResult:
    changes_snapshot: int | None
    current_snapshot: int | None
    current_rows: int | None


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def with_change_columns(rows: DataFrame, job: ExtractJob, keys: KeyColumns, chunk: Chunk) -> DataFrame:
    """The chunk's rows with the changes table's own columns."""
    op = F.lit(chunk.op)
    if keys.soft_delete and keys.soft_delete in rows.columns:
        op = F.when(F.col(quote_identifier(keys.soft_delete)).isNotNull(), F.lit("delete")).otherwise(op)
    return rows.withColumns(
        {
            "_op": op,
            "_window": F.lit(chunk.label),
            "_job_key": F.lit(job.job_key),
            "_chunk": F.lit(chunk.number).cast("int"),
            "_attempt": F.lit(job.attempt).cast("int"),
            "_run_id": F.lit(job.run_id),
            "_extracted_at": F.lit(chunk.extracted_at).cast("timestamp"),
            "_source_key": F.col(SOURCE_KEY) if SOURCE_KEY in rows.columns else F.lit(None).cast("string"),
            "_source_hash": F.col(SOURCE_HASH) if SOURCE_HASH in rows.columns else F.lit(None).cast("string"),
        }
    )


def aligned(df: DataFrame, schema: StructType) -> DataFrame:
    """``df`` with exactly ``schema``'s columns and types (missing columns as NULL)."""
    present = {c.lower(): c for c in df.columns}
    return df.select(
        *[
            (F.col(quote_identifier(present[f.name.lower()])) if f.name.lower() in present else F.lit(None))
            .cast(f.dataType)
            .alias(f.name)
            for f in schema.fields
        ]
    )


def newest_per_key(df: DataFrame, keys: KeyColumns) -> DataFrame:
    """One row per primary key: the newest cursor, then the later read."""
    order = Window.partitionBy(*[F.col(quote_identifier(c)) for c in keys.primary_key]).orderBy(
        F.col(quote_identifier(keys.cursor)).desc_nulls_last(), F.col("_extracted_at").desc()
    )
    return df.withColumn(RANK, F.row_number().over(order)).filter(F.col(RANK) == 1).drop(RANK)


def commit_properties(job: ExtractJob, chunk: Chunk) -> dict[str, str]:
    """What every snapshot of a chunk's commit says about who made it."""
    return {
        "spotlake.pipeline": job.pipeline,
        "spotlake.job-key": job.job_key,
        "spotlake.attempt": str(job.attempt),
        "spotlake.run-id": job.run_id,
        "spotlake.window": chunk.label,
        "spotlake.chunk": str(chunk.number),
    }


def _view(df: DataFrame, job: ExtractJob, what: str) -> str:
    name = f"spotlake_{what}_{job.run_id}".replace("-", "_")
    df.createOrReplaceTempView(name)
    return name


def replace_changes(spark: SparkSession, job: ExtractJob, rows: DataFrame, chunk: Chunk, props: Mapping[str, str]) -> int | None:
    """One MERGE: delete the chunk's earlier rows (unless a newer attempt wrote them), insert these.
    Returns the id of the snapshot it committed."""
    marker = spark.range(1).select(
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in rows.schema.fields], F.lit(True).alias(MARKER)
    )
    source = rows.withColumn(MARKER, F.lit(False)).unionByName(marker)
    view = _view(source, job, "changes")
    columns = ", ".join(quote_identifier(c) for c in rows.columns)
    values = ", ".join(f"s.{quote_identifier(c)}" for c in rows.columns)
    stale = (
        f"{STALE_MARK}: attempt {job.attempt} of {job.job_key} chunk {chunk.number} found the chunk committed by a newer attempt"
    )
    statement = f"""
        MERGE INTO {job.lake.changes_table} t
        USING {view} s
        ON t._job_key = {sql_string(job.job_key)} AND t._chunk = {chunk.number} AND s.{MARKER}
        WHEN MATCHED AND t._attempt > {job.attempt} THEN UPDATE SET t._op = CAST(raise_error({sql_string(stale)}) AS STRING)
        WHEN MATCHED THEN DELETE
        WHEN NOT MATCHED AND NOT s.{MARKER} THEN INSERT ({columns}) VALUES ({values})
    """
    commit = commit_id()
    try:
        with_commit_properties(spark, {**props, "spotlake.commit-id": commit}, lambda: spark.sql(statement).collect())
    except Py4JJavaError as exc:
        raise _commit_error(job, exc, "changes") from None
    finally:
        spark.catalog.dropTempView(view)
    snapshot = snapshot_with(spark, job.lake.changes_table, "spotlake.commit-id", commit)
    return snapshot.snapshotId() if snapshot is not None else None


def merge_current(
    spark: SparkSession,
    job: ExtractJob,
    keys: KeyColumns,
    rows: DataFrame,
    props: Mapping[str, str],
    changes_snapshot: int | None,
    key_range: tuple[int, int] | None = None,
) -> CommitResult:
    """Merge the chunk's newest row per key into the current-state table; an existing row is
    replaced only by a newer version (newer cursor, or the same cursor read later).

    ``key_range`` (the lowest and highest integer key of the chunk) narrows the table's side of
    the join to the files whose key bounds overlap it; the table is sorted by its key, so a
    chunk of the initial snapshot, or a window of recent keys, reads few of its files."""
    view = _view(newest_per_key(rows, keys), job, "current")
    on = " AND ".join(f"t.{quote_identifier(c)} = s.{quote_identifier(c)}" for c in keys.primary_key)
    if key_range is not None and len(keys.primary_key) == 1:
        key = quote_identifier(keys.primary_key[0])
        on += f" AND t.{key} >= {int(key_range[0])} AND t.{key} <= {int(key_range[1])}"
    cursor = quote_identifier(keys.cursor)
    newer = (
        f"(s.{cursor} > t.{cursor} OR (t.{cursor} IS NULL AND s.{cursor} IS NOT NULL) "
        f"OR (s.{cursor} <=> t.{cursor} AND s._extracted_at > t._extracted_at))"
    )
    statement = f"""
        MERGE INTO {job.lake.current_table} t
        USING {view} s
        ON {on}
        WHEN MATCHED AND {newer} THEN UPDATE SET *
        WHEN NOT MATCHED THEN INSERT *
    """
    commit = commit_id()
    try:
        with_commit_properties(spark, {**props, "spotlake.commit-id": commit}, lambda: spark.sql(statement).collect())
    except Py4JJavaError as exc:
        raise _commit_error(job, exc, "current-state") from None
    finally:
        spark.catalog.dropTempView(view)
    snapshot = snapshot_with(spark, job.lake.current_table, "spotlake.commit-id", commit)
    return CommitResult(changes_snapshot, snapshot.snapshotId() if snapshot is not None else None, live_rows(snapshot))


def _commit_error(job: ExtractJob, exc: Py4JJavaError, table: str) -> Exception:
    text = str(exc.java_exception)
    root = exc.java_exception
    while root.getCause() is not None and root.getCause() is not root:
        root = root.getCause()
        text += " " + str(root)
    if STALE_MARK in text:
        return StaleAttemptError(
            f"{job.context}: attempt {job.attempt} of {job.job_key} is stale: a newer attempt already committed "
            "this chunk, so this attempt's rows are refused and the table is unchanged"
        )
    if "ValidationException" in text or "CommitFailedException" in text:
        return CommitConflict(
            f"{job.context}: the {table} commit of {job.job_key} lost a race with another commit: {root.getMessage()}"
        )
    error: Exception = exc  # py4j has no type information: Py4JJavaError is an Exception
    return error
