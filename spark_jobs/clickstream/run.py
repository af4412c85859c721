"""The click stream: Kafka -> validated events -> PostgreSQL aggregates and the lake's Iceberg tables.

:func:`run_stream` is a function of (Spark session, job), like the extraction job,
so it runs the same in a ``spark-submit`` on a cluster (``clickstream/main.py``) and
in a test's session. It runs ONE Structured Streaming query per stream, named after
the stream, with its checkpoint at ``job.checkpoint``. Each micro-batch is read from
Kafka and parsed once (the classified batch is persisted), and ``foreachBatch``
(:func:`batch_writer`) writes every output from it, in one PostgreSQL transaction
that holds the query's ``stream_progress`` row (:class:`~spark_jobs.clickstream.sink.PostgresSinkWriter`):

1. the aggregates, funnel counts, late events and dead letters, skipped as a whole when
   the batch id was committed before by this checkpoint;
2. the valid events appended to the Iceberg events table, and the dead letters to the
   dead-letters table (:class:`LakeWriter`), each commit's snapshot summary recording
   the stream, the checkpoint id and the batch id, so a replayed batch finds its commit
   and skips it;
3. the progress, then COMMIT.

So every output is written exactly once without a checkpoint of its own. The
checkpoint's identity is Spark's id of it (``<checkpoint>/metadata``, written before
the query starts when the checkpoint is new); the sink refuses a checkpoint it does not
know unless ``python -m spotlake.stream_reset`` said where it starts.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession

from spark_jobs.clickstream.events import (
    FUNNEL_STAGES,
    WINDOW_GROUP,
    batch_summary,
    classify_events,
    dead_letters,
    kafka_records,
    valid_events,
    with_future_check,
)
from spark_jobs.clickstream.job import StreamJob, StreamLake
from spark_jobs.clickstream.kafka_security import read_credentials
from spark_jobs.clickstream.sink import BatchResult, BatchRows, PostgresSinkWriter, resolve_target
from spark_jobs.common.errors import SpotlakeJobError, StreamingError
from spark_jobs.common.lake_catalog import catalog_properties, ddl_columns, newest_snapshot_having, table_exists
from spark_jobs.common.runtime import driver_jvm

LOG = logging.getLogger(__name__)
# Spark's default of 200 shuffle partitions is far too many for a micro-batch's small
# aggregations; used unless the batch's Spark settings (spark_conf) choose a value.
SPARK_DEFAULT_SHUFFLE_PARTITIONS = "200"
MICRO_BATCH_SHUFFLE_PARTITIONS = "2"
# Snapshot summary keys of the stream's Iceberg commits.
STREAM_KEY, CHECKPOINT_KEY, BATCH_KEY = "spotlake.stream", "spotlake.checkpoint-id", "spotlake.batch-id"
TABLE_PROPERTIES = {
    "format-version": "2",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
    # A micro-batch is small: no shuffle to cluster it by partition before writing; each task
    # keeps a file open per day it meets instead (the maintenance DAG compacts the small files).
    "write.distribution-mode": "none",
    "write.spark.fanout.enabled": "true",
}
# How far back a replayed batch looks for its commit (compactions add snapshots in between).
SNAPSHOT_DEPTH = 10_000
# Every commit adds a snapshot, and every snapshot stays in the table's metadata until expired:
# at a 1 s trigger a day is 86,400 of them, rewritten with each commit. So the stream expires its
# own tables' snapshots every EXPIRE_EVERY batches: older than the stream's
# ``lake.snapshot_retention`` (1 h by default), keeping the last RETAIN_LAST (a replay needs only
# the newest). The daily maintenance compacts the files.
EXPIRE_EVERY = 100
RETAIN_LAST = 100


@dataclass
class StreamRun:
    """What a run did (filled while it runs; complete once :func:`run_stream` returns)."""

    job: StreamJob
    batches: list[BatchResult] = field(default_factory=list)
    last_committed_before: int = -1
    checkpoint_id: str | None = None
    # The job's own error raised inside foreachBatch (Spark reports it wrapped in a Java exception).
    error: SpotlakeJobError | None = None


@dataclass(frozen=True)
class Checkpoint:
    id: str
    started: bool  # it holds offsets of its own (Spark ignores startingOffsets then)


def _hadoop_path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = driver_jvm(spark)
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark._jsc.hadoopConfiguration())


def checkpoint_identity(spark: SparkSession, checkpoint: str) -> Checkpoint:
    """The checkpoint's id (Spark's query id, in ``<checkpoint>/metadata``), writing one first
    when the checkpoint is new, so the sink can be claimed for it before the query starts."""
    metadata, fs = _hadoop_path(spark, f"{checkpoint.rstrip('/')}/metadata")
    if fs.exists(metadata):
        stream = fs.open(metadata)
        try:
            jvm = driver_jvm(spark)
            reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
            text = reader.readLine() or ""
        finally:
            stream.close()
        try:
            checkpoint_id = str(uuid.UUID(json.loads(text)["id"]))
        except (ValueError, KeyError, TypeError):
            raise StreamingError(
                f"checkpoint {checkpoint}: its metadata file holds no query id ({text[:80]!r}); the checkpoint is "
                "damaged — delete the checkpoint folder and reset the stream (python -m spotlake.stream_reset)"
            ) from None
    else:
        checkpoint_id = str(uuid.uuid4())
        out = fs.create(metadata, False)
        try:
            out.write(bytearray(json.dumps({"id": checkpoint_id}).encode()))
        finally:
            out.close()
        LOG.info("checkpoint %s is new: id %s", checkpoint, checkpoint_id)
    offsets, _ = _hadoop_path(spark, f"{checkpoint.rstrip('/')}/offsets")
    started = bool(fs.exists(offsets)) and any(
        not status.getPath().getName().startswith(".") for status in fs.listStatus(offsets)
    )
    return Checkpoint(checkpoint_id, started)


def stream_expiry_cutoff(spark: SparkSession, table: str, cutoff_ms: int) -> int:
    """``cutoff_ms``, or earlier: a snapshot expiry must keep the newest commit of the stream, the
    one a replayed batch looks for (:meth:`LakeWriter.committed`), however many compactions came
    after it (a stream stopped for days, compacted daily, would otherwise lose it)."""
    newest = newest_snapshot_having(spark, table, CHECKPOINT_KEY)
    return min(cutoff_ms, int(newest.timestampMillis())) if newest is not None else cutoff_ms


class LakeWriter:
    """Appends a micro-batch's valid events and dead letters to the stream's Iceberg tables,
    once per (checkpoint, batch): each commit's snapshot summary names them."""

    def __init__(self, spark: SparkSession, job: StreamJob, checkpoint_id: str) -> None:
        assert job.lake is not None
        self.spark = spark
        self.job = job
        self.lake: StreamLake = job.lake
        self.checkpoint_id = checkpoint_id
        for key, value in catalog_properties(self.lake, job.context, job.region).items():
            spark.conf.set(key, value)

    def ensure_tables(self, classified: DataFrame) -> None:
        """Create the tables if missing (from the schema of the job's own transformations)."""
        lake = self.lake
        self.spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {lake.catalog}.{lake.namespace}")
        self._create(lake.events_table, valid_events(classified), "days(event_time)", "events")
        if lake.dead_letters_table:
            self._create(lake.dead_letters_table, dead_letters(classified), "days(kafka_timestamp)", "dead-letters")

    def _create(self, name: str, frame: DataFrame, partitioning: str, role: str) -> None:
        if table_exists(self.spark, name):
            return
        props = {**TABLE_PROPERTIES, "spotlake.stream": self.job.stream, "spotlake.role": role}
        listed = ", ".join(f"'{k}'='{v}'" for k, v in props.items())
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {name} ({ddl_columns(frame.schema)}) USING iceberg "
            f"PARTITIONED BY ({partitioning}) TBLPROPERTIES ({listed})"
        )
        LOG.info("%s: created the Iceberg table %s", self.job.context, name)

    def write(self, classified: DataFrame, batch_id: int, rows: BatchRows) -> dict[str, float]:
        """Commit the batch to each table unless this checkpoint committed it before, the two
        tables at once (their commits wait on S3 and the catalog more than on the cores);
        seconds per table."""
        appends = {}
        if rows.valid_events:
            appends["lake_events"] = (self.lake.events_table, valid_events(classified))
        if self.lake.dead_letters_table and rows.dead_letters:
            appends["lake_dead_letters"] = (self.lake.dead_letters_table, dead_letters(classified))
        if not appends:
            return {}

        def timed(table: str, frame: DataFrame) -> float:
            started = time.monotonic()
            self._append(table, frame, batch_id)
            return time.monotonic() - started

        if len(appends) == 1:
            ((phase, (table, frame)),) = appends.items()
            return {phase: timed(table, frame)}
        with ThreadPoolExecutor(max_workers=len(appends), thread_name_prefix="lake-append") as pool:
            futures = {phase: pool.submit(timed, table, frame) for phase, (table, frame) in appends.items()}
            return {phase: future.result() for phase, future in futures.items()}

    def committed(self, table: str, batch_id: int) -> bool:
        """Whether this checkpoint committed ``batch_id`` (or a later batch) to ``table``: the newest
        snapshot of this checkpoint says so (batches commit in order)."""
        iceberg = driver_jvm(self.spark).org.apache.iceberg.spark.Spark3Util.loadIcebergTable(self.spark._jsparkSession, table)
        iceberg.refresh()
        snapshot = iceberg.currentSnapshot()
        for _ in range(SNAPSHOT_DEPTH):
            if snapshot is None:
                return False
            summary = snapshot.summary()
            if summary.get(CHECKPOINT_KEY) == self.checkpoint_id:
                return int(summary.get(BATCH_KEY)) >= batch_id
            parent = snapshot.parentId()
            snapshot = iceberg.snapshot(parent) if parent is not None else None
        return False

    def expire_snapshots(self) -> None:
        """Expire the tables' snapshots older than the stream's retention (keeping RETAIN_LAST), never
        the stream's newest commit (:func:`stream_expiry_cutoff`); a failure is logged, never fatal
        (the next round, or the maintenance DAG, does it)."""
        for name in (self.lake.events_table, self.lake.dead_letters_table):
            if name is None:
                continue
            try:
                retention = self.lake.snapshot_retention_s
                cutoff = stream_expiry_cutoff(self.spark, name, int((time.time() - retention) * 1000))
                jvm = driver_jvm(self.spark)
                table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(self.spark._jsparkSession, name)
                table.expireSnapshots().expireOlderThan(cutoff).retainLast(RETAIN_LAST).commit()
            except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the stream
                LOG.warning(
                    "%s: expiring the snapshots of %s failed (%s); the next round retries",
                    self.job.context,
                    name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )

    def _append(self, table: str, frame: DataFrame, batch_id: int) -> None:
        if self.committed(table, batch_id):
            LOG.info("%s batch %s: already in %s (a replay); not appended again", self.job.context, batch_id, table)
            return
        (
            frame.writeTo(table)
            .option(f"snapshot-property.{STREAM_KEY}", self.job.stream)
            .option(f"snapshot-property.{CHECKPOINT_KEY}", self.checkpoint_id)
            .option(f"snapshot-property.{BATCH_KEY}", str(batch_id))
            .append()
        )


def read_kafka(spark: SparkSession, options: dict[str, str]) -> DataFrame:
    """The job's topics as a streaming DataFrame of raw records."""
    return spark.readStream.format("kafka").options(**options).load()


def classified(batch: DataFrame, job: StreamJob) -> DataFrame:
    """A micro-batch of Kafka records, parsed and checked once (see :mod:`spark_jobs.clickstream.events`)."""
    return batch.transform(kafka_records).transform(classify_events).transform(with_future_check(job.max_future_skew_s))


def batch_rows(batch: DataFrame, job: StreamJob, watermark_ms: int | None, final_before_ms: int | None = None) -> BatchRows:
    """A classified micro-batch as the sink's rows: one Spark job (:func:`batch_summary`)."""
    rows = BatchRows()
    event_times: list[int] = []
    windows: list[Row] = []
    summary = batch_summary(batch, job.window_s, watermark_ms, job.late_policy, final_before_ms)
    for row in summary.collect():
        if row["group"] == WINDOW_GROUP:
            windows.append(row)
            continue
        rows.offsets.setdefault(row["kafka_topic"], {})[str(row["kafka_partition"])] = int(row["max_offset"]) + 1
        rows.input_rows += int(row["records"])
        rows.valid_events += int(row["valid"])
        if row["max_event_time_ms"] is not None:
            event_times.append(int(row["max_event_time_ms"]))
        rows.dead_letters.extend(tuple(r) for r in row["dead_letters"])
        rows.late_events.extend(tuple(r) for r in row["late_events"])
    rows.max_event_time_ms = max(event_times) if event_times else None
    add_window_summary(rows, windows)
    return rows


def add_window_summary(rows: BatchRows, summary: list[Row]) -> None:
    """Add the window rows of :func:`~spark_jobs.clickstream.events.batch_summary` to ``rows``."""
    stage_events: Counter[tuple[int, str]] = Counter()
    funnel_members: set[tuple[int, str, str]] = set()
    for row in summary:
        window, page, event_type = row["window_start_ms"], row["page"], row["event_type"]
        rows.window_counts.append((window, page, event_type, row["events"], row["late_count"]))
        rows.members.extend(("user", window, page, event_type, user) for user in row["users"])
        rows.members.extend(("session", window, page, event_type, session) for session in row["sessions"])
        for stage in FUNNEL_STAGES:
            if row[f"{stage}_events"]:
                stage_events[(window, stage)] += row[f"{stage}_events"]
        funnel_members.update((window, pair["stage"], pair["session_id"]) for pair in row["funnel_sessions"])
    rows.funnel_counts.extend((window, stage, events) for (window, stage), events in stage_events.items())
    rows.members.extend(("funnel", window, stage, "", session) for window, stage, session in funnel_members)


def batch_writer(
    job: StreamJob, writer: PostgresSinkWriter, run: StreamRun, lake: LakeWriter | None = None
) -> Callable[[DataFrame, int], None]:
    """The query's ``foreachBatch`` function: every output of the batch, once (module documentation)."""
    tables_ready = False

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal tables_ready
        started = time.monotonic()
        records = classified(batch, job).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            if lake is not None and not tables_ready:
                lake.ensure_tables(records)
                tables_ready = True
            state: dict[str, BatchRows] = {}

            def compute(watermark_ms: int | None, final_ms: int | None) -> BatchRows:
                state["rows"] = batch_rows(records, job, watermark_ms, final_ms)
                return state["rows"]

            def before_commit() -> dict[str, float]:
                return lake.write(records, batch_id, state["rows"]) if lake is not None else {}

            result = writer.write(batch_id, compute, before_commit)
        except SpotlakeJobError as exc:
            run.error = exc
            raise
        finally:
            records.unpersist()
        if result.committed:
            result.phases["batch"] = time.monotonic() - started
            if lake is not None and batch_id % EXPIRE_EVERY == EXPIRE_EVERY - 1:
                lake.expire_snapshots()
        run.batches.append(result)

    return write


def with_kafka_credentials(job: StreamJob) -> StreamJob:
    """The job with the Kafka SCRAM credentials read from Secrets Manager (on the driver), if it uses SCRAM."""
    security = job.source.security
    if not security.needs_secret or job.source.credentials is not None:
        return job
    assert security.secret_id is not None
    credentials = read_credentials(
        security.secret_id, f"stream {job.stream}: Kafka secret '{security.secret_id}'", StreamingError, job.region
    )
    return replace(job, source=replace(job.source, credentials=credentials))


def run_stream(spark: SparkSession, job: StreamJob, writer: PostgresSinkWriter | None = None) -> StreamRun:
    """Run the stream's query (see the module documentation); return what the run did."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    if spark.conf.get("spark.sql.shuffle.partitions") == SPARK_DEFAULT_SHUFFLE_PARTITIONS:
        spark.conf.set("spark.sql.shuffle.partitions", MICRO_BATCH_SHUFFLE_PARTITIONS)
    job = with_kafka_credentials(job)
    if writer is None:
        writer = PostgresSinkWriter.for_target(
            resolve_target(job.sink.secret_id, job.stream, job.region, job.sink.endpoint, job.sink.tls),
            job.stream,
            schema=job.sink.schema,
            query_name=job.query_name,
            run_id=job.run_id,
            window_s=job.window_s,
            watermark_delay_s=job.watermark_delay_s,
            late_policy=job.late_policy,
            allowed_lateness_s=job.allowed_lateness_s,
            attempt=job.attempt,
        )
    run = StreamRun(job)
    try:
        checkpoint = checkpoint_identity(spark, job.checkpoint)
        claim = writer.claim(checkpoint.id, checkpoint.started, job.source.starting_offsets)
        run.last_committed_before, run.checkpoint_id = claim.last_batch_id, checkpoint.id
        lake = LakeWriter(spark, job, checkpoint.id) if job.lake is not None else None
        options = {**job.source.options(), "startingOffsets": claim.starting_offsets}
        spark.streams.resetTerminated()
        query = (
            read_kafka(spark, options)
            .writeStream.queryName(job.query_name)
            .option("checkpointLocation", job.checkpoint)
            .trigger(**job.trigger.spark_options())
            .foreachBatch(batch_writer(job, writer, run, lake))
            .start()
        )
        if str(query.id) != checkpoint.id:
            query.stop()
            raise StreamingError(
                f"{job.context}: the query started with id {query.id}, not the checkpoint's "
                f"{checkpoint.id}; another process rewrote {job.checkpoint}/metadata"
            )
        await_query(query, run)
    finally:
        writer.close()
    return run


def await_query(query: Any, run: StreamRun) -> None:
    """Wait for ``query`` to end; raise its error if it failed (the job's own, when it was one)."""
    try:
        query.awaitTermination()
    except Exception:
        if run.error is not None:
            raise run.error from None
        raise
    error = query.exception()
    if error is not None:
        if run.error is not None:
            raise run.error from None
        raise error


def describe(run: StreamRun) -> dict[str, Any]:
    committed = [b for b in run.batches if b.committed]
    return {
        "stream": run.job.stream,
        "run_id": run.job.run_id,
        "checkpoint_id": run.checkpoint_id,
        "batches_committed": len(committed),
        "batches_skipped": len(run.batches) - len(committed),
        "records": sum(b.input_rows for b in committed),
        "counted_events": sum(b.counted_events for b in committed),
        "late_events": sum(b.late_events for b in committed),
        "dead_letters": sum(b.dead_letters for b in committed),
        "last_batch_id": max((b.batch_id for b in run.batches), default=run.last_committed_before),
    }


def run_and_describe(spark: SparkSession, job: StreamJob) -> dict[str, Any]:
    """The stream's job function for :func:`spark_jobs.common.entry.run_main`: run it, then its summary."""
    return describe(run_stream(spark, job))
