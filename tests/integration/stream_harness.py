"""A click stream against the real services, and the answers it must give.

:class:`StreamEnv` makes a uniquely named topic, S3 bucket, PostgreSQL schema (with the
project's migrations) and sink secret, and removes them afterwards. The ``expected_*``
functions recompute, in plain Python from the generated records, what the sink must hold:
they share no code with the Spark job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark import SparkContext
from pyspark.sql import SparkSession

from spark_jobs.stream_job import StreamJob
from spotlake import sink_schema
from spotlake.clickgen.behaviour import ClickStream
from spotlake.clickgen.behaviour import StreamConfig as ClickConfig
from spotlake.clickgen.delivery import KafkaSink
from spotlake.clickgen.events import VALID, classify
from spotlake.clickgen.rate import ConstantRate
from spotlake.streaming import RestartBudget, StreamConfig
from tests.integration.job_harness import session_jars

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Record = tuple[bytes, str]


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


# ----------------------------------------------------------------------- Spark
def spark_session(s3: str) -> SparkSession:
    """A local[2] session with the Kafka, s3a, JDBC and Iceberg jars (s3a on the local S3 server
    at ``s3``); ends a JVM started without them."""
    jars = session_jars()
    existing = SparkSession.getActiveSession()
    if existing is not None and "spark-sql-kafka" in existing.sparkContext.getConf().get("spark.jars", ""):
        return existing
    if existing is not None:
        existing.stop()
    # spark.jars only reach the classpath when the JVM starts: end one started without them.
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=60)
        SparkContext._gateway = None
        SparkContext._jvm = None
    return (
        SparkSession.builder.master("local[2]")
        .appName("spotlake-integration-stream")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        # As the supervisor submits a stream (spotlake.streaming.STREAM_SPARK_CONF)
        .config("spark.scheduler.mode", "FAIR")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.hadoop.fs.s3a.endpoint", s3)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")  # s3:// as on EMR
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .config("spark.hadoop.fs.s3a.aws.credentials.provider",
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
        .config("spark.hadoop.fs.s3a.access.key", "testing")
        .config("spark.hadoop.fs.s3a.secret.key", "testing")
        .config("spark.hadoop.fs.s3a.change.detection.mode", "none")
        .config("spark.hadoop.fs.s3a.committer.magic.enabled", "false")
        .getOrCreate()
    )


# ------------------------------------------------------------------ the stream
def click_records(seed: int, count: int, **settings: Any) -> tuple[list[Record], Counter[str]]:
    """The generator's records for ``seed`` (keys and values) and its malformed totals by kind."""
    config = ClickConfig(seed=seed, start_ms=START_MS, users=300, **settings)
    records = [(key, value) for key, value, _, _ in ClickStream(config, ConstantRate(25.0)).records(count=count)]
    kinds = Counter(classify(value) for _, value in records)
    kinds.pop(VALID, None)
    return records, kinds


class StreamEnv:
    """A topic, bucket, sink schema and secret of its own, for one stream under test."""

    def __init__(self, bootstrap: str, postgres: dict[str, str], moto: str, partitions: int = 3) -> None:
        self.bootstrap = bootstrap
        self.postgres = postgres
        self.moto = moto
        self.tag = uuid.uuid4().hex[:8]
        self.name = f"clicks_{self.tag}"
        self.topic = f"clicks-itest-{self.tag}"
        self.bucket = f"stream-{self.tag}"
        self.schema = f"itest_{self.tag}"
        self.secret_id = f"spotlake/itest/sink-{self.tag}"
        self.partitions = partitions
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.admin.create_topics([NewTopic(self.topic, num_partitions=partitions, replication_factor=1)])[
            self.topic].result(30)
        deadline = time.monotonic() + 30
        while self.topic not in self.admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, f"topic {self.topic} did not appear"
            time.sleep(0.2)
        self.s3 = boto3.client("s3")  # the local S3 server, through AWS_ENDPOINT_URL_S3
        self.s3.create_bucket(Bucket=self.bucket)
        self.sm = boto3.client("secretsmanager", endpoint_url=moto)
        self.sm.create_secret(Name=self.secret_id, SecretString=json.dumps({
            "host": postgres["host"], "port": int(postgres["port"]), "database": postgres["database"],
            "username": postgres["user"], "password": postgres["password"],
        }))
        connection = self.connect()
        try:
            sink_schema.apply(connection, self.schema)
        finally:
            connection.close()

    def connect(self) -> Any:
        p = self.postgres
        return psycopg2.connect(host=p["host"], port=int(p["port"]), user=p["user"], password=p["password"],
                                dbname=p["database"])

    def close(self) -> None:
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            connection.commit()
        finally:
            connection.close()
        try:
            self.admin.delete_topics([self.topic])[self.topic].result(30)
        except KafkaException:
            pass
        self.sm.delete_secret(SecretId=self.secret_id, ForceDeleteWithoutRecovery=True)
        keys = [o["Key"] for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
                for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket,
                                   Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
        self.s3.delete_bucket(Bucket=self.bucket)

    # ----------------------------------------------------------- configuration
    def stream_config(self, **changes: Any) -> StreamConfig:
        config = StreamConfig(
            name=self.name, pool="large", topics=(self.topic,), sink_secret_id=self.secret_id,
            sink_schema=self.schema, checkpoint=f"s3://{self.bucket}/checkpoints/{self.name}",
            lake=f"s3://{self.bucket}/lake/events", dead_letters=f"s3://{self.bucket}/lake/dead_letters",
            max_offsets_per_trigger=750, trigger_interval=timedelta(seconds=1),
            lake_trigger_interval=timedelta(seconds=2),
            watermark_delay=timedelta(seconds=20), restart_budget=RestartBudget(5, timedelta(hours=1)),
        )
        return replace(config, **changes)

    def job(self, config: StreamConfig | None = None, available_now: bool = True) -> StreamJob:
        config = config or self.stream_config()
        document = config.job_document(uuid.uuid4().hex, 1, self.bootstrap, available_now=available_now)
        return StreamJob.from_dict(document)

    # ------------------------------------------------------------------- Kafka
    def produce(self, records: Iterable[Record]) -> int:
        sink = KafkaSink(self.bootstrap, self.topic, connect_timeout=10.0)
        sent = 0
        for key, value in records:
            sink.send(key, value)
            sent += 1
        totals = sink.close(30.0)
        assert totals.delivered == sent and totals.failed == 0, totals
        return sent

    # -------------------------------------------------------------- PostgreSQL
    def rows(self, sql: str, *params: Any) -> list[tuple]:
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute(sql.replace("{s}", f'"{self.schema}"'), params or None)
                return cur.fetchall()
        finally:
            connection.close()

    def aggregates(self) -> dict[tuple[int, str, str], tuple[int, int, int]]:
        return {
            (to_ms(w), page, etype): (events, users, sessions)
            for w, page, etype, events, users, sessions in self.rows(
                "SELECT window_start, page, event_type, events, users, sessions FROM {s}.click_aggregates")
        }

    def funnel(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {(to_ms(w), stage): (events, sessions)
                for w, stage, events, sessions in self.rows(
                    "SELECT window_start, stage, events, sessions FROM {s}.click_funnel")}

    def snapshot(self) -> dict[str, Any]:
        """Everything the sink holds, comparable before and after a replay."""
        tables = {
            "aggregates": "SELECT * FROM {s}.click_aggregates ORDER BY 1, 2, 3",
            "funnel": "SELECT * FROM {s}.click_funnel ORDER BY 1, 2",
            "dead": "SELECT topic, kafka_partition, kafka_offset, reason, batch_id FROM {s}.click_dead_letters "
                    "ORDER BY 1, 2, 3",
            "late": "SELECT topic, kafka_partition, kafka_offset, batch_id FROM {s}.click_late_events ORDER BY 1, 2, 3",
            "users": "SELECT count(*) FROM {s}.click_window_users",
            "sessions": "SELECT count(*) FROM {s}.click_window_sessions",
            "progress": "SELECT last_batch_id, watermark, offsets, committed_at FROM {s}.stream_progress",
            "batches": "SELECT batch_id, committed_at FROM {s}.stream_batches ORDER BY 1",
        }
        return {name: self.rows(sql) for name, sql in tables.items()}

    def committed_offsets(self, query_name: str) -> int:
        rows = self.rows("SELECT offsets FROM {s}.stream_progress WHERE query_name = %s", query_name)
        if not rows:
            return 0
        return sum(int(o) for parts in rows[0][0].values() for o in parts.values())

    def checkpoint_keys(self, query: str, folder: str) -> list[str]:
        prefix = f"checkpoints/{self.name}/{query}/{folder}/"
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted((o["Key"] for o in listing.get("Contents", [])
                       if o["Key"].rsplit("/", 1)[-1].isdigit()), key=lambda k: int(k.rsplit("/", 1)[-1]))


# --------------------------------------------------------------- the answers
def funnel_stage(event: dict[str, Any]) -> str | None:
    if event["session_seq"] == 0:
        return "session_start"
    if event["event_type"] == "page_view" and event["page"].startswith("/product/"):
        return "product_view"
    if event["event_type"] in ("add_to_cart", "checkout", "purchase"):
        return event["event_type"]
    return None


def valid_events(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [json.loads(value) for _, value in records if classify(value) == VALID]


def expected_aggregates(events: Iterable[dict[str, Any]], window_s: int = 60
                        ) -> dict[tuple[int, str, str], tuple[int, int, int]]:
    counts: Counter[tuple[int, str, str]] = Counter()
    users: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    sessions: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    for e in events:
        key = (e["event_time"] - e["event_time"] % (window_s * 1000), e["page"], e["event_type"])
        counts[key] += 1
        users[key].add(e["user_id"])
        sessions[key].add(e["session_id"])
    return {key: (n, len(users[key]), len(sessions[key])) for key, n in counts.items()}


def expected_funnel(events: Iterable[dict[str, Any]], window_s: int = 60) -> dict[tuple[int, str], tuple[int, int]]:
    counts: Counter[tuple[int, str]] = Counter()
    sessions: dict[tuple[int, str], set[str]] = defaultdict(set)
    for e in events:
        stage = funnel_stage(e)
        if stage is None:
            continue
        key = (e["event_time"] - e["event_time"] % (window_s * 1000), stage)
        counts[key] += 1
        sessions[key].add(e["session_id"])
    return {key: (n, len(sessions[key])) for key, n in counts.items()}
