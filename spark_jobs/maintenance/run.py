"""Table maintenance of one pipeline's two Iceberg tables: compaction, snapshot expiry, orphans.

Every window adds small files (and, to the current-state table, position deletes from
its ``MERGE INTO``); every commit adds a snapshot. Once a day by default
(``lake.maintenance`` in ``config/pipelines.yaml``, the ``lake_maintenance`` DAG), under the
pipeline's commit lock, so no window commits while it runs:

1. ``rewrite_data_files``: the current-state table sorted by its primary key (the table's
   sort order), applying its position deletes and dropping the delete files that no longer
   apply to any data file; the changes table bin-packed.
2. ``rewrite_position_delete_files``: compacts the delete files still in use.
3. ``expire_snapshots``: snapshots older than ``snapshot_retention`` (keeping at least
   ``retain_last``), with the files only they reference. A reader that planned its scan on
   a snapshot younger than the retention finds every file it needs.
4. ``remove_orphan_files``: files under the table that no snapshot references and that are
   older than ``orphan_age`` (an attempt still writing has younger ones).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.common.commit_lock import take_lock
from spark_jobs.common.errors import ExtractionError
from spark_jobs.common.job_documents import UTC, MaintenanceJob
from spark_jobs.common.lake_catalog import ICEBERG_EXTENSIONS, catalog_properties, table_exists, with_commit_properties
from spark_jobs.common.lake_state import LakeState, Owner, iso

LOG = logging.getLogger(__name__)


def _call(spark: SparkSession, statement: str) -> dict[str, Any]:
    rows = spark.sql(statement).collect()
    if not rows:
        return {}
    first = rows[0].asDict()
    return {k: v for k, v in first.items() if isinstance(v, (int, float, str))} | {"rows": len(rows)}


def maintain_table(
    spark: SparkSession, job: MaintenanceJob, name: str, role: str, now: datetime, keep_from: Callable[[int], int] | None = None
) -> dict[str, Any]:
    """Compact, expire and clean one table; returns what each step did. ``keep_from(cutoff_ms)``
    may move the expiry's cutoff earlier (a stream's table keeps its newest commit)."""
    catalog, short = job.lake.catalog, name.split(".", 1)[1]
    options = job.options
    target = int(options.target_file_size_mb) * 1024 * 1024
    strategy = "strategy => 'sort', " if role == "current" else ""
    done: dict[str, Any] = {}
    started = time.perf_counter()
    props = {
        "spotlake.pipeline": job.pipeline,
        "spotlake.job-key": job.job_key,
        "spotlake.run-id": job.run_id,
        "spotlake.attempt": str(job.attempt),
    }
    with_commit_properties(
        spark,
        props,
        lambda: done.update(
            rewrite=_call(
                spark,
                (
                    f"CALL {catalog}.system.rewrite_data_files(table => '{short}', {strategy}"
                    f"options => map('min-input-files', '2', 'delete-file-threshold', '1', 'remove-dangling-deletes', 'true', "
                    f"'target-file-size-bytes', '{target}', 'partial-progress.enabled', 'true'))"
                ),
            )
        ),
    )
    done["rewrite_deletes"] = _call(spark, f"CALL {catalog}.system.rewrite_position_delete_files(table => '{short}')")
    older = now - timedelta(seconds=options.snapshot_retention_s)
    if keep_from is not None:
        older = datetime.fromtimestamp(keep_from(int(older.timestamp() * 1000)) / 1000, UTC)
    done["expire"] = _call(
        spark,
        (
            f"CALL {catalog}.system.expire_snapshots(table => '{short}', "
            f"older_than => TIMESTAMP '{older.strftime('%Y-%m-%d %H:%M:%S.%f')}', "
            f"retain_last => {int(options.retain_last)}, stream_results => true)"
        ),
    )
    orphans_before = now - timedelta(seconds=options.orphan_age_s)
    removed = spark.sql(
        f"CALL {catalog}.system.remove_orphan_files(table => '{short}', "
        f"older_than => TIMESTAMP '{orphans_before.strftime('%Y-%m-%d %H:%M:%S.%f')}', prefix_listing => true)"
    ).collect()
    done["orphans_removed"] = [r[0] for r in removed]
    done["seconds"] = round(time.perf_counter() - started, 3)
    LOG.info("%s: %s %s: %s", job.context, role, name, done)
    return done


def run_maintenance(spark: SparkSession, job: MaintenanceJob) -> dict[str, Any]:
    """Maintain the pipeline's tables under its commit lock; record when in the registry."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if ICEBERG_EXTENSIONS not in extensions:
        raise ExtractionError(
            f"{job.context}: the Spark session lacks Iceberg's SQL extensions (spark.sql.extensions={ICEBERG_EXTENSIONS})"
        )
    for key, value in catalog_properties(job.lake, f"pipeline {job.pipeline}", job.registry.region).items():
        spark.conf.set(key, value)
    if job.stream is not None:
        return _maintain_stream(spark, job)
    import boto3

    store = LakeState(
        boto3.client("dynamodb", **({"region_name": job.registry.region} if job.registry.region else {})), job.registry.prefix
    )
    if store.get(job.pipeline) is None:
        LOG.info("%s: the pipeline has not run yet (no lake state, no tables): nothing to maintain", job.context)
        return {"pipeline": job.pipeline, "job_key": job.job_key, "tables": {}, "skipped": "the pipeline has not run yet"}
    held = take_lock(store, job.pipeline, Owner(job.job_key, job.run_id, job.attempt), job.commit.lease_s, job.commit.wait_s)
    result: dict[str, Any] = {"pipeline": job.pipeline, "job_key": job.job_key, "tables": {}}
    try:
        now = datetime.now(UTC)
        for role, name in (("current", job.lake.current_table), ("changes", job.lake.changes_table)):
            held.check()
            if table_exists(spark, name):
                result["tables"][name] = maintain_table(spark, job, name, role, now)
        held.check()
        store.release(held.lock, {"maintained_at": iso(datetime.now(UTC))})
    finally:
        held.stop()
    return result


def _maintain_stream(spark: SparkSession, job: MaintenanceJob) -> dict[str, Any]:
    """A stream's events and dead-letters tables: bin-packed, expired, cleaned; no lock (the
    stream only appends, and an append never conflicts with a compaction)."""
    result: dict[str, Any] = {"pipeline": job.pipeline, "job_key": job.job_key, "tables": {}}
    now = datetime.now(UTC)
    from spark_jobs.clickstream.run import stream_expiry_cutoff

    for name in dict.fromkeys((job.lake.current_table, job.lake.changes_table)):
        if table_exists(spark, name):
            result["tables"][name] = maintain_table(
                spark, job, name, "stream", now, keep_from=partial(stream_expiry_cutoff, spark, name)
            )
    if not result["tables"]:
        result["skipped"] = "the stream has written nothing to the lake yet"
    return result
