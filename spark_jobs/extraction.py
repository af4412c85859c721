"""Extract one window of one MySQL table into the lake: extract, transform, load, commit.

:func:`run_extraction` is a function of (Spark session, job), so it runs the same
in a one-shot ``spark-submit`` (see ``extract.py``) and in a long-lived session.
It returns the committed manifest (see :mod:`spark_jobs.lake_commit`).

Phases, timed into the manifest's ``timings``:

- ``secret_s``: resolve the source secret;
- ``validate_s``: connect, check the table, its key columns and the cursor's index;
- ``read_s``: count the window's rows (and key bounds) to plan the JDBC read,
  and set the read up (Spark resolves the query's schema);
- ``transform_s``: apply the transformation steps (analysis only, no data moves);
- ``write_s``: fetch, transform and write the rows as Parquet: Spark runs these
  as one pipeline, so the JDBC fetch is part of this phase;
- ``commit_s``: list the files written and build the manifest. The manifest
  write itself and the clean-up of stale run directories come after the
  manifest is final; the returned dict reports them under ``after_commit``.

An empty window commits a manifest with 0 rows whose data path holds one
zero-row Parquet file carrying the schema (Spark writes it), so every committed
window has a readable schema.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

import pyspark.sql.functions as F
from py4j.protocol import Py4JJavaError
from pyspark.sql import Observation, SparkSession

from spark_jobs.job_config import UTC, ExtractJob
from spark_jobs.lake_commit import WindowLayout, commit_manifest, data_files, remove_stale_runs, write_window
from spark_jobs.mysql_source import (
    check_table,
    describe_table,
    java_message,
    jdbc_connection,
    partition_count,
    read_window,
    resolve_source,
    window_stats,
)
from spark_jobs.transforms import apply_transforms

__all__ = ["ExtractJob", "run_extraction"]

LOG = logging.getLogger(__name__)

# Set for the duration of a run and restored afterwards (the session may be long-lived).
SESSION_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
ISO_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSxxx"


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
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def run_extraction(spark: SparkSession, job: ExtractJob) -> dict[str, Any]:
    """Extract the job's window, write it, commit its manifest, and return the manifest."""
    clock = PhaseClock()
    layout = WindowLayout(root=job.output.root, label=job.window.label, run_id=job.run_id)
    with session_settings(spark, SESSION_SETTINGS):
        with clock.phase("secret_s"):
            source = resolve_source(job)
        with ExitStack() as stack:
            with clock.phase("validate_s"):
                connection = stack.enter_context(jdbc_connection(spark, source, job))
                table = describe_table(connection, job)
                check_table(job, table)
            with clock.phase("read_s"):
                stats = window_stats(connection, job, table)
        with clock.phase("read_s"):
            rows = read_window(spark, source, job, table, stats)
        read_metrics = Observation(f"rows_read_{job.run_id}")
        with clock.phase("transform_s"):
            rows = rows.observe(
                read_metrics,
                F.count(F.lit(1)).alias("rows"),
                F.date_format(F.min(job.cursor), ISO_PATTERN).alias("cursor_min"),
                F.date_format(F.max(job.cursor), ISO_PATTERN).alias("cursor_max"),
            )
            out, keys = apply_transforms(rows, job)
            written_metrics = Observation(f"rows_written_{job.run_id}")
            out = out.observe(written_metrics, F.count(F.lit(1)).alias("rows"))
        with clock.phase("write_s"):
            write_window(out.sortWithinPartitions(*keys.primary_key), layout)
            read, written = read_metrics.get, written_metrics.get
        with clock.phase("commit_s"):
            manifest = {
                "job_key": job.job_key,
                "attempt": job.attempt,
                "run_id": job.run_id,
                "pipeline": job.pipeline,
                "database": job.database,
                "table": job.table,
                "window": job.window.to_json(),
                "rows_read": int(read["rows"]),
                "rows_written": int(written["rows"]),
                "cursor_min": read["cursor_min"],
                "cursor_max": read["cursor_max"],
                "primary_key": list(keys.primary_key),
                "cursor": keys.cursor,
                "soft_delete": keys.soft_delete,
                "schema": out.schema.json(),
                "data_path": layout.run_dir,
                "files": data_files(spark, layout.run_dir),
                "read_partitions": partition_count(job, stats),
                "committed_at": datetime.now(UTC).isoformat(),
            }
        manifest["timings"] = dict(clock.timings)
        started = time.perf_counter()
        commit_manifest(spark, layout.manifest, manifest)
        written_s = round(time.perf_counter() - started, 3)
    removed = remove_stale_runs_after_commit(spark, job, layout)
    LOG.info(
        "%s: committed window %s: %d rows read, %d written, timings %s, manifest write %.3fs, "
        "removed %d stale runs",
        job.context,
        layout.label,
        manifest["rows_read"],
        manifest["rows_written"],
        manifest["timings"],
        written_s,
        len(removed),
    )
    return {**manifest, "after_commit": {"manifest_write_s": written_s, "removed_runs": removed}}


def remove_stale_runs_after_commit(spark: SparkSession, job: ExtractJob, layout: WindowLayout) -> list[str]:
    """Clean-up is not part of the commit: a failure is logged, and the next run of the window retries it."""
    try:
        return remove_stale_runs(spark, layout, job.output.retention_s)
    except Py4JJavaError as exc:
        LOG.warning(
            "%s: window %s committed, but removing stale run directories failed: %s",
            job.context,
            layout.label,
            java_message(exc),
        )
        return []
