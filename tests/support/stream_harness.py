"""A click stream against the real services, and the answers it must give.

:class:`StreamEnv` makes a uniquely named topic, S3 bucket, PostgreSQL schema (with the
project's migrations) and sink secret, and removes them afterwards. The ``expected_*``
functions recompute, in plain Python from the generated records, what the sink must hold:
they share no code with the Spark job.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
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

from spark_jobs.clickstream.job import StreamJob
from spotlake import config, lake, sink_schema
from spotlake.streaming import RestartBudget, StreamConfig, StreamLakeTables
from spotlake_dev.clickgen.behaviour import ClickStream
from spotlake_dev.clickgen.behaviour import StreamConfig as ClickConfig
from spotlake_dev.clickgen.delivery import KafkaSink
from spotlake_dev.clickgen.events import VALID, classify
from spotlake_dev.clickgen.rate import ConstantRate
from tests.support.job_harness import session_jars

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Record = tuple[bytes, str]
WAREHOUSE_BUCKET = "spotlake-stream-tests"  # the streams' lake tables (purged by each test's close)


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


# ----------------------------------------------------------------------- Spark
def spark_session(s3: str, master: str = "local[2]") -> SparkSession:
    """A ``master`` session (local[2]) with the Kafka, s3a, JDBC and Iceberg jars (s3a on the local
    S3 server at ``s3``); ends a JVM started without them."""
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
        SparkSession.builder.master(master)
        .appName("spotlake-integration-stream")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.hadoop.fs.s3a.endpoint", s3)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")  # s3:// as on EMR
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .config("spark.hadoop.fs.s3a.aws.credentials.provider", "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
        .config("spark.hadoop.fs.s3a.access.key", "testing")
        .config("spark.hadoop.fs.s3a.secret.key", "testing")
        .config("spark.hadoop.fs.s3a.change.detection.mode", "none")
        .config("spark.hadoop.fs.s3a.committer.magic.enabled", "false")
        .getOrCreate()
    )


def lake_catalog_secret(postgres: dict[str, str]) -> str:
    """The Secrets Manager secret of the lake's JDBC catalog database (the stack's PostgreSQL), made or updated."""
    secret_id = "spotlake/test/lake-catalog"
    value = json.dumps(
        {
            "host": postgres["host"],
            "port": int(postgres["port"]),
            "database": postgres["catalog_database"],
            "username": postgres["user"],
            "password": postgres["password"],
        }
    )
    client = boto3.client("secretsmanager")
    try:
        client.create_secret(Name=secret_id, SecretString=value)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=secret_id, SecretString=value)
    return secret_id


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

    def __init__(self, bootstrap: str, postgres: dict[str, str], moto: str, catalog_secret: str, partitions: int = 3) -> None:
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
        # The stream's Iceberg tables: in the lake's JDBC catalog, a namespace of their own. One
        # warehouse for every test: a Spark session configures its catalog once (at first use).
        self.namespace = f"clicks_{self.tag}"
        self.catalog = config.Lake(
            catalog="lake", type="jdbc", warehouse=f"s3://{WAREHOUSE_BUCKET}/warehouse", namespace="raw", secret_id=catalog_secret
        )
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.admin.create_topics([NewTopic(self.topic, num_partitions=partitions, replication_factor=1)])[self.topic].result(30)
        deadline = time.monotonic() + 30
        while self.topic not in self.admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, f"topic {self.topic} did not appear"
            time.sleep(0.2)
        self.s3 = boto3.client("s3")  # the local S3 server, through AWS_ENDPOINT_URL_S3
        self.s3.create_bucket(Bucket=self.bucket)
        with contextlib.suppress(self.s3.exceptions.BucketAlreadyOwnedByYou, self.s3.exceptions.BucketAlreadyExists):
            self.s3.create_bucket(Bucket=WAREHOUSE_BUCKET)
        self.sm = boto3.client("secretsmanager", endpoint_url=moto)
        self.sm.create_secret(Name=self.secret_id, SecretString=self.sink_secret())
        connection = self.connect()
        try:
            sink_schema.apply(connection, self.schema)
        finally:
            connection.close()

    def sink_secret(self, port: int | None = None) -> str:
        """The sink secret's value (``port``: another port than the database's, e.g. a proxy's)."""
        p = self.postgres
        return json.dumps(
            {
                "host": p["host"],
                "port": port or int(p["port"]),
                "database": p["database"],
                "username": p["user"],
                "password": p["password"],
            }
        )

    def connect(self) -> Any:
        p = self.postgres
        return psycopg2.connect(host=p["host"], port=int(p["port"]), user=p["user"], password=p["password"], dbname=p["database"])

    def close(self) -> None:
        with contextlib.suppress(Exception):  # nothing created, or already gone
            catalog = self.iceberg_catalog()
            for identifier in catalog.list_tables(self.namespace):
                catalog.purge_table(identifier)
            catalog.drop_namespace(self.namespace)
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
        keys = [
            o["Key"]
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            for o in page.get("Contents", [])
        ]
        for start in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]})
        self.s3.delete_bucket(Bucket=self.bucket)

    # ----------------------------------------------------------- configuration
    def stream_config(self, **changes: Any) -> StreamConfig:
        stream = StreamConfig(
            name=self.name,
            pool="large",
            topics=(self.topic,),
            sink_secret_id=self.secret_id,
            sink_schema=self.schema,
            checkpoint=f"s3://{self.bucket}/checkpoints/{self.name}",
            lake=StreamLakeTables(self.namespace),
            catalog=self.catalog,
            max_offsets_per_trigger=750,
            trigger_interval=timedelta(seconds=1),
            watermark_delay=timedelta(seconds=20),
            restart_budget=RestartBudget(5, timedelta(hours=1)),
        )
        return replace(stream, **changes)

    def job(self, stream: StreamConfig | None = None, available_now: bool = True, attempt: int = 1) -> StreamJob:
        stream = stream or self.stream_config()
        document = stream.job_document(uuid.uuid4().hex, attempt, self.bootstrap, available_now=available_now)
        return StreamJob.from_dict(document)

    # ------------------------------------------------------------------ the lake
    def iceberg_catalog(self) -> Any:
        return lake.catalog(self.catalog, self.sm)

    def lake_rows(self, table: str = "events") -> list[dict[str, Any]]:
        """The rows of the stream's Iceberg table ``table`` as pyiceberg reads them ([] before it exists)."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.iceberg_catalog().load_table(f"{self.namespace}.{table}").scan().to_arrow().to_pylist()
        except NoSuchTableError:
            return []

    def lake_commits(self, table: str = "events") -> list[dict[str, str]]:
        """The snapshot summaries of ``table``, oldest first."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            loaded = self.iceberg_catalog().load_table(f"{self.namespace}.{table}")
        except NoSuchTableError:
            return []
        return [
            dict(s.summary.additional_properties) | {"operation": s.summary.operation.value}
            for s in sorted(loaded.snapshots(), key=lambda s: s.timestamp_ms)
        ]

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
                "SELECT window_start, page, event_type, events, users, sessions FROM {s}.click_aggregates"
            )
        }

    def funnel(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {
            (to_ms(w), stage): (events, sessions)
            for w, stage, events, sessions in self.rows("SELECT window_start, stage, events, sessions FROM {s}.click_funnel")
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the sink holds, comparable before and after a replay."""
        tables = {
            "aggregates": "SELECT * FROM {s}.click_aggregates ORDER BY 1, 2, 3",
            "funnel": "SELECT * FROM {s}.click_funnel ORDER BY 1, 2",
            "dead": "SELECT topic, kafka_partition, kafka_offset, reason, batch_id FROM {s}.click_dead_letters ORDER BY 1, 2, 3",
            "late": "SELECT topic, kafka_partition, kafka_offset, batch_id FROM {s}.click_late_events ORDER BY 1, 2, 3",
            "users": "SELECT count(*) FROM {s}.click_window_users",
            "sessions": "SELECT count(*) FROM {s}.click_window_sessions",
            "progress": "SELECT last_batch_id, watermark, offsets, committed_at FROM {s}.stream_progress",
            "batches": "SELECT batch_id, committed_at FROM {s}.stream_batches ORDER BY 1",
        }
        return {name: self.rows(sql) for name, sql in tables.items()}

    def delete_checkpoint(self) -> int:
        """Delete the whole checkpoint folder (what an operator does to "start over"); objects removed."""
        keys = [
            o["Key"]
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"checkpoints/{self.name}/")
            for o in page.get("Contents", [])
        ]
        for key in keys:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        return len(keys)

    def committed_offsets(self, query_name: str | None = None) -> int:
        rows = self.rows("SELECT offsets FROM {s}.stream_progress WHERE query_name = %s", query_name or self.name)
        if not rows:
            return 0
        return sum(int(o) for parts in rows[0][0].values() for o in parts.values())

    def checkpoint_keys(self, folder: str) -> list[str]:
        prefix = f"checkpoints/{self.name}/{folder}/"
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(
            (o["Key"] for o in listing.get("Contents", []) if o["Key"].rsplit("/", 1)[-1].isdigit()),
            key=lambda k: int(k.rsplit("/", 1)[-1]),
        )


# --------------------------------------------------------------- the answers
def funnel_stage(event: dict[str, Any]) -> str | None:
    if event["session_seq"] == 0:
        return "session_start"
    if event["event_type"] == "page_view" and event["page"].startswith("/product/"):
        return "product_view"
    if event["event_type"] in ("add_to_cart", "checkout", "purchase"):
        return event["event_type"]
    return None


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


# ------------------------------------------------------------------ outages
class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to ``port``: :meth:`cut` makes the service unreachable through
    it (open connections dropped, new ones refused) until :meth:`restore`, without touching the
    service itself (which the rest of the stack keeps using)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.down = threading.Event()
        self.closed = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            self.open.clear()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
