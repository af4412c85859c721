"""The click stream: Kafka -> validated events -> PostgreSQL aggregates and the lake.

:func:`run_stream` is a function of (Spark session, job), like the extraction job,
so it runs the same in a ``spark-submit`` on a cluster (``stream_clicks.py``) and
in a test's session. It starts up to three Structured Streaming queries, each with
its own checkpoint under ``job.checkpoint`` (``aggregates/``, ``lake/``, ``dead_letters/``):

- ``<stream>_aggregates``: ``foreachBatch`` -> :class:`spark_jobs.click_sink.PostgresSinkWriter`:
  dead letters, late events, exact per-window aggregates and funnel counts, committed
  with the batch id in one transaction (a replayed batch changes nothing);
- ``<stream>_lake`` (when ``job.lake_path`` is set): every valid event once, as
  Parquet partitioned by ``event_date`` and ``event_hour`` through Spark's file sink,
  whose ``_spark_metadata`` log makes each batch's files visible exactly once;
- ``<stream>_dead_letters`` (when ``job.dead_letters_path`` is set): every dead letter
  once, as Parquet partitioned by ``kafka_date`` (the UTC date of its Kafka timestamp),
  through the file sink the same way. The dead letters also go to PostgreSQL with the
  aggregates query's batch; this copy is for the lake's readers. On the lake's trigger,
  it costs the aggregates query nothing per micro-batch.

The lake and dead-letters queries run on their own, longer triggers and read what they
need from Kafka themselves: a query has one sink, and the file sink's commit log is what
makes their files exactly once. With ``trigger.available_now`` the queries run one after
the other until they have read what Kafka held at their start, then :func:`run_stream`
returns; otherwise all run until one fails (its error is raised) or the application is
stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.click_events import (
    FUNNEL_STAGES,
    WINDOW_GROUP,
    batch_summary,
    classify_events,
    dead_letters,
    kafka_records,
    valid_events,
    with_dead_letter_partitions,
    with_lake_partitions,
)
from spark_jobs.click_sink import BatchResult, BatchRows, PostgresSinkWriter, resolve_target
from spark_jobs.errors import SpotlakeJobError, StreamingError
from spark_jobs.kafka_security import read_credentials
from spark_jobs.stream_job import StreamJob, Trigger

LOG = logging.getLogger(__name__)
# Spark's default of 200 shuffle partitions is far too many for a micro-batch's small
# aggregations; used unless the batch's Spark settings (spark_conf) choose a value.
SPARK_DEFAULT_SHUFFLE_PARTITIONS = "200"
MICRO_BATCH_SHUFFLE_PARTITIONS = "2"
# Scheduler pools (see in_pool): the aggregates query's, and the lake and dead-letters queries'.
AGGREGATES_POOL, FILES_POOL = "aggregates", "files"


@dataclass
class StreamRun:
    """What a run did (filled while it runs; complete once :func:`run_stream` returns)."""

    job: StreamJob
    batches: list[BatchResult] = field(default_factory=list)
    last_committed_before: int = -1
    # The job's own error raised inside foreachBatch (Spark reports it wrapped in a Java exception).
    error: SpotlakeJobError | None = None


def read_kafka(spark: SparkSession, options: dict[str, str]) -> DataFrame:
    """The job's topics as a streaming DataFrame of raw records."""
    return spark.readStream.format("kafka").options(**options).load()


def classified_stream(spark: SparkSession, options: dict[str, str]) -> DataFrame:
    return read_kafka(spark, options).transform(kafka_records).transform(classify_events)


def batch_rows(batch: DataFrame, job: StreamJob, watermark_ms: int | None,
               final_before_ms: int | None = None) -> BatchRows:
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
    """Add the window rows of :func:`~spark_jobs.click_events.batch_summary` to ``rows``."""
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


def batch_writer(job: StreamJob, writer: PostgresSinkWriter, run: StreamRun) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the aggregates query."""

    def write(batch: DataFrame, batch_id: int) -> None:
        try:
            result = writer.write(batch_id, lambda watermark_ms, final_ms: batch_rows(batch, job, watermark_ms,
                                                                                      final_ms))
        except SpotlakeJobError as exc:
            run.error = exc
            raise
        run.batches.append(result)

    return write


def start_aggregates(spark: SparkSession, job: StreamJob, writer: PostgresSinkWriter,
                     run: StreamRun) -> StreamingQuery:
    return (
        classified_stream(spark, job.source.options())
        .writeStream.queryName(job.aggregates_query)
        .option("checkpointLocation", job.aggregates_checkpoint)
        .trigger(**job.trigger.spark_options())
        .foreachBatch(batch_writer(job, writer, run))
        .start()
    )


def start_file_sink(frame: DataFrame, name: str, path: str, checkpoint: str, trigger: Trigger,
                    partitions: tuple[str, ...]) -> StreamingQuery:
    """``frame`` as Parquet under ``path`` through Spark's file sink, partitioned by ``partitions``:
    its ``_spark_metadata`` log makes each batch's files visible exactly once."""
    return (
        frame.writeStream.queryName(name)
        .format("parquet")
        .option("path", path)
        .option("checkpointLocation", checkpoint)
        .partitionBy(*partitions)
        .trigger(**trigger.spark_options())
        .outputMode("append")
        .start()
    )


def start_lake(spark: SparkSession, job: StreamJob) -> StreamingQuery:
    events = classified_stream(spark, job.lake_source_options()).transform(valid_events).transform(
        with_lake_partitions)
    return start_file_sink(events, job.lake_query, job.lake_path, job.lake_checkpoint,
                           job.lake_trigger or job.trigger, ("event_date", "event_hour"))


def start_dead_letters(spark: SparkSession, job: StreamJob) -> StreamingQuery:
    records = classified_stream(spark, job.dead_letters_source_options()).transform(dead_letters).transform(
        with_dead_letter_partitions)
    return start_file_sink(records, job.dead_letters_query, job.dead_letters_path, job.dead_letters_checkpoint,
                           job.dead_letters_trigger or job.trigger, ("kafka_date",))


def in_pool(spark: SparkSession, pool: str, start: Callable[[], StreamingQuery]) -> Callable[[], StreamingQuery]:
    """``start``, with the query's Spark jobs in scheduler pool ``pool``.

    Under ``spark.scheduler.mode=FAIR`` (the supervisor's default for streams) free task slots
    go to the pool with the fewest running tasks for its share, so the aggregates query's short
    jobs take turns with a lake or dead-letters batch (which on the one-minute trigger reads a
    minute of records at once) instead of waiting for all of it. A query keeps the pool of the
    thread that started it. Under FIFO the pools make no difference.
    """

    def started() -> StreamingQuery:
        context = spark.sparkContext
        previous = context.getLocalProperty("spark.scheduler.pool")
        context.setLocalProperty("spark.scheduler.pool", pool)
        try:
            return start()
        finally:
            context.setLocalProperty("spark.scheduler.pool", previous)  # None removes it

    return started


def with_kafka_credentials(job: StreamJob) -> StreamJob:
    """The job with the Kafka SCRAM credentials read from Secrets Manager (on the driver), if it uses SCRAM."""
    security = job.source.security
    if not security.needs_secret or job.source.credentials is not None:
        return job
    assert security.secret_id is not None
    credentials = read_credentials(security.secret_id, f"stream {job.stream}: Kafka secret '{security.secret_id}'",
                                   StreamingError, job.region)
    return replace(job, source=replace(job.source, credentials=credentials))


def run_stream(spark: SparkSession, job: StreamJob, writer: PostgresSinkWriter | None = None) -> StreamRun:
    """Run the job's queries (see the module documentation); return what the run did."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    if spark.conf.get("spark.sql.shuffle.partitions") == SPARK_DEFAULT_SHUFFLE_PARTITIONS:
        spark.conf.set("spark.sql.shuffle.partitions", MICRO_BATCH_SHUFFLE_PARTITIONS)
    job = with_kafka_credentials(job)
    if writer is None:
        writer = PostgresSinkWriter.for_target(
            resolve_target(job.sink.secret_id, job.stream, job.region, job.sink.endpoint), job.stream,
            schema=job.sink.schema,
            query_name=job.aggregates_query, run_id=job.run_id, window_s=job.window_s,
            watermark_delay_s=job.watermark_delay_s, late_policy=job.late_policy,
            allowed_lateness_s=job.allowed_lateness_s,
        )
    run = StreamRun(job)
    try:
        run.last_committed_before = writer.claim()
        starters: list[Callable[[], StreamingQuery]] = []
        if job.lake_path:
            starters.append(in_pool(spark, FILES_POOL, lambda: start_lake(spark, job)))
        if job.dead_letters_path:
            starters.append(in_pool(spark, FILES_POOL, lambda: start_dead_letters(spark, job)))
        starters.append(in_pool(spark, AGGREGATES_POOL, lambda: start_aggregates(spark, job, writer, run)))
        if job.trigger.available_now:
            for start in starters:
                await_query(start(), run)
        else:
            spark.streams.resetTerminated()
            queries = [start() for start in starters]
            try:
                spark.streams.awaitAnyTermination()
            except Exception:  # noqa: BLE001 - the failed query raises its own error just below
                LOG.warning("a query of %s failed; stopping the others", job.context)
            finally:
                stop_all(queries)
            for query in queries:
                await_query(query, run)
    finally:
        writer.close()
    return run


def await_query(query: StreamingQuery, run: StreamRun) -> None:
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


def stop_all(queries: list[StreamingQuery]) -> None:
    for query in queries:
        if query.isActive:
            LOG.info("stopping query %s", query.name)
            query.stop()


def describe(run: StreamRun) -> dict[str, Any]:
    committed = [b for b in run.batches if b.committed]
    return {
        "stream": run.job.stream,
        "run_id": run.job.run_id,
        "batches_committed": len(committed),
        "batches_skipped": len(run.batches) - len(committed),
        "records": sum(b.input_rows for b in committed),
        "counted_events": sum(b.counted_events for b in committed),
        "late_events": sum(b.late_events for b in committed),
        "dead_letters": sum(b.dead_letters for b in committed),
        "last_batch_id": max((b.batch_id for b in run.batches), default=run.last_committed_before),
    }
