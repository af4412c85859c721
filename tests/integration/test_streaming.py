"""The click stream against the real Kafka, PostgreSQL, the local S3 server and Spark (in-process and via Livy).

The generator produces a known, seeded stream into a topic of its own; the sink must
then hold exactly what a plain-Python recomputation of the same records gives, whatever
the micro-batches, replays, restarts and cluster deaths in between.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import boto3
import psycopg2
import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.click_events import classify_events
from spark_jobs.click_sink import PostgresSinkWriter, resolve_target
from spark_jobs.clickstream import StreamRun, batch_writer, run_stream
from spotlake import artifacts
from spotlake.clickgen.events import VALID, classify
from spotlake.livy import EndpointLivyHook
from spotlake.localstack import services
from spotlake.localstack.layout import StackLayout
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from spotlake.stream_status import StreamState, StreamStatusStore
from spotlake.stream_supervisor import (
    KafkaTopics,
    LivyBatchControl,
    S3Checkpoint,
    SinkDatabase,
    StreamSupervisor,
    TopicMissing,
)
from spotlake.streaming import StreamConfig
from tests.integration.stream_harness import (
    START_MS,
    StreamEnv,
    click_records,
    expected_aggregates,
    expected_funnel,
    spark_session,
    valid_events,
)

pytestmark = pytest.mark.integration

RECORDS = StructType([
    StructField("key", BinaryType()), StructField("value", BinaryType()),
    StructField("kafka_topic", StringType()), StructField("kafka_partition", IntegerType()),
    StructField("kafka_offset", LongType()), StructField("kafka_timestamp_ms", LongType()),
])


@pytest.fixture(scope="module")
def spark(s3_endpoint: str) -> Iterator[SparkSession]:
    session = spark_session(s3_endpoint)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def sink_postgres(request: pytest.FixtureRequest, layout: StackLayout) -> dict[str, str]:
    """The PostgreSQL the stack runs: used as it is when it answers on its port, else started
    through the ``postgres`` fixture."""
    settings = services.postgres_settings(layout)
    try:
        psycopg2.connect(host=settings["host"], port=int(settings["port"]), user=settings["user"],
                         password=settings["password"], dbname=settings["database"], connect_timeout=5).close()
    except psycopg2.OperationalError:
        return request.getfixturevalue("postgres")
    return settings


@pytest.fixture
def env(kafka_bootstrap: str, sink_postgres: dict[str, str], moto_endpoint: str) -> Iterator[StreamEnv]:
    environment = StreamEnv(kafka_bootstrap, sink_postgres, moto_endpoint)
    yield environment
    environment.close()


def writer_for(env: StreamEnv, job: Any) -> PostgresSinkWriter:
    return PostgresSinkWriter.for_target(
        resolve_target(job.sink.secret_id, job.stream), job.stream, schema=job.sink.schema,
        query_name=job.aggregates_query, run_id=job.run_id, window_s=job.window_s,
        watermark_delay_s=job.watermark_delay_s, late_policy=job.late_policy,
        allowed_lateness_s=job.allowed_lateness_s,
    )


# ------------------------------------------------------------ in-process runs
def test_stream_sinks_equal_an_independent_recomputation_and_replays_change_nothing(
    spark: SparkSession, env: StreamEnv
) -> None:
    records, malformed = click_records(
        seed=21, count=3000, malformed_fraction=0.01, late_fraction=0.05, late_max_seconds=120,
        out_of_order_fraction=0.02,
    )
    assert set(malformed) == {"bad_json", "missing_field", "wrong_type", "unknown_schema_version"}
    env.produce(records)
    events = valid_events(records)
    job = env.job()
    run = run_stream(spark, job)
    committed = [b for b in run.batches if b.committed]
    assert len(committed) >= 4, "max_offsets_per_trigger 750 splits 3,000 records into several batches"

    # Aggregates and funnel: equal to the recomputation, to the row.
    assert env.aggregates() == expected_aggregates(events)
    assert env.funnel() == expected_funnel(events)
    # The distinct counts are the sizes of the sets behind them.
    assert env.rows("SELECT sum(users), sum(sessions) FROM {s}.click_aggregates")[0] == env.rows(
        "SELECT (SELECT count(*) FROM {s}.click_window_users), (SELECT count(*) FROM {s}.click_window_sessions)"
    )[0]

    # Dead letters: every malformed record, with its reason, raw bytes and Kafka coordinates.
    dead = env.rows("SELECT topic, kafka_partition, kafka_offset, kafka_timestamp, key, value, reason, detail "
                    "FROM {s}.click_dead_letters")
    assert Counter(row[6] for row in dead) == malformed
    assert sorted(bytes(r[5]) for r in dead) == sorted(v.encode() for _, v in records if classify(v) != VALID)
    assert all(r[0] == env.topic and r[3] is not None and bytes(r[4]).startswith(b"u") for r in dead)
    assert len({(r[1], r[2]) for r in dead}) == len(dead)
    versions = [r for r in dead if r[6] == "unknown_schema_version"]
    assert versions and all("schema_version 2" in r[7] for r in versions)
    # ... and, through the dead-letters query's file sink, as Parquet by the date of their Kafka timestamp.
    parquet_dead = spark.read.parquet(job.dead_letters_path)
    assert Counter(row["reason"] for row in parquet_dead.select("reason").collect()) == malformed
    assert parquet_dead.filter("kafka_date != to_date(timestamp_millis(kafka_timestamp_ms))").count() == 0

    # Late events: behind the watermark when they arrived, recorded, and (policy count) counted.
    late = env.rows("SELECT event_id, event_time, watermark, lateness_ms, counted FROM {s}.click_late_events")
    valid_ids = {e["event_id"] for e in events}
    assert late, "a 20 s watermark delay with events up to 120 s late must see late events"
    assert all(r[0] in valid_ids and r[1] < r[2] and r[3] > 0 and r[4] for r in late)
    assert env.rows("SELECT sum(late_events) FROM {s}.click_aggregates")[0][0] == len(late)

    # Progress: the last batch and offsets up to the end of the topic.
    assert env.committed_offsets(job.aggregates_query) == len(records)
    (last_batch,) = env.rows("SELECT last_batch_id FROM {s}.stream_progress")[0]
    assert last_batch == max(b.batch_id for b in committed)

    # The lake: every valid event exactly once, partitioned by its UTC date and hour.
    lake = spark.read.parquet(job.lake_path)
    ids = Counter(row["event_id"] for row in lake.select("event_id").collect())
    assert set(ids) == valid_ids and max(ids.values()) == 1
    assert lake.filter("event_date != to_date(event_time) OR event_hour != hour(event_time)").count() == 0

    # Replay 1: delete the last commits/<n> of the three checkpoints and restart (a new run, as
    # the supervisor would): Spark runs batch n again; no sink changes.
    before = env.snapshot()
    for query in ("aggregates", "lake", "dead_letters"):
        last_commit = env.checkpoint_keys(query, "commits")[-1]
        env.s3.delete_object(Bucket=env.bucket, Key=last_commit)
    again = env.job()
    replay = run_stream(spark, again)
    assert [(b.batch_id, b.committed) for b in replay.batches] == [(last_batch, False)]
    assert env.snapshot() == before
    ids = Counter(row["event_id"] for row in spark.read.parquet(job.lake_path).select("event_id").collect())
    assert set(ids) == valid_ids and max(ids.values()) == 1
    assert spark.read.parquet(job.dead_letters_path).count() == sum(malformed.values())

    # Replay 2: the foreachBatch writer called again with the committed batch id does nothing.
    writer = writer_for(env, again)
    writer.claim()
    result = writer.write(last_batch, lambda watermark_ms: pytest.fail("a committed batch was recomputed"))
    writer.close()
    assert not result.committed
    assert env.snapshot()["aggregates"] == before["aggregates"]


def test_unknown_schema_version_is_dead_lettered_with_that_reason(spark: SparkSession, env: StreamEnv) -> None:
    records, _ = click_records(seed=3, count=20, late_fraction=0.0, out_of_order_fraction=0.0)
    future = json.loads(records[5][1])
    future["schema_version"] = 2
    bad = json.dumps(future, separators=(",", ":"))
    env.produce([*records[:5], (records[5][0], bad), *records[6:]])
    job = env.job(env.stream_config(lake=None, dead_letters=None))
    run_stream(spark, job)
    dead = env.rows("SELECT reason, detail, value, kafka_offset FROM {s}.click_dead_letters")
    assert [(r[0], r[1], bytes(r[2]).decode()) for r in dead] == [
        ("unknown_schema_version", "schema_version 2; this job reads 1", bad)]
    assert sum(n for n, _, _ in env.aggregates().values()) == 19


def click_record(topic: str, offset: int, seconds: int, user: str) -> tuple:
    """A valid click by ``user`` at ``seconds`` after START_MS, as a Kafka record at ``offset``."""
    body = {"schema_version": 1, "event_id": f"e{offset}", "event_time": START_MS + seconds * 1000,
            "user_id": user, "session_id": f"s{user}", "session_seq": 1, "event_type": "click",
            "page": "/", "element": "x", "referrer": None, "device": "mobile", "country": "DE"}
    return (user.encode(), json.dumps(body).encode(), topic, 0, offset, START_MS + offset)


def classified_batch(spark: SparkSession, rows: list[tuple]) -> Any:
    """Records as a micro-batch would hand them to the aggregates query."""
    return spark.createDataFrame(rows, RECORDS).transform(classify_events)


def test_divert_policy_keeps_late_events_out_of_their_windows(spark: SparkSession, env: StreamEnv) -> None:
    """Late events under ``divert``: recorded, not counted; finished windows' sets are pruned."""
    job = env.job(env.stream_config(late_policy="divert", watermark_delay=timedelta(seconds=30), lake=None,
                                    dead_letters=None))
    writer = writer_for(env, job)
    writer.claim()
    run = StreamRun(job)
    write = batch_writer(job, writer, run)

    event = partial(click_record, env.topic)
    batch = partial(classified_batch, spark)

    write(batch([event(0, 10, "a"), event(1, 100, "b")]), 0)  # watermark after: 100 s - 30 s = 70 s
    write(batch([event(2, 20, "c"), event(3, 95, "d")]), 1)   # 20 s is behind 70 s: late
    write(batch([event(2, 20, "c"), event(3, 95, "d")]), 1)   # a replay of batch 1: nothing changes
    writer.close()
    w0, w1 = START_MS, START_MS + 60_000
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (2, 2, 2)}
    assert env.rows("SELECT event_id, counted, lateness_ms FROM {s}.click_late_events") == [("e2", False, 50_000)]
    # Window [0 s, 60 s) ended before the watermark (65 s after batch 1): no later event can count there.
    assert env.rows("SELECT count(*) FROM {s}.click_window_users WHERE window_start = to_timestamp(%s)",
                    w0 / 1000) == [(0,)]
    assert [(b.batch_id, b.committed) for b in run.batches] == [(0, True), (1, True), (1, False)]


def test_count_policy_counts_late_events_until_their_window_is_final(spark: SparkSession, env: StreamEnv) -> None:
    """Late events under ``count``: counted while their window ended less than ``allowed_lateness``
    before the watermark; after that, recorded and not counted, and the window's sets are gone."""
    job = env.job(env.stream_config(watermark_delay=timedelta(seconds=30), allowed_lateness=timedelta(0),
                                    lake=None, dead_letters=None))
    assert job.late_policy == "count" and job.allowed_lateness_s == 0
    writer = writer_for(env, job)
    writer.claim()
    run = StreamRun(job)
    write = batch_writer(job, writer, run)

    event = partial(click_record, env.topic)
    batch = partial(classified_batch, spark)

    write(batch([event(0, 10, "a"), event(1, 100, "b")]), 0)  # watermark after: 100 s - 30 s = 70 s
    # 20 s: window [0 s, 60 s) ended before 70 s, final; 65 s: late, but its window [60 s, 120 s) is open.
    write(batch([event(2, 20, "c"), event(3, 65, "d"), event(4, 95, "e")]), 1)
    write(batch([event(2, 20, "c"), event(3, 65, "d"), event(4, 95, "e")]), 1)  # a replay: nothing changes
    writer.close()
    w0, w1 = START_MS, START_MS + 60_000
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (3, 3, 3)}
    assert env.rows("SELECT late_events FROM {s}.click_aggregates ORDER BY window_start") == [(0,), (1,)]
    assert env.rows("SELECT event_id, counted, lateness_ms FROM {s}.click_late_events ORDER BY event_id") == [
        ("e2", False, 50_000), ("e3", True, 5_000)]
    assert env.rows("SELECT count(*) FROM {s}.click_window_users WHERE window_start = to_timestamp(%s)",
                    w0 / 1000) == [(0,)]
    assert [(b.batch_id, b.committed) for b in run.batches] == [(0, True), (1, True), (1, False)]

    # A later run with a longer allowed_lateness: w0's sets are gone, so w0 stays final (counting
    # user a there again would make its distinct users 2).
    job = env.job(env.stream_config(watermark_delay=timedelta(seconds=30), lake=None, dead_letters=None))
    assert job.allowed_lateness_s == 86400
    writer = writer_for(env, job)
    assert writer.claim() == 1
    run = StreamRun(job)
    batch_writer(job, writer, run)(batch([event(5, 30, "a"), event(6, 40, "f")]), 2)
    writer.close()
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (3, 3, 3)}
    assert env.rows("SELECT event_id, counted FROM {s}.click_late_events WHERE batch_id = 2 ORDER BY 1") == [
        ("e5", False), ("e6", False)]


def test_supervisor_fails_on_a_missing_topic_naming_it_and_the_brokers(kafka_bootstrap: str) -> None:
    missing = f"clicks-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicMissing) as raised:
        KafkaTopics(kafka_bootstrap, "spotlake_kafka").check_topics("clicks", (missing,))
    message = str(raised.value)
    assert missing in message and kafka_bootstrap in message and "config/streaming.yaml" in message

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the supervisor went on to {name} with a missing topic")

    stream = StreamConfig(name="clicks", pool="large", topics=(missing,), sink_secret_id="unused",
                          sink_schema="unused", checkpoint="s3a://unused/checkpoint")
    supervisor = StreamSupervisor(
        stream=stream, registry=Untouchable(), statuses=Untouchable(),
        kafka=KafkaTopics(kafka_bootstrap), sink=Untouchable(), client_for=Untouchable(),
        control_for=Untouchable(), publish=Untouchable(),
    )
    with pytest.raises(TopicMissing, match=missing):
        supervisor.supervise()


# ------------------------------------------------------------------- via Livy
def wait_until(condition: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def lake_event_ids(spark: SparkSession, path: str) -> Counter[str]:
    """The event ids the lake shows (through the file sink's metadata log: committed files only)."""
    try:
        rows = spark.read.parquet(path).select("event_id").collect()
    except Exception:  # noqa: BLE001 - no committed file yet
        return Counter()
    return Counter(row["event_id"] for row in rows)


def test_supervisor_restarts_the_stream_on_new_clusters_after_two_cluster_deaths(
    env: StreamEnv, start_livy: Any, supervisor: Any, moto_endpoint: str, sink_postgres: dict[str, str],
    spark: SparkSession,
) -> None:
    records, malformed = click_records(seed=33, count=3000, malformed_fraction=0.01, late_fraction=0.05,
                                       late_max_seconds=120)
    parts = [records[:1000], records[1000:2000], records[2000:]]
    registry = Registry(boto3.client("dynamodb", endpoint_url=moto_endpoint), prefix=f"itest-{env.tag}")
    registry.create_tables()
    pool = f"itest{env.tag}"
    # Both queries (aggregates and lake) on a one-second trigger, small batches so a kill lands mid-stream.
    stream = env.stream_config(pool=pool, dead_letters=None, max_offsets_per_trigger=300)
    statuses = StreamStatusStore(registry.client, registry.prefix)
    stream_supervisor = StreamSupervisor(
        stream=stream, registry=registry, statuses=statuses, kafka=KafkaTopics(env.bootstrap),
        sink=SinkDatabase(env.connect, env.schema), client_for=EndpointLivyHook, control_for=LivyBatchControl,
        publish=lambda: artifacts.publish("stream_clicks.py"), checkpoints=S3Checkpoint(env.s3),
    )

    def launch(label: str) -> tuple[Cluster, str, str]:
        name = f"stream-{label}-{env.tag}"
        url = start_livy(name)
        cluster = Cluster(pool=pool, cluster_id=f"{pool}-{label}", provider="local", state="")
        registry.put_launching(cluster)
        registry.mark_ready(cluster, url)
        return cluster, name, url

    job = None
    livy_names: list[str] = []
    try:
        cluster, name, url = launch("a")
        livy_names.append(name)
        env.produce(parts[0])
        started = stream_supervisor.supervise()
        assert started.state == StreamState.STARTED and started.job is not None
        job = started.job
        assert job.cluster_id == cluster.cluster_id
        assert stream_supervisor.supervise().state == StreamState.RUNNING
        produced = len(parts[0])
        for death, part in enumerate(parts[1:], start=1):
            # Mid-stream: the running job has committed some of what it has but not all of it.
            committed = env.committed_offsets(stream.aggregates_query)
            wait_until(lambda c=committed: env.committed_offsets(stream.aggregates_query) > c, 180,
                       f"a committed batch before death {death}", interval=0.2)
            env.produce(part)
            produced += len(part)
            assert env.committed_offsets(stream.aggregates_query) < produced
            # A real cluster death: the Livy server and the Spark driver under it are killed.
            supervisor.kill(f"livy-{name}")
            waiting = stream_supervisor.supervise()
            assert waiting.state == StreamState.WAITING, waiting.reason  # not yet declared dead
            # The fleet declares it dead and brings a replacement READY.
            registry.transition_cluster(registry.get_cluster(pool, cluster.cluster_id), ClusterState.DEAD,
                                        "Livy process killed")
            cluster, name, url = launch("bc"[death - 1])
            livy_names.append(name)
            restarted = stream_supervisor.supervise()
            assert restarted.state == StreamState.RESTARTED, restarted.reason
            job = restarted.job
            assert job is not None and job.cluster_id == cluster.cluster_id and job.attempt == death + 1
            assert restarted.restarts_in_window == death

        wait_until(lambda: env.committed_offsets(stream.aggregates_query) == len(records), 300,
                   "the restarted stream to catch up")
        report = stream_supervisor.supervise()
        assert report.state == StreamState.RUNNING and report.lag is not None and report.lag.total == 0
        status = statuses.get(stream.name)
        assert status is not None and status.lag == 0 and status.last_batch_id == report.progress.last_batch_id
        assert [r.cause for r in status.restarts] == ["cluster lost", "cluster lost"]

        events = valid_events(records)
        assert env.aggregates() == expected_aggregates(events)
        assert env.funnel() == expected_funnel(events)
        dead = env.rows("SELECT reason FROM {s}.click_dead_letters")
        assert Counter(r[0] for r in dead) == malformed
        # All three runs wrote: the sink's batch log shows three run ids and no batch twice.
        runs = env.rows("SELECT run_id, count(*) FROM {s}.stream_batches GROUP BY run_id")
        assert len(runs) == 3
        # The lake: every valid event exactly once.
        expected_ids = Counter(e["event_id"] for e in events)
        lake = wait_until(lambda: (ids := lake_event_ids(spark, stream.lake)) == expected_ids and ids, 240,
                          "the lake to hold every valid event once")
        assert max(lake.values()) == 1
        # ... and the supervisor reads from the lake query's checkpoint that it has nothing left to do.
        # (Spark writes the batch's commit file just after the files and the file sink's log.)
        caught_up = wait_until(lambda: (r := stream_supervisor.supervise()).lake_lag is not None
                               and r.lake_lag.total == 0 and r, 60, "the lake query's lag to be 0")
        assert caught_up.state == StreamState.RUNNING and caught_up.lake is not None
        assert statuses.get(stream.name).lake_lag == 0
        # No credential in what Livy was given or logged.
        with urllib.request.urlopen(f"{url}/batches/{job.batch_id}/log?from=0&size=2000") as resp:  # noqa: S310
            assert sink_postgres["password"] not in resp.read().decode()
        assert registry.get_job(stream.name).state == JobState.SUBMITTED
    finally:
        if job is not None and job.endpoint:
            with contextlib.suppress(Exception):  # the cluster may be gone already
                LivyBatchControl(job.endpoint).delete(job.batch_id)
        for name in livy_names:
            with contextlib.suppress(Exception):
                supervisor.stop(f"livy-{name}")
        for table in (registry.clusters_table, registry.jobs_table, registry.log_table, statuses.table):
            with contextlib.suppress(Exception):
                registry.client.delete_table(TableName=table)


def test_migrations_apply_once_and_refuse_an_edited_file(env: StreamEnv, tmp_path: Any) -> None:
    from spotlake import sink_schema

    connection = env.connect()
    try:
        assert sink_schema.apply(connection, env.schema) == []  # StreamEnv applied them already
        shipped = sink_schema.migrations()
        assert sink_schema.applied_versions(connection, env.schema) == [m.version for m in shipped]
        for migration in shipped:
            (tmp_path / migration.path.name).write_text(migration.sql)
        (tmp_path / shipped[0].path.name).write_text(shipped[0].sql + "\n-- edited\n")
        with pytest.raises(sink_schema.MigrationError, match="applied migrations are never edited"):
            sink_schema.apply(connection, env.schema, tmp_path)
        (tmp_path / shipped[0].path.name).write_text(shipped[0].sql)
        following = len(shipped) + 1
        (tmp_path / f"{following:04d}_dashboard_index.sql").write_text(
            "CREATE INDEX click_aggregates_type_window ON click_aggregates (event_type, window_start);")
        assert sink_schema.apply(connection, env.schema, tmp_path) == [f"{following:04d}_dashboard_index.sql"]
        assert sink_schema.applied_versions(connection, env.schema) == [*(m.version for m in shipped), following]
    finally:
        connection.close()
