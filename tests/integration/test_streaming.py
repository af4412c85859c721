"""The click stream against the real Kafka, PostgreSQL, the local S3 server and Spark (in-process and via Livy).

The generator produces a known, seeded stream into a topic of its own; the sink must
then hold exactly what a plain-Python recomputation of the same records gives, whatever
the micro-batches, replays, restarts and cluster deaths in between.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import boto3
import psycopg2
import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

from hooks.livy import EndpointLivyHook, LivyBatchControl
from spark_jobs.clickstream import run as clickstream_run
from spark_jobs.clickstream.run import LakeWriter, StreamRun, batch_writer, run_stream
from spark_jobs.clickstream.sink import CheckpointRefused, Claim, PostgresSinkWriter, resolve_target
from spark_jobs.common.errors import StreamFencedError
from spark_jobs.common.job_documents import MaintenanceJob
from spark_jobs.maintenance.run import run_maintenance
from spotlake import artifacts, stream_reset
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from spotlake.stack import StackLayout
from spotlake.stream_status import StreamState, StreamStatusStore
from spotlake.stream_supervisor import (
    KafkaTopics,
    SinkDatabase,
    StreamSupervisor,
    TopicMissing,
)
from spotlake.streaming import StreamConfig
from spotlake_dev.clickgen.answers import expected_aggregates, valid_events
from spotlake_dev.clickgen.events import VALID, classify
from spotlake_dev.localstack import services
from tests.support.stream_harness import (
    START_MS,
    StreamEnv,
    TcpProxy,
    click_records,
    expected_funnel,
    spark_session,
)

pytestmark = pytest.mark.integration

KAFKA_ROWS = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
    ]
)


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
        psycopg2.connect(
            host=settings["host"],
            port=int(settings["port"]),
            user=settings["user"],
            password=settings["password"],
            dbname=settings["database"],
            connect_timeout=5,
        ).close()
    except psycopg2.OperationalError:
        return request.getfixturevalue("postgres")
    return settings


@pytest.fixture
def env(kafka_bootstrap: str, sink_postgres: dict[str, str], moto_endpoint: str, catalog_secret: str) -> Iterator[StreamEnv]:
    environment = StreamEnv(kafka_bootstrap, sink_postgres, moto_endpoint, catalog_secret)
    yield environment
    environment.close()


def writer_for(env: StreamEnv, job: Any, **options: Any) -> PostgresSinkWriter:
    return PostgresSinkWriter.for_target(
        resolve_target(job.sink.secret_id, job.stream),
        job.stream,
        schema=job.sink.schema,
        query_name=job.query_name,
        run_id=job.run_id,
        window_s=job.window_s,
        watermark_delay_s=job.watermark_delay_s,
        late_policy=job.late_policy,
        allowed_lateness_s=job.allowed_lateness_s,
        attempt=job.attempt,
        **options,
    )


# ------------------------------------------------------------ in-process runs
def test_stream_sinks_equal_an_independent_recomputation_and_replays_change_nothing(
    spark: SparkSession, env: StreamEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, malformed = click_records(
        seed=21,
        count=3000,
        malformed_fraction=0.01,
        late_fraction=0.05,
        late_max_seconds=120,
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
    assert (
        env.rows("SELECT sum(users), sum(sessions) FROM {s}.click_aggregates")[0]
        == env.rows("SELECT (SELECT count(*) FROM {s}.click_window_users), (SELECT count(*) FROM {s}.click_window_sessions)")[0]
    )

    # Dead letters: every malformed record, with its reason, raw bytes and Kafka coordinates.
    dead = env.rows(
        "SELECT topic, kafka_partition, kafka_offset, kafka_timestamp, key, value, reason, detail FROM {s}.click_dead_letters"
    )
    assert Counter(row[6] for row in dead) == malformed
    assert sorted(bytes(r[5]) for r in dead) == sorted(v.encode() for _, v in records if classify(v) != VALID)
    assert all(r[0] == env.topic and r[3] is not None and bytes(r[4]).startswith(b"u") for r in dead)
    assert len({(r[1], r[2]) for r in dead}) == len(dead)
    versions = [r for r in dead if r[6] == "unknown_schema_version"]
    assert versions and all("schema_version 2" in r[7] for r in versions)
    # ... and in the lake's dead-letters table, read back with pyiceberg.
    lake_dead = env.lake_rows("dead_letters")
    assert Counter(row["reason"] for row in lake_dead) == malformed
    assert sorted(row["value"] for row in lake_dead) == sorted(v.encode() for _, v in records if classify(v) != VALID)

    # Late events: behind the watermark when they arrived, recorded, and (policy count) counted.
    late = env.rows("SELECT event_id, event_time, watermark, lateness_ms, counted FROM {s}.click_late_events")
    valid_ids = {e["event_id"] for e in events}
    assert late, "a 20 s watermark delay with events up to 120 s late must see late events"
    assert all(r[0] in valid_ids and r[1] < r[2] and r[3] > 0 and r[4] for r in late)
    assert env.rows("SELECT sum(late_events) FROM {s}.click_aggregates")[0][0] == len(late)

    # Progress: the last batch and offsets up to the end of the topic.
    assert env.committed_offsets() == len(records)
    (last_batch, checkpoint_id) = env.rows("SELECT last_batch_id, checkpoint_id FROM {s}.stream_progress")[0]
    assert last_batch == max(b.batch_id for b in committed) and checkpoint_id == run.checkpoint_id

    # The lake: every valid event exactly once (pyiceberg's reading), each batch one commit that
    # names the stream, the checkpoint and the batch.
    lake_ids = Counter(row["event_id"] for row in env.lake_rows("events"))
    assert set(lake_ids) == valid_ids and max(lake_ids.values()) == 1
    commits = env.lake_commits("events")
    assert [c["spotlake.batch-id"] for c in commits] == [str(b.batch_id) for b in committed]
    assert {(c["spotlake.stream"], c["spotlake.checkpoint-id"], c["operation"]) for c in commits} == {
        (job.stream, run.checkpoint_id, "append")
    }
    phases = env.rows("SELECT phases FROM {s}.stream_batches ORDER BY batch_id")
    assert all({"aggregate", "postgres", "lake_events"} <= set(p) for (p,) in phases)

    # Replay 1: delete the last commits/<n> of the checkpoint and restart (a new run, as the
    # supervisor would): Spark runs batch n again; no sink or lake table changes.
    before = env.snapshot()
    lake_before = (env.lake_commits("events"), env.lake_commits("dead_letters"))
    env.s3.delete_object(Bucket=env.bucket, Key=env.checkpoint_keys("commits")[-1])
    again = env.job(attempt=2)
    replay = run_stream(spark, again)
    assert [(b.batch_id, b.committed) for b in replay.batches] == [(last_batch, False)]
    assert replay.checkpoint_id == run.checkpoint_id
    assert env.snapshot() == before
    assert (env.lake_commits("events"), env.lake_commits("dead_letters")) == lake_before

    # Replay 2: the foreachBatch writer called again with the committed batch id does nothing.
    writer = writer_for(env, again)
    writer.claim(run.checkpoint_id, checkpoint_started=True)
    result = writer.write(last_batch, lambda watermark_ms, final_ms: pytest.fail("a committed batch was recomputed"))
    writer.close()
    assert not result.committed
    assert env.snapshot()["aggregates"] == before["aggregates"]

    # Replay 3: the lake commit of a batch found by its snapshot, when PostgreSQL lost the batch
    # (the commit of the transaction failed after the lake's): the batch is written to
    # PostgreSQL again, not to the lake.
    lake_writer = LakeWriter(spark, again, run.checkpoint_id)
    assert lake_writer.committed(again.lake.events_table, last_batch)
    assert not lake_writer.committed(again.lake.events_table, last_batch + 1)

    # The lake_maintenance DAG's stream task compacts the events table without changing a row,
    # and a batch's commit is still found behind the compaction's snapshot.
    lake_doc = env.stream_config().lake_document()
    events_name, dead_name = lake_doc.pop("events"), lake_doc.pop("dead_letters")
    lake_doc.pop("snapshot_retention_s")
    maintenance = MaintenanceJob.from_dict(
        {
            "job_key": f"stream_{job.stream}#maintenance-test",
            "attempt": 1,
            "run_id": "m1",
            "pipeline": f"stream_{job.stream}",
            "stream": job.stream,
            "registry": {"prefix": "unused"},
            "lake": {**lake_doc, "current": events_name, "changes": dead_name},
            "maintenance": {},
        }
    )
    files_before = spark.sql(f"SELECT count(*) FROM {again.lake.events_table}.files").first()[0]
    done = run_maintenance(spark, maintenance)
    assert set(done["tables"]) == {again.lake.events_table, again.lake.dead_letters_table}
    assert spark.sql(f"SELECT count(*) FROM {again.lake.events_table}.files").first()[0] < files_before
    assert Counter(row["event_id"] for row in env.lake_rows("events")) == lake_ids
    assert env.lake_commits("events")[-1]["operation"] == "replace"
    assert lake_writer.committed(again.lake.events_table, last_batch)

    # The stream's own snapshot expiry (every EXPIRE_EVERY batches; here with no age limit and
    # the last one kept): the metadata shrinks, no row changes, and the stream's newest commit
    # stays however many compaction snapshots came after it, so the last batch is still found.
    monkeypatch.setattr(clickstream_run, "RETAIN_LAST", 1)
    assert again.lake.snapshot_retention_s == 3600
    LakeWriter(spark, replace(again, lake=replace(again.lake, snapshot_retention_s=0)), run.checkpoint_id).expire_snapshots()
    for table in ("events", "dead_letters"):
        operations = [c["operation"] for c in env.lake_commits(table)]
        assert operations[0] == "append" and set(operations[1:]) == {"replace"}, operations
    assert env.lake_commits("events")[0]["spotlake.batch-id"] == str(last_batch)
    assert Counter(row["event_id"] for row in env.lake_rows("events")) == lake_ids
    assert lake_writer.committed(again.lake.events_table, last_batch)


def test_unknown_schema_version_is_dead_lettered_with_that_reason(spark: SparkSession, env: StreamEnv) -> None:
    records, _ = click_records(seed=3, count=20, late_fraction=0.0, out_of_order_fraction=0.0)
    future = json.loads(records[5][1])
    future["schema_version"] = 2
    bad = json.dumps(future, separators=(",", ":"))
    env.produce([*records[:5], (records[5][0], bad), *records[6:]])
    job = env.job(env.stream_config(lake=None))
    run_stream(spark, job)
    dead = env.rows("SELECT reason, detail, value, kafka_offset FROM {s}.click_dead_letters")
    assert [(r[0], r[1], bytes(r[2]).decode()) for r in dead] == [
        ("unknown_schema_version", "schema_version 2; this job reads 1", bad)
    ]
    assert sum(n for n, _, _ in env.aggregates().values()) == 19


def click_record(topic: str, offset: int, seconds: int, user: str) -> tuple:
    """A valid click by ``user`` at ``seconds`` after START_MS, as a Kafka record at ``offset``
    (produced at START_MS plus ``offset`` ms)."""
    body = {
        "schema_version": 1,
        "event_id": f"e{offset}",
        "event_time": START_MS + seconds * 1000,
        "user_id": user,
        "session_id": f"s{user}",
        "session_seq": 1,
        "event_type": "click",
        "page": "/",
        "element": "x",
        "referrer": None,
        "device": "mobile",
        "country": "DE",
    }
    produced = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(milliseconds=offset)
    return (user.encode(), json.dumps(body).encode(), topic, 0, offset, produced)


def kafka_batch(spark: SparkSession, rows: list[tuple]) -> Any:
    """Records as Spark's Kafka source hands a micro-batch to foreachBatch."""
    return spark.createDataFrame(rows, KAFKA_ROWS)


def test_divert_policy_keeps_late_events_out_of_their_windows(spark: SparkSession, env: StreamEnv) -> None:
    """Late events under ``divert``: recorded, not counted; finished windows' sets are pruned."""
    job = env.job(env.stream_config(late_policy="divert", watermark_delay=timedelta(seconds=30), lake=None))
    writer = writer_for(env, job)
    writer.claim()
    run = StreamRun(job)
    write = batch_writer(job, writer, run)

    event = partial(click_record, env.topic)
    batch = partial(kafka_batch, spark)

    write(batch([event(0, 10, "a"), event(1, 100, "b")]), 0)  # watermark after: 100 s - 30 s = 70 s
    write(batch([event(2, 20, "c"), event(3, 95, "d")]), 1)  # 20 s is behind 70 s: late
    write(batch([event(2, 20, "c"), event(3, 95, "d")]), 1)  # a replay of batch 1: nothing changes
    writer.close()
    w0, w1 = START_MS, START_MS + 60_000
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (2, 2, 2)}
    assert env.rows("SELECT event_id, counted, lateness_ms FROM {s}.click_late_events") == [("e2", False, 50_000)]
    # Window [0 s, 60 s) ended before the watermark (65 s after batch 1): no later event can count there.
    assert env.rows("SELECT count(*) FROM {s}.click_window_users WHERE window_start = to_timestamp(%s)", w0 / 1000) == [(0,)]
    assert [(b.batch_id, b.committed) for b in run.batches] == [(0, True), (1, True), (1, False)]


def test_count_policy_counts_late_events_until_their_window_is_final(spark: SparkSession, env: StreamEnv) -> None:
    """Late events under ``count``: counted while their window ended less than ``allowed_lateness``
    before the watermark; after that, recorded and not counted, and the window's sets are gone."""
    job = env.job(env.stream_config(watermark_delay=timedelta(seconds=30), allowed_lateness=timedelta(0), lake=None))
    assert job.late_policy == "count" and job.allowed_lateness_s == 0
    writer = writer_for(env, job)
    writer.claim()
    run = StreamRun(job)
    write = batch_writer(job, writer, run)

    event = partial(click_record, env.topic)
    batch = partial(kafka_batch, spark)

    write(batch([event(0, 10, "a"), event(1, 100, "b")]), 0)  # watermark after: 100 s - 30 s = 70 s
    # 20 s: window [0 s, 60 s) ended before 70 s, final; 65 s: late, but its window [60 s, 120 s) is open.
    write(batch([event(2, 20, "c"), event(3, 65, "d"), event(4, 95, "e")]), 1)
    write(batch([event(2, 20, "c"), event(3, 65, "d"), event(4, 95, "e")]), 1)  # a replay: nothing changes
    writer.close()
    w0, w1 = START_MS, START_MS + 60_000
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (3, 3, 3)}
    assert env.rows("SELECT late_events FROM {s}.click_aggregates ORDER BY window_start") == [(0,), (1,)]
    assert env.rows("SELECT event_id, counted, lateness_ms FROM {s}.click_late_events ORDER BY event_id") == [
        ("e2", False, 50_000),
        ("e3", True, 5_000),
    ]
    assert env.rows("SELECT count(*) FROM {s}.click_window_users WHERE window_start = to_timestamp(%s)", w0 / 1000) == [(0,)]
    assert [(b.batch_id, b.committed) for b in run.batches] == [(0, True), (1, True), (1, False)]

    # A later run with a longer allowed_lateness: w0's sets are gone, so w0 stays final (counting
    # user a there again would make its distinct users 2).
    job = env.job(env.stream_config(watermark_delay=timedelta(seconds=30), lake=None), attempt=2)
    assert job.allowed_lateness_s == 86400
    writer = writer_for(env, job)
    assert writer.claim().last_batch_id == 1
    run = StreamRun(job)
    batch_writer(job, writer, run)(batch([event(5, 30, "a"), event(6, 40, "f")]), 2)
    writer.close()
    assert env.aggregates() == {(w0, "/", "click"): (1, 1, 1), (w1, "/", "click"): (3, 3, 3)}
    assert env.rows("SELECT event_id, counted FROM {s}.click_late_events WHERE batch_id = 2 ORDER BY 1") == [
        ("e5", False),
        ("e6", False),
    ]


def test_a_deleted_checkpoint_is_refused_until_a_reset_then_nothing_is_lost_or_counted_twice(
    spark: SparkSession,
    env: StreamEnv,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records, _ = click_records(seed=41, count=1500, malformed_fraction=0.01)
    env.produce(records[:900])
    first = run_stream(spark, env.job())
    assert env.committed_offsets() == 900
    before = env.snapshot()

    # The operator deletes the checkpoint ("start over"); more events arrive.
    assert env.delete_checkpoint() > 0
    env.produce(records[900:])
    with pytest.raises(CheckpointRefused) as refused:
        run_stream(spark, env.job(attempt=2))
    message = str(refused.value)
    assert f"python -m spotlake.stream_reset {env.name} --from committed" in message
    assert f"batches 0..{max(b.batch_id for b in first.batches)}" in message
    assert env.snapshot() == before, "a refused run writes nothing"

    # The reset command, as an operator runs it, against this stream's configuration.
    streams = tmp_path / "streaming.yaml"
    streams.write_text(
        json.dumps(
            {
                "streams": {
                    env.name: {
                        "topics": [env.topic],
                        "sink": {"secret_id": env.secret_id, "schema": env.schema},
                        "checkpoint": f"s3://{env.bucket}/checkpoints/{env.name}",
                        "pool": "large",
                    }
                }
            }
        )
    )
    monkeypatch.setenv("SPOTLAKE_STREAMS", str(streams))
    assert stream_reset.main([env.name, "--from", "committed", "--bootstrap-servers", env.bootstrap]) == 0
    ((starting,),) = env.rows("SELECT starting_offsets FROM {s}.stream_checkpoint_resets WHERE consumed_at IS NULL")
    committed = env.rows("SELECT offsets FROM {s}.stream_progress")[0][0]
    assert json.loads(starting) == {env.topic: {str(p): committed[env.topic].get(str(p), -2) for p in range(env.partitions)}}

    second = run_stream(spark, env.job(attempt=3))
    assert second.checkpoint_id != first.checkpoint_id
    assert [b.batch_id for b in second.batches][0] == 0, "a new checkpoint counts its batches from 0"
    # Every event counted once: the aggregates equal the recomputation over all 1,500 records.
    events = valid_events(records)
    assert env.aggregates() == expected_aggregates(events)
    assert env.funnel() == expected_funnel(events)
    lake = Counter(row["event_id"] for row in env.lake_rows("events"))
    assert lake == Counter(e["event_id"] for e in events)
    (reset,) = env.rows(
        "SELECT starting_from, previous_checkpoint_id, checkpoint_id, consumed_at IS NOT NULL FROM {s}.stream_checkpoint_resets"
    )
    assert reset == ("committed", first.checkpoint_id, second.checkpoint_id, True)


def test_the_sinks_claim_follows_one_checkpoint_and_the_newest_attempt(env: StreamEnv) -> None:
    """The claim's rules on the real database: each checkpoint case of docs/streaming.md."""
    from spark_jobs.clickstream.sink import BatchRows

    def writer(attempt: int) -> PostgresSinkWriter:
        return writer_for(env, env.job(attempt=attempt))

    first = writer(1)
    assert first.claim("c1", False, "earliest") == Claim(-1, "earliest")
    assert first.write(0, lambda wm, final: BatchRows(input_rows=1)).committed
    again = writer(2)
    assert again.claim("c1", True, "earliest") == Claim(0, "earliest")  # the same checkpoint goes on
    with pytest.raises(
        CheckpointRefused, match="has batches of its own, but the sink's progress \\(batch 0\\) belongs to checkpoint c1"
    ):
        writer(3).claim("c2", True, "earliest")
    with pytest.raises(CheckpointRefused, match="checkpoint c2 is new, but the sink has committed batches 0..0 of checkpoint c1"):
        writer(3).claim("c2", False, "earliest")
    connection = env.connect()
    try:
        recorded = stream_reset.request_reset(connection, env.schema, env.name, "latest", {env.topic: 3}, "test")
    finally:
        connection.close()
    third = writer(3)
    assert third.claim("c2", False, "earliest") == Claim(-1, "latest", recorded["reset_id"])
    # The older attempts: fenced at their next batch, and refused if they claim again.
    with pytest.raises(StreamFencedError, match="took over the sink"):
        again.write(1, lambda wm, final: BatchRows(input_rows=1))
    with pytest.raises(StreamFencedError, match="attempt 3 .* owns the sink"):
        writer(2).claim("c2", False, "earliest")
    assert third.write(0, lambda wm, final: BatchRows(input_rows=1)).committed
    assert env.rows("SELECT checkpoint_id, batch_id FROM {s}.stream_batches ORDER BY committed_at") == [("c1", 0), ("c2", 0)]
    for w in (first, again, third):
        w.close()


def test_an_old_driver_is_fenced_out_of_every_sink_once_a_newer_attempt_claims(spark: SparkSession, env: StreamEnv) -> None:
    """Attempt 1 keeps running (its cluster only looked dead) while attempt 2 starts on the same
    checkpoint: once attempt 2 claims, attempt 1 writes nothing, to PostgreSQL or the lake."""
    records, _ = click_records(seed=43, count=1200)
    env.produce(records[:600])
    old_job = env.job(available_now=False, attempt=1)
    old = StreamRun(old_job)
    errors: list[BaseException] = []

    def run_old() -> None:
        try:
            old.batches = run_stream(spark, old_job).batches
        except BaseException as exc:  # noqa: BLE001 - the fenced driver's end, asserted below
            errors.append(exc)

    thread = threading.Thread(target=run_old, daemon=True)
    thread.start()
    wait_until(lambda: env.committed_offsets() == 600, 120, "attempt 1 to commit the first records")
    before, lake_before = env.snapshot(), env.lake_commits("events")

    # Attempt 2's claim, as its driver makes it on start (same checkpoint, newer attempt).
    checkpoint_id = env.rows("SELECT checkpoint_id FROM {s}.stream_progress")[0][0]
    new_job = env.job(attempt=2)
    new_writer = writer_for(env, new_job)
    new_writer.claim(checkpoint_id, checkpoint_started=True)
    new_writer.close()
    env.produce(records[600:])  # attempt 1's next batch finds itself fenced
    thread.join(timeout=120)
    assert not thread.is_alive(), "the fenced driver's query must stop"
    assert errors and "took over the sink" in str(errors[0]), errors
    assert env.snapshot()["aggregates"] == before["aggregates"]
    assert env.snapshot()["batches"] == before["batches"]
    assert env.lake_commits("events") == lake_before
    # Attempt 1 can never claim back; attempt 2 goes on from where attempt 1 stopped, exactly once.
    with pytest.raises(StreamFencedError, match="attempt 2 .* owns the sink; this run \\(attempt 1"):
        writer_for(env, old_job).claim(checkpoint_id, checkpoint_started=True)
    run_stream(spark, new_job)
    events = valid_events(records)
    assert env.aggregates() == expected_aggregates(events)
    assert Counter(row["event_id"] for row in env.lake_rows("events")) == Counter(e["event_id"] for e in events)


def test_an_event_a_day_in_the_future_is_dead_lettered_and_its_windows_real_events_all_count(
    spark: SparkSession, env: StreamEnv
) -> None:
    """The generator's events are from 2024 and Kafka stamps them now: with a far-future event
    among them, the watermark would have moved a day ahead and every later event been late."""
    records, _ = click_records(seed=45, count=400, late_fraction=0.0, out_of_order_fraction=0.0)
    future = json.loads(records[100][1])
    future["event_time"] = int(time.time() * 1000) + 86_400_000
    far = json.dumps(future, separators=(",", ":"))
    env.produce([*records[:100], (records[100][0], far), *records[101:]])
    job = env.job(env.stream_config(max_offsets_per_trigger=100))
    run = run_stream(spark, job)
    assert len([b for b in run.batches if b.committed]) >= 4
    dead = env.rows("SELECT reason, detail, value FROM {s}.click_dead_letters")
    assert [(r[0], bytes(r[2]).decode()) for r in dead] == [("future_event_time", far)]
    assert "ahead of its Kafka timestamp; max_future_skew is 300 s" in dead[0][1]
    events = [e for e in valid_events(records) if e["event_id"] != future["event_id"]]
    assert env.aggregates() == expected_aggregates(events)
    assert env.rows("SELECT count(*) FROM {s}.click_late_events") == [(0,)]
    (watermark,) = env.rows("SELECT watermark FROM {s}.stream_progress")[0]
    assert watermark < datetime(2025, 1, 1, tzinfo=UTC), "the future event did not move the watermark"
    assert [r["reason"] for r in env.lake_rows("dead_letters")] == ["future_event_time"]


def test_the_sink_unreachable_for_30_s_is_ridden_out_and_every_event_counted_once(spark: SparkSession, env: StreamEnv) -> None:
    proxy = TcpProxy(int(env.postgres["port"]))
    env.sm.put_secret_value(SecretId=env.secret_id, SecretString=env.sink_secret(proxy.port))
    records, _ = click_records(seed=47, count=1500)
    env.produce(records[:500])
    job = env.job(available_now=False)
    errors: list[BaseException] = []
    done = StreamRun(job)

    def run() -> None:
        try:
            done.batches = run_stream(spark, job).batches
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: env.committed_offsets() == 500, 120, "the first records committed")
        proxy.cut()  # the sink is gone: open connections dropped, new ones refused
        env.produce(records[500:1000])
        time.sleep(30)
        assert env.committed_offsets() == 500 and not errors and thread.is_alive()
        proxy.restore()
        env.produce(records[1000:])
        wait_until(lambda: env.committed_offsets() == 1500, 180, "the stream to catch up after the outage")
        assert not errors and thread.is_alive(), errors
    finally:
        for query in spark.streams.active:
            query.stop()
        thread.join(timeout=60)
        proxy.close()
    events = valid_events(records)
    assert env.aggregates() == expected_aggregates(events)
    assert Counter(row["event_id"] for row in env.lake_rows("events")) == Counter(e["event_id"] for e in events)


def test_supervisor_fails_on_a_missing_topic_naming_it_and_the_brokers(kafka_bootstrap: str) -> None:
    missing = f"clicks-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicMissing) as raised:
        KafkaTopics(kafka_bootstrap, "spotlake_kafka").check_topics("clicks", (missing,))
    message = str(raised.value)
    assert missing in message and kafka_bootstrap in message and "config/streaming.yaml" in message

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the supervisor went on to {name} with a missing topic")

    stream = StreamConfig(
        name="clicks",
        pool="large",
        topics=(missing,),
        sink_secret_id="unused",
        sink_schema="unused",
        checkpoint="s3a://unused/checkpoint",
    )
    supervisor = StreamSupervisor(
        stream=stream,
        registry=Untouchable(),
        statuses=Untouchable(),
        kafka=KafkaTopics(kafka_bootstrap),
        sink=Untouchable(),
        client_for=Untouchable(),
        control_for=Untouchable(),
        publish=Untouchable(),
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


def test_supervisor_restarts_the_stream_on_new_clusters_after_two_cluster_deaths(
    env: StreamEnv,
    start_livy: Any,
    supervisor: Any,
    moto_endpoint: str,
    sink_postgres: dict[str, str],
    spark: SparkSession,
) -> None:
    records, malformed = click_records(seed=33, count=3000, malformed_fraction=0.01, late_fraction=0.05, late_max_seconds=120)
    parts = [records[:1000], records[1000:2000], records[2000:]]
    registry = Registry(boto3.client("dynamodb", endpoint_url=moto_endpoint), prefix=f"itest-{env.tag}")
    registry.create_tables()
    pool = f"itest{env.tag}"
    # A one-second trigger and small batches, so a kill lands mid-stream.
    stream = env.stream_config(pool=pool, max_offsets_per_trigger=300)
    statuses = StreamStatusStore(registry.client, registry.prefix)
    stream_supervisor = StreamSupervisor(
        stream=stream,
        registry=registry,
        statuses=statuses,
        kafka=KafkaTopics(env.bootstrap),
        sink=SinkDatabase(env.connect, env.schema),
        client_for=EndpointLivyHook,
        control_for=LivyBatchControl,
        publish=lambda: artifacts.publish("clickstream"),
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
            committed = env.committed_offsets(stream.query_name)
            wait_until(
                lambda c=committed: env.committed_offsets(stream.query_name) > c,
                180,
                f"a committed batch before death {death}",
                interval=0.2,
            )
            env.produce(part)
            produced += len(part)
            assert env.committed_offsets(stream.query_name) < produced
            # A real cluster death: the Livy server and the Spark driver under it are killed.
            supervisor.kill(f"livy-{name}")
            waiting = stream_supervisor.supervise()
            assert waiting.state == StreamState.WAITING, waiting.reason  # not yet declared dead
            # The fleet declares it dead and brings a replacement READY.
            registry.transition_cluster(registry.get_cluster(pool, cluster.cluster_id), ClusterState.DEAD, "Livy process killed")
            cluster, name, url = launch("bc"[death - 1])
            livy_names.append(name)
            restarted = stream_supervisor.supervise()
            assert restarted.state == StreamState.RESTARTED, restarted.reason
            job = restarted.job
            assert job is not None and job.cluster_id == cluster.cluster_id and job.attempt == death + 1
            assert restarted.restarts_in_window == death

        wait_until(lambda: env.committed_offsets(stream.query_name) == len(records), 300, "the restarted stream to catch up")
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
        # The lake: every valid event exactly once, written by the same micro-batches (pyiceberg's reading).
        lake = Counter(row["event_id"] for row in env.lake_rows("events"))
        assert lake == Counter(e["event_id"] for e in events) and max(lake.values()) == 1
        assert Counter(row["reason"] for row in env.lake_rows("dead_letters")) == malformed
        # Each lake commit names its batch; three drivers, one checkpoint, no batch committed twice.
        batches = [c["spotlake.batch-id"] for c in env.lake_commits("events")]
        assert len(batches) == len(set(batches))
        assert {c["spotlake.checkpoint-id"] for c in env.lake_commits("events")} == {
            env.rows("SELECT checkpoint_id FROM {s}.stream_progress")[0][0]
        }
        # No credential in what Livy was given or logged.
        log = EndpointLivyHook(url).get_batch_logs(job.batch_id, 0, 2000)
        assert log["log"] and sink_postgres["password"] not in "\n".join(log["log"])
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
            "CREATE INDEX click_aggregates_type_window ON click_aggregates (event_type, window_start);"
        )
        assert sink_schema.apply(connection, env.schema, tmp_path) == [f"{following:04d}_dashboard_index.sql"]
        assert sink_schema.applied_versions(connection, env.schema) == [*(m.version for m in shipped), following]
    finally:
        connection.close()
