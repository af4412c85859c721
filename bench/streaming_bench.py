"""Click-stream benchmark on the local stack: the Spark job against a plain Python consumer.

    PYTHONPATH=plugins:. .venv/bin/python bench/streaming_bench.py --rates 1000,5000 --seconds 30 --backlog 200000

Two implementations with the same outputs, through the same PostgreSQL sink code
(``spark_jobs.clickstream.sink``, one transaction per batch):

- ``spark``: the whole job, in-process (local[2], 1g driver): the stream's one query (Kafka
  source, validation once, foreachBatch -> PostgreSQL aggregates, the valid events and the
  dead letters appended to Iceberg tables in the lake's JDBC catalog, checkpoint on S3);
- ``python``: one confluent-kafka consumer that, every trigger interval, takes what Kafka
  has (at most ``--max-batch`` records), validates and aggregates it in Python, appends the
  valid events and the dead letters to Iceberg tables of the same catalog with pyiceberg and
  commits the aggregates with the same writer;

three runs:

- latency, at the 1 s trigger, for each of ``--rates``: events produced at that rate for
  ``--seconds`` (event time = now); for every event, the time from its Kafka timestamp
  (CreateTime, set when produced) to the commit of the batch that counted it
  (``stream_batches.committed_at``; a batch's end offsets say which events it holds):
  p50, p99, max; and the rate it kept up with;
- capacity, for each of ``--triggers`` (1 and 10 s): a backlog of ``--backlog`` events
  produced before the consumer starts, drained in batches of at most ``--max-batch``
  records per second of trigger interval: events per second from the start of the first
  batch to the commit of the last;
- scale (``--scale``; Spark only): the capacity run with one core and two partitions per
  core (``local[1]``, 2 partitions), then two cores (``local[2]``, 4 partitions).

Where each Spark micro-batch's time goes comes from the job itself (``stream_batches.phases``:
aggregate, PostgreSQL, each lake table) and from Spark's progress (Kafka offsets, planning,
the checkpoint's offsets and commit files).

Results go to docs/benchmarks/streaming.md unless --print-only. Needs Kafka, PostgreSQL and
moto running (``make up``); creates and removes its own topics, schemas, bucket and secret.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from spark_jobs.clickstream.sink import BatchRows, PostgresSinkWriter
from spotlake import lake as lake_reader
from spotlake import stack
from spotlake.stack import StackLayout
from spotlake.streaming import StreamLakeTables
from spotlake_dev.clickgen.behaviour import ClickStream
from spotlake_dev.clickgen.behaviour import StreamConfig as ClickConfig
from spotlake_dev.clickgen.delivery import KafkaSink
from spotlake_dev.clickgen.events import VALID, classify
from spotlake_dev.clickgen.rate import ConstantRate
from spotlake_dev.clickgen.run import run as produce_stream
from spotlake_dev.localstack import services

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "docs" / "benchmarks" / "streaming.md"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WATERMARK_DELAY_S = 600
WINDOW_S = 60
COMMAND = "PYTHONPATH=plugins:. .venv/bin/python bench/streaming_bench.py"
LOAD_AT_START = 0.0


@dataclass
class Result:
    implementation: str
    mode: str
    trigger_s: float
    events: int
    seconds: float
    batches: int
    batch_s_mean: float
    latencies_ms: list[float]
    tail_s: float = 0.0
    label: str = ""
    # Median seconds of each phase over the batches that read records: the job's own
    # (stream_batches.phases) and, for Spark, its progress (durationMs).
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------- Python
def _stage(event: dict[str, Any]) -> str | None:
    if event["session_seq"] == 0:
        return "session_start"
    if event["event_type"] == "page_view" and event["page"].startswith("/product/"):
        return "product_view"
    return event["event_type"] if event["event_type"] in ("add_to_cart", "checkout", "purchase") else None


def python_rows(messages: list[Any], watermark_ms: int | None, final_ms: int | None) -> BatchRows:
    """The baseline's batch: what the Spark job computes, in plain Python (count policy)."""
    rows = BatchRows(input_rows=len(messages))
    lake_events: list[dict[str, Any]] = []
    rows.lake_events = lake_events  # type: ignore[attr-defined] - the baseline's lake rows
    counts: Counter[tuple[int, str, str]] = Counter()
    late_counts: Counter[tuple[int, str, str]] = Counter()
    funnel: Counter[tuple[int, str]] = Counter()
    members: set[tuple] = set()
    for m in messages:
        topic, partition, offset, ts = m.topic(), m.partition(), m.offset(), m.timestamp()[1]
        part = rows.offsets.setdefault(topic, {})
        part[str(partition)] = max(part.get(str(partition), 0), offset + 1)
        value = m.value()
        kind = classify(value) if value is not None else "bad_json"
        if kind == VALID:
            e = json.loads(value)
            if e["event_time"] - ts > MAX_FUTURE_SKEW_MS:
                kind = "future_event_time"
        if kind != VALID:
            rows.dead_letters.append((topic, partition, offset, ts, m.key(), value, kind, kind))
            continue
        rows.valid_events += 1
        lake_events.append(
            {
                **{k: e.get(k) for k in EVENT_FIELDS},
                "event_time_ms": e["event_time"],
                "event_time": datetime.fromtimestamp(e["event_time"] / 1000, UTC),
                "kafka_topic": topic,
                "kafka_partition": partition,
                "kafka_offset": offset,
                "kafka_timestamp_ms": ts,
            }
        )
        et = e["event_time"]
        rows.max_event_time_ms = max(rows.max_event_time_ms or et, et)
        window = et - et % (WINDOW_S * 1000)
        key = (window, e["page"], e["event_type"])
        if watermark_ms is not None and et < watermark_ms:
            rows.late_events.append(
                (
                    topic,
                    partition,
                    offset,
                    ts,
                    e["event_id"],
                    et,
                    window,
                    e["page"],
                    e["event_type"],
                    e["user_id"],
                    e["session_id"],
                )
            )
        if final_ms is not None and window <= final_ms:
            continue  # a final window: recorded as late, not counted
        counts[key] += 1
        if watermark_ms is not None and et < watermark_ms:
            late_counts[key] += 1
        members.add(("user", *key, e["user_id"]))
        members.add(("session", *key, e["session_id"]))
        stage = _stage(e)
        if stage:
            funnel[(window, stage)] += 1
            members.add(("funnel", window, stage, "", e["session_id"]))
    rows.window_counts = [(*k, n, late_counts[k]) for k, n in counts.items()]
    rows.funnel_counts = [(*k, n) for k, n in funnel.items()]
    rows.members = list(members)
    return rows


EVENT_FIELDS = (
    "schema_version",
    "event_id",
    "user_id",
    "session_id",
    "session_seq",
    "event_type",
    "page",
    "element",
    "referrer",
    "device",
    "country",
)
MAX_FUTURE_SKEW_MS = 300_000


def _arrow_schemas() -> tuple[Any, Any]:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    kafka = [
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp_ms", pa.int64()),
    ]
    events = pa.schema(
        [
            ("schema_version", pa.int32()),
            ("event_id", pa.string()),
            ("event_time_ms", pa.int64()),
            *[(f, pa.int32() if f == "session_seq" else pa.string()) for f in EVENT_FIELDS[2:]],
            ("event_time", ts),
            *kafka,
        ]
    )
    dead = pa.schema(
        [
            *kafka,
            ("kafka_timestamp", ts),
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("reason", pa.string()),
            ("detail", pa.string()),
        ]
    )
    return events, dead


class PythonLake:
    """The baseline's lake: the same two Iceberg tables, appended with pyiceberg. Unpartitioned:
    pyiceberg's writes through a day transform need its native extension (pyiceberg-core), which
    the project does not install."""

    def __init__(self, bench: Bench, label: str) -> None:
        catalog = lake_reader.catalog(bench.env.catalog, bench.env.sm)
        catalog.create_namespace_if_not_exists(bench.env.namespace)
        self.schemas = _arrow_schemas()
        self.tables = [
            catalog.create_table(f"{bench.env.namespace}.{name}_{label}", schema=schema)
            for name, schema in zip(("events", "dead_letters"), self.schemas, strict=True)
        ]

    def write(self, rows: BatchRows, batch_id: int) -> dict[str, float]:
        import pyarrow as pa

        phases: dict[str, float] = {}
        properties = {"spotlake.batch-id": str(batch_id)}
        events, dead = self.tables
        started = time.monotonic()
        if rows.lake_events:  # type: ignore[attr-defined]
            events.append(
                pa.Table.from_pylist(rows.lake_events, self.schemas[0]),  # type: ignore[attr-defined]
                snapshot_properties=properties,
            )
        phases["lake_events"] = time.monotonic() - started
        if rows.dead_letters:
            started = time.monotonic()
            names = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_ms", "key", "value", "reason", "detail")
            records = [dict(zip(names, r, strict=True)) for r in rows.dead_letters]
            for r in records:
                r["kafka_timestamp"] = datetime.fromtimestamp(r["kafka_timestamp_ms"] / 1000, UTC)
            dead.append(pa.Table.from_pylist(records, self.schemas[1]), snapshot_properties=properties)
            phases["lake_dead_letters"] = time.monotonic() - started
        return phases


class PythonConsumer:
    """The baseline: poll what Kafka has every trigger interval, write it all with the same sink code."""

    def __init__(self, bench: Bench, schema: str, trigger_s: float, max_batch: int, label: str) -> None:
        self.bench, self.trigger_s, self.max_batch = bench, trigger_s, max_batch
        self.query = "python_baseline"
        self.writer = PostgresSinkWriter(
            bench.connect, schema, self.query, uuid.uuid4().hex, window_s=WINDOW_S, watermark_delay_s=WATERMARK_DELAY_S
        )
        self.lake = PythonLake(bench, label)
        self.stop = threading.Event()

    def write(self, batch_id: int, messages: list[Any]) -> None:
        state: dict[str, BatchRows] = {}

        def compute(watermark_ms: int | None, final_ms: int | None) -> BatchRows:
            state["rows"] = python_rows(messages, watermark_ms, final_ms)
            return state["rows"]

        self.writer.write(batch_id, compute, lambda: self.lake.write(state["rows"], batch_id))

    def run(self, topic: str, partitions: int) -> None:
        last = self.writer.claim().last_batch_id
        consumer = Consumer(
            {"bootstrap.servers": self.bench.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        batch_id = last + 1
        positions = dict.fromkeys(range(partitions), 0)
        try:
            while not self.stop.is_set():
                tick = time.monotonic()
                # Like a Spark micro-batch: what Kafka holds at the tick, at most max_batch records.
                ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in positions}
                messages: list[Any] = []
                while len(messages) < self.max_batch and any(positions[p] < ends[p] for p in positions):
                    for m in consumer.consume(min(1000, self.max_batch - len(messages)), timeout=0.5):
                        if m.error() is None:
                            messages.append(m)
                            positions[m.partition()] = m.offset() + 1
                if messages:
                    self.write(batch_id, messages)
                    batch_id += 1
                self.stop.wait(max(0.0, tick + self.trigger_s - time.monotonic()))
        finally:
            consumer.close()
            self.writer.close()


# -------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        layout = StackLayout.default()
        self.pg = services.postgres_settings(layout)
        self.moto = stack.moto_endpoint(layout)
        self.s3 = stack.s3_endpoint(layout)
        for key, value in stack.aws_env(layout).items():
            os.environ.setdefault(key, value)
        self.bootstrap = f"127.0.0.1:{layout.port('kafka')}"
        from tests.support.stream_harness import StreamEnv, lake_catalog_secret

        self.env = StreamEnv(self.bootstrap, self.pg, self.moto, lake_catalog_secret(self.pg))
        self.spark: Any = None
        self.master = "local[2]"
        self.partitions = 3
        self.progress: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.schemas: list[str] = []

    def connect(self) -> Any:
        import psycopg2

        p = self.pg
        return psycopg2.connect(host=p["host"], port=int(p["port"]), user=p["user"], password=p["password"], dbname=p["database"])

    def close(self) -> None:
        if self.spark is not None:
            self.spark.stop()
        if self.topics:
            for future in self.env.admin.delete_topics(self.topics).values():
                future.result(30)
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                for schema in self.schemas:
                    cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            connection.commit()
        finally:
            connection.close()
        self.env.close()

    # ------------------------------------------------------------ fixtures
    def new_topic(self, label: str) -> str:
        from confluent_kafka.admin import NewTopic

        topic = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        self.env.admin.create_topics([NewTopic(topic, num_partitions=self.partitions, replication_factor=1)])[topic].result(30)
        while topic not in self.env.admin.list_topics(timeout=10).topics:
            time.sleep(0.2)
        self.topics.append(topic)
        return topic

    def new_schema(self, label: str) -> str:
        from spotlake import sink_schema

        schema = f"{self.env.schema}_{label}"
        self.schemas.append(schema)
        connection = self.connect()
        try:
            sink_schema.apply(connection, schema)
        finally:
            connection.close()
        return schema

    def produce(self, topic: str, rate: float, seconds: float | None = None, count: int | None = None, pace: bool = True) -> int:
        config = ClickConfig(
            seed=int(time.time()),
            start_ms=int(time.time() * 1000),
            users=5000,
            late_fraction=0.02,
            late_max_seconds=60,
            malformed_fraction=0.005,
        )
        totals = produce_stream(
            ClickStream(config, ConstantRate(rate)),
            KafkaSink(self.bootstrap, topic),
            duration=seconds,
            count=count,
            pace=pace,
            progress=None,
        )
        assert totals.ok, totals.summary()
        return totals.sent

    def committed(self, schema: str, query: str) -> int:
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute(f'SELECT offsets FROM "{schema}".stream_progress WHERE query_name = %s', (query,))
                row = cur.fetchone()
        finally:
            connection.close()
        return sum(int(o) for parts in (row[0] if row else {}).values() for o in parts.values())

    def wait_committed(self, schema: str, query: str, total: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.committed(schema, query) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{query} did not commit {total} records within {timeout:.0f} s")
            time.sleep(0.2)

    # ------------------------------------------------------------ measuring
    def batches(self, schema: str, query: str) -> list[tuple[int, datetime, datetime, dict[str, Any], int]]:
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute(
                    f'SELECT batch_id, started_at, committed_at, offsets, input_rows FROM "{schema}".'
                    "stream_batches WHERE query_name = %s ORDER BY batch_id",
                    (query,),
                )
                return cur.fetchall()
        finally:
            connection.close()

    def kafka_timestamps(self, topic: str, total: int) -> list[tuple[int, int, int]]:
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
        out: list[tuple[int, int, int]] = []
        while len(out) < total:
            for m in consumer.consume(5000, timeout=2.0):
                out.append((m.partition(), m.offset(), m.timestamp()[1]))
        consumer.close()
        return out

    def latencies(self, topic: str, schema: str, query: str, total: int, skip: dict[int, int]) -> list[float]:
        """Per event after ``skip`` (offsets per partition): commit of its batch - its Kafka timestamp."""
        batches = self.batches(schema, query)
        ends = [
            ({int(p): int(o) for p, o in offsets[topic].items()}, committed)
            for _, _, committed, offsets, _ in batches
            if topic in offsets
        ]  # a batch may read nothing
        out = []
        for partition, offset, ts in self.kafka_timestamps(topic, total):
            if offset < skip.get(partition, 0):
                continue
            committed = next(c for end, c in ends if end.get(partition, 0) > offset)
            out.append((committed - EPOCH) / timedelta(milliseconds=1) - ts)
        return out

    def offsets_now(self, topic: str) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-probe"})
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(self.partitions)}
        consumer.close()
        return ends

    # ------------------------------------------------------------- running
    def start(
        self, implementation: str, topic: str, schema: str, trigger_s: float, max_batch: int, label: str
    ) -> tuple[str, Any]:
        """Start a consumer in a thread; return its query name and a stop function."""
        if implementation == "python":
            consumer = PythonConsumer(self, schema, trigger_s, max_batch, label)
            thread = threading.Thread(target=consumer.run, args=(topic, self.partitions), daemon=True)
            thread.start()

            def stop_python() -> None:
                consumer.stop.set()
                thread.join(60)

            return consumer.query, stop_python
        from spark_jobs.clickstream.run import run_stream
        from tests.support.stream_harness import spark_session

        if self.spark is None:
            self.spark = spark_session(self.s3, self.master)
            self.spark.sparkContext.setLogLevel("ERROR")
        config = replace(
            self.env.stream_config(),
            name=f"bench_{uuid.uuid4().hex[:6]}",
            topics=(topic,),
            sink_schema=schema,
            checkpoint=f"s3a://{self.env.bucket}/checkpoints/{schema}",
            lake=StreamLakeTables(self.env.namespace, f"events_{label}", f"dead_letters_{label}"),
            max_offsets_per_trigger=max_batch,
            trigger_interval=timedelta(seconds=trigger_s),
            watermark_delay=timedelta(seconds=WATERMARK_DELAY_S),
        )
        job = self.env.job(config, available_now=False)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                run_stream(self.spark, job)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()

        def stop_spark() -> None:
            self.progress = []
            for query in self.spark.streams.active:
                self.progress = list(query.recentProgress)
                query.stop()
            thread.join(120)
            if errors:
                raise errors[0]

        return job.query_name, stop_spark

    def phases(self, implementation: str, schema: str, query: str) -> dict[str, float]:
        """Median seconds per phase over the batches that read records (see the module documentation)."""
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute(
                    f'SELECT batch_id, phases FROM "{schema}".stream_batches WHERE query_name = %s '
                    "AND input_rows > 0 ORDER BY batch_id",
                    (query,),
                )
                fetched = [(batch_id, phases) for batch_id, phases in cur.fetchall() if phases]
                # Batch 0 also starts the query: left out, unless it is the only one (a drained backlog).
                recorded = [p for batch_id, p in fetched if batch_id > 0] or [p for _, p in fetched]
        finally:
            connection.close()
        names = sorted({k for p in recorded for k in p if k != "batch"})
        out = {name: statistics.median(p.get(name, 0.0) for p in recorded) for name in names} if recorded else {}
        if implementation == "spark":
            for name, value in batch_phases(self.progress).items():
                out[f"spark.{name}"] = value / 1000 if name in PHASES else value
        return out

    def latency_run(self, implementation: str, trigger_s: float, rate: float) -> Result:
        a = self.args
        label = f"{implementation[:2]}{int(trigger_s)}l{int(rate)}"
        topic, schema = self.new_topic(label), self.new_schema(label)
        query, stop = self.start(implementation, topic, schema, trigger_s, a.max_batch, label)
        try:
            # Steady state: the first micro-batches of a query (and of the JVM's code) are slower.
            warmup = self.produce(topic, rate=rate, seconds=a.warmup, pace=True)
            self.wait_committed(schema, query, warmup)
            skip = self.offsets_now(topic)
            started = time.time()
            sent = self.produce(topic, rate=rate, seconds=a.seconds)
            produced = time.time()
            self.wait_committed(schema, query, warmup + sent)
            finished = time.time()
        finally:
            stop()
        latencies = self.latencies(topic, schema, query, warmup + sent, skip)
        batches = [b for b in self.batches(schema, query) if b[1].timestamp() >= started - trigger_s]
        durations = [(b[2] - b[1]).total_seconds() for b in batches]
        return Result(
            implementation,
            "latency",
            trigger_s,
            sent,
            produced - started,
            len(batches),
            statistics.mean(durations) if durations else 0.0,
            latencies,
            tail_s=finished - produced,
            label=f"{rate:g} events/s",
            phases=self.phases(implementation, schema, query),
        )

    def capacity_run(self, implementation: str, trigger_s: float, label: str = "") -> Result:
        a = self.args
        tag = f"{implementation[:2]}{int(trigger_s)}c{self.partitions}{self.master[6]}"
        topic, schema = self.new_topic(tag), self.new_schema(tag)
        sent = self.produce(topic, rate=1000.0, count=a.backlog, pace=False)
        # The same cap in records per second for every trigger: a longer interval takes more a batch.
        limit = int(a.max_batch * max(trigger_s, 1.0))
        query, stop = self.start(implementation, topic, schema, trigger_s, limit, tag)
        try:
            self.wait_committed(schema, query, sent, timeout=900)
        finally:
            stop()
        batches = self.batches(schema, query)
        seconds = (batches[-1][2] - batches[0][1]).total_seconds()
        durations = [(b[2] - b[1]).total_seconds() for b in batches]
        return Result(
            implementation,
            "scale" if label else "capacity",
            trigger_s,
            sent,
            seconds,
            len(batches),
            statistics.mean(durations),
            [],
            label=label,
            phases=self.phases(implementation, schema, query),
        )

    def executor_work(self, label: str, runs: int = 3) -> Result:
        """The executors' part of a micro-batch alone, on a backlog read as one Kafka batch: read,
        validate, aggregate (into Spark's no-op sink, not collected to the driver); the median of ``runs``."""
        from spark_jobs.clickstream.events import batch_summary, classify_events, kafka_records, with_future_check
        from tests.support.stream_harness import spark_session

        topic = self.new_topic(f"ex{self.partitions}{self.master[6]}")
        sent = self.produce(topic, rate=1000.0, count=self.args.backlog, pace=False)
        if self.spark is None:
            self.spark = spark_session(self.s3, self.master)
            self.spark.sparkContext.setLogLevel("ERROR")
        self.spark.conf.set("spark.sql.shuffle.partitions", str(self.partitions))
        times = []
        for _ in range(runs + 1):  # the first run warms the JVM up
            started = time.monotonic()
            records = (
                self.spark.read.format("kafka")
                .option("kafka.bootstrap.servers", self.bootstrap)
                .option("subscribe", topic)
                .load()
            )
            summary = batch_summary(
                records.transform(kafka_records).transform(classify_events).transform(with_future_check(300)),
                WINDOW_S,
                None,
                "count",
            )
            summary.write.format("noop").mode("overwrite").save()  # every column: nothing pruned
            times.append(time.monotonic() - started)
        seconds = statistics.median(times[1:])
        return Result("spark", "executors", 0.0, sent, seconds, runs, seconds, [], label=label)

    def restart_spark(self, master: str, partitions: int) -> None:
        if self.spark is not None:
            self.spark.stop()
            self.spark = None
        self.master, self.partitions = master, partitions


PHASES = ("latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets", "triggerExecution")


def batch_phases(progress: list[dict[str, Any]]) -> dict[str, float]:
    """Median milliseconds of each phase of Spark's micro-batches that read records
    (``StreamingQueryProgress.durationMs``; the first batch, which also starts the query, left out)."""
    batches = [p for p in progress if p.get("numInputRows") and p.get("batchId", 0) > 0] or [
        p for p in progress if p.get("numInputRows")
    ]  # batch 0 when it is the only one
    out = {name: statistics.median(p["durationMs"].get(name, 0) for p in batches) for name in PHASES} if batches else {}
    if batches:
        out["rows"] = statistics.median(p["numInputRows"] for p in batches)
        out["batches"] = len(batches)
    return out


def running_services() -> list[str]:
    """The local stack's services whose process is alive (from its PID files)."""
    from spotlake_dev.localstack.process import Supervisor

    layout = StackLayout.default()
    supervisor = Supervisor(layout)
    names = sorted(p.stem for p in layout.run_dir.glob("*.pid")) if layout.run_dir.exists() else []
    return [name for name in names if supervisor.pid(name)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def scale_lines(results: list[Result]) -> list[str]:
    """The report's scale section (the --scale runs), if any."""
    lines: list[str] = []
    scale = [r for r in results if r.mode == "scale"]
    if scale:
        lines += [
            "",
            "## Scale: executors and partitions",
            "",
            "The capacity run of the Spark job with one core and two Kafka partitions, then two cores and four "
            "(two partitions per core each time).",
            "",
            "| Spark | events | events/s | batches | mean batch (s) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {r.label} | {r.events:,} | {r.rate:,.0f} | {r.batches} | {r.batch_s_mean:.2f} |" for r in scale]
        if len(scale) == 2 and scale[0].rate > 0:
            lines += [
                "",
                f"Two cores and four partitions drained the backlog {scale[1].rate / scale[0].rate:.2f} times "
                "as fast as one core and two partitions.",
            ]
    executors = [r for r in results if r.mode == "executors"]
    if executors:
        lines += [
            "",
            "The executors' part alone: the same backlog read as one Kafka batch, validated and aggregated "
            "(the whole aggregation, into Spark's no-op sink: nothing collected to the driver, no PostgreSQL, "
            "no lake); "
            "median of 3 runs after a warm-up.",
            "",
            "| Spark | events | seconds | events/s |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r.label} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} |" for r in executors]
        if len(executors) == 2 and executors[0].rate > 0:
            lines += [
                "",
                f"Two cores and four partitions did the executors' part {executors[1].rate / executors[0].rate:.2f} "
                "times as fast as one core and two partitions.",
            ]
    return lines


def report(args: argparse.Namespace, results: list[Result], wall: float) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    import pyspark

    command = (
        f"{COMMAND} --rates {','.join(f'{r:g}' for r in args.rates)} --seconds {args.seconds:g} "
        f"--backlog {args.backlog} --max-batch {args.max_batch} "
        f"--triggers {','.join(f'{t:g}' for t in args.triggers)} --warmup {args.warmup:g}" + (" --scale" if args.scale else "")
    )
    lines = [
        "# Click-stream benchmark",
        "",
        f"Measured {now} on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, PySpark {pyspark.__version__} in-process (`local[2]` unless said, 1 GiB "
        "driver), the local Kafka broker (topics of 3 partitions unless said), PostgreSQL (the sink and the lake's "
        "JDBC catalog) and the local S3 server, all on the same machine "
        f"(stack services running: {', '.join(running_services()) or 'none'}; 1-minute load average "
        f"{LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end). One run, side by side.",
        "",
        f"Reproduce: `{command}`",
        "",
        "- **spark**: the whole job (`spark_jobs/clickstream/run.py`): the stream's one query reads each record "
        "once, validates it once and writes from `foreachBatch`, in one PostgreSQL transaction per micro-batch, "
        "the aggregates, funnel, late events and dead letters, and appends the valid events and the dead letters "
        "to their Iceberg tables (each commit naming the checkpoint and batch); checkpoint on S3.",
        "- **python**: one confluent-kafka consumer that, every trigger interval, takes what Kafka has, "
        "validates and aggregates it in Python, appends the valid events and the dead letters to Iceberg tables "
        "of the same catalog with pyiceberg (unpartitioned: pyiceberg's day transform needs its native "
        "extension), and commits the aggregates through the same sink code (`spark_jobs/clickstream/sink.py`). The "
        "same outputs, in one process.",
        "",
        f"## Latency at the 1 s trigger: {', '.join(f'{r:g}' for r in args.rates)} events/s for {args.seconds:g} s",
        "",
        "Per event: commit of the batch that counted it (`stream_batches.committed_at`) minus its Kafka "
        f"timestamp (set when produced). A warm-up of {args.warmup:g} s at the same rate runs first and is not "
        "counted (the first micro-batches of a query, and the first run of the JVM's code, are slower).",
        "",
        "| job | rate | events | produced (events/s) | batches | mean batch (s) | p50 (s) | p99 (s) | max (s) "
        "| last commit after last event (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if r.mode == "latency"):
        lat = [v / 1000 for v in r.latencies_ms]
        lines.append(
            f"| {r.implementation} | {r.label} | {r.events:,} | {r.rate:,.0f} | {r.batches} | "
            f"{r.batch_s_mean:.2f} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | {max(lat):.2f} | {r.tail_s:.1f} |"
        )
    lines += [
        "",
        f"## Capacity: a backlog of {args.backlog:,} events",
        "",
        "Events per second from the start of the first batch to the commit of the last. A batch takes at most "
        f"{args.max_batch:,} records per second of trigger interval (`maxOffsetsPerTrigger` {args.max_batch:,} at "
        f"1 s, {10 * args.max_batch:,} at 10 s), so the cap is the same rate for both triggers.",
        "",
        "| job | trigger | events | events/s | batches | mean batch (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if r.mode == "capacity"):
        lines.append(
            f"| {r.implementation} | {r.trigger_s:g} s | {r.events:,} | {r.rate:,.0f} | {r.batches} | {r.batch_s_mean:.2f} |"
        )
    lines += scale_lines(results)
    names = sorted({k for r in results for k in r.phases if not k.startswith("spark.") and k not in ("rows", "batches")})
    spark_names = [f"spark.{n}" for n in PHASES]
    lines += [
        "",
        "## Where a micro-batch's time goes",
        "",
        "Median seconds per phase over the batches that read records (batch 0, which starts the query, left out "
        "unless it is the only one). "
        "The job's own phases (`stream_batches.phases`): `aggregate` (Spark: read from Kafka, validate, one "
        "aggregation, collect; Python: the same in a loop), `postgres` (the sink's statements), `lake_events` and "
        "`lake_dead_letters` (one Iceberg append each; only batches with dead letters have the latter). Spark's "
        "progress (`durationMs`): `latestOffset` (Kafka's end offsets), `queryPlanning`, `walCommit` and "
        "`commitOffsets` (the checkpoint's offsets and commit files on S3), `addBatch` (the whole foreachBatch).",
        "",
        "| job | run | " + " | ".join(names + [n.removeprefix("spark.") for n in spark_names]) + " |",
        "|---|---|" + "---:|" * (len(names) + len(spark_names)),
    ]
    for r in results:
        if r.phases:
            where = r.label or f"{r.trigger_s:g} s trigger"
            lines.append(
                f"| {r.implementation} | {r.mode}, {where} | "
                + " | ".join(f"{r.phases[n]:.2f}" if n in r.phases else "-" for n in names + spark_names)
                + " |"
            )
    capacity = {(r.implementation, r.trigger_s): r for r in results if r.mode == "capacity"}
    latency = {(r.implementation, r.label): r for r in results if r.mode == "latency"}
    lines += ["", "## Targets", ""]
    for trigger, share in ((10.0, 1.0), (1.0, 0.6)):
        spark, python = capacity.get(("spark", trigger)), capacity.get(("python", trigger))
        if spark and python:
            met = spark.rate >= share * python.rate
            lines.append(
                f"- Throughput at the {trigger:g} s trigger, at least {share:.0%} of the Python consumer's: "
                f"{'met' if met else 'NOT met'} ({spark.rate:,.0f} against {python.rate:,.0f} events/s, "
                f"{spark.rate / python.rate:.0%})."
            )
    for rate, bound in ((1000.0, 3.0), (5000.0, 5.0)):
        run = latency.get(("spark", f"{rate:g} events/s"))
        if run:
            p99 = pct([v / 1000 for v in run.latencies_ms], 0.99)
            lines.append(
                f"- p99 at {rate:g} events/s and the 1 s trigger under {bound:g} s: "
                f"{'met' if p99 < bound else 'NOT met'} ({p99:.2f} s)."
            )
    lines += ["", f"Whole benchmark: {wall:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1000.0, 5000.0],
        help="events/s of the latency runs (1 s trigger)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency runs")
    parser.add_argument("--backlog", type=int, default=200000, help="events of the capacity runs")
    parser.add_argument("--max-batch", type=int, default=50000, help="records per batch at most")
    parser.add_argument("--triggers", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 10.0])
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of events before a latency run counts")
    parser.add_argument("--scale", action="store_true", help="also the scale runs (Spark, local[1] and local[2])")
    parser.add_argument("--only", choices=("spark", "python"), default=None)
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args(argv)
    global LOAD_AT_START
    LOAD_AT_START = os.getloadavg()[0]
    started = time.monotonic()
    bench = Bench(args)
    results: list[Result] = []
    try:

        def done(result: Result) -> None:
            print(
                f"{result.implementation} {result.mode} {result.label or f'trigger {result.trigger_s:g} s'}: "
                f"{result.events} events, {result.rate:,.0f}/s, {result.batches} batches",
                flush=True,
            )
            results.append(result)

        for implementation in [args.only] if args.only else ["spark", "python"]:
            for rate in args.rates:
                done(bench.latency_run(implementation, 1.0, rate))
            for trigger in args.triggers:
                done(bench.capacity_run(implementation, trigger))
        if args.scale:
            for master, partitions in (("local[1]", 2), ("local[2]", 4)):
                bench.restart_spark(master, partitions)
                done(bench.capacity_run("spark", 1.0, label=f"{master}, {partitions} partitions"))
                done(bench.executor_work(f"{master}, {partitions} partitions"))
    finally:
        bench.close()
    text = report(args, results, time.monotonic() - started)
    print(text)
    if not args.print_only:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
