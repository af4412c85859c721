"""In-process runs of the Spark jobs (``run_extraction``, ``run_maintenance``) against the real
MariaDB, the registry on moto server, the lake's Iceberg catalog on PostgreSQL and its files on
the local S3 server: one Spark session for the test session, and per test a pipeline of its own
(source table, secrets, registry prefix, Iceberg namespace). Attempts are claimed in the
registry's jobs table as the operators claim them, so the commit lock's ownership checks are the
real ones. The lake is read back through pyiceberg and compared with pymysql's reading of the
source.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pymysql
from pyspark import SparkContext
from pyspark.sql import SparkSession

from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.common.lake_state import LakeState, WindowRecord, iso, parse_iso, snapshot_job_key
from spark_jobs.extraction.run import run_extraction
from spark_jobs.maintenance.run import MaintenanceJob, run_maintenance
from spotlake import config, lake, maven
from spotlake.registry import Cluster, Registry
from spotlake.stack import StackLayout

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
FIVE = timedelta(minutes=5)


def end_jvm() -> None:
    """End this process's Spark JVM: ``spark.jars`` and ``spark.sql.extensions`` are only read
    when the JVM and session start, so one started without them cannot serve these tests."""
    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()  # the JVM exits when its stdin closes
        proc.wait(timeout=60)
    SparkContext._gateway = None
    SparkContext._jvm = None


def session_jars() -> list[str]:
    """The jars of an in-process session: the published job dependencies, as every batch names
    them (Iceberg, JDBC drivers, Kafka), and the s3a jars that stand in for EMRFS."""
    from spotlake import artifacts, job_dependencies

    manifest = job_dependencies.load(artifacts.artifacts_root())
    return [*manifest.jars, *(str(path) for path in maven.jar_files(StackLayout.default(), "spark"))]


def iceberg_session(s3_endpoint: str) -> Iterator[SparkSession]:
    """A local[2] session with every Spark jar (Iceberg, JDBC, Kafka, s3a) and Iceberg's SQL
    extensions; a JVM started without them is ended first (they are read at start only)."""
    jars = session_jars()
    existing = SparkSession.getActiveSession()
    if existing is not None:
        conf = existing.sparkContext.getConf()
        if "iceberg-spark-runtime" in conf.get("spark.jars", "") and ICEBERG_EXTENSIONS in conf.get("spark.sql.extensions", ""):
            yield existing
            return
        existing.stop()
        end_jvm()
    session = (
        SparkSession.builder.master("local[2]")
        .appName("spotlake-integration-extract")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .config("spark.hadoop.fs.s3a.endpoint", s3_endpoint)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")  # s3:// as on EMR
        .config("spark.hadoop.fs.s3a.aws.credentials.provider", "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
        .config("spark.hadoop.fs.s3a.access.key", "testing")
        .config("spark.hadoop.fs.s3a.secret.key", "testing")
        .getOrCreate()
    )
    yield session
    with contextlib.suppress(Exception):
        session.stop()


@dataclass
class Lake:
    """A pipeline of its own: source table, secrets, registry prefix, Iceberg namespace."""

    mysql: dict[str, str]
    catalog_secret: str
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        self.table = f"orders_{self.tag}"
        self.pipeline = f"p_{self.tag}"
        self.prefix = f"job-{self.tag}"
        self.bucket = f"lake-{self.tag}"
        self.namespace = f"job_{self.tag}"
        self.secret_id = f"spotlake/test/source-{self.tag}"
        boto3.client("s3").create_bucket(Bucket=self.bucket)
        boto3.client("secretsmanager").create_secret(
            Name=self.secret_id,
            SecretString=json.dumps(
                {
                    "host": self.mysql["host"],
                    "port": int(self.mysql["port"]),
                    "database": self.mysql["database"],
                    "username": self.mysql["user"],
                    "password": self.mysql["password"],
                }
            ),
        )
        self.registry = Registry(boto3.client("dynamodb"), prefix=self.prefix)
        self.registry.create_tables()
        self.store = LakeState(self.registry.client, self.prefix)
        self.cluster = Cluster(pool="p", cluster_id="c", provider="local", state="")
        self.registry.put_launching(self.cluster)
        self.registry.mark_ready(self.cluster, "http://unused")
        self.config_path = self.tmp / "pipelines.yaml"
        self.config_path.write_text(
            json.dumps(
                {
                    "lake": {
                        "catalog": "lake",
                        "type": "jdbc",
                        "secret_id": self.catalog_secret,
                        "warehouse": f"s3://{self.bucket}/warehouse",
                        "namespace": self.namespace,
                    },
                    "sources": {"src": {"secret_id": self.secret_id}},
                    "pipelines": [
                        {
                            "name": self.pipeline,
                            "source": "src",
                            "database": self.mysql["database"],
                            "table": self.table,
                            "primary_key": "id",
                            "cursor": "updated_at",
                            "soft_delete": "deleted_at",
                        }
                    ],
                }
            )
        )

    def connect(self) -> pymysql.Connection:
        m = self.mysql
        return pymysql.connect(
            host=m["host"], port=int(m["port"]), user=m["user"], password=m["password"], database=m["database"], autocommit=True
        )

    def sql(self, statement: str, *params: Any) -> None:
        with self.connect().cursor() as cur:
            cur.execute(statement, params or None)

    def claim(self, job_key: str) -> tuple[str, int]:
        """A new attempt of ``job_key``, claimed as the operator claims it: (run id, attempt)."""
        run_id = uuid.uuid4().hex
        job = self.registry.claim_job(job_key, "p", self.cluster, run_id, self.registry.get_job(job_key))
        return run_id, job.attempt

    def document(self, job_key: str, run_id: str, attempt: int, **changes: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "job_key": job_key,
            "attempt": attempt,
            "run_id": run_id,
            "pipeline": self.pipeline,
            "kind": "snapshot" if job_key.endswith("#snapshot") else "window",
            "source": {"secret_id": self.secret_id},
            "database": self.mysql["database"],
            "table": self.table,
            "primary_key": ["id"],
            "cursor": "updated_at",
            "soft_delete": "deleted_at",
            "transforms": [
                {"op": "function", "name": "shop.normalise_email"},
                {"op": "mask", "columns": {"phone": {"keep_last": 4}}},
            ],
            "lake": {
                "catalog": "lake",
                "type": "jdbc",
                "warehouse": f"s3://{self.bucket}/warehouse",
                "namespace": self.namespace,
                "current": self.pipeline,
                "changes": f"{self.pipeline}_changes",
                "secret_id": self.catalog_secret,
            },
            "registry": {"prefix": self.prefix, "region": "us-east-1"},
            "read": {"fetch_size": 1000, "chunk_rows": 40},
            "commit": {"lease_s": 30, "wait_s": 300},
        }
        doc.update(changes)
        return doc

    def snapshot(self, spark: SparkSession, **changes: Any) -> dict[str, Any]:
        self.store.ensure(self.pipeline, True, datetime.now(UTC))
        key = snapshot_job_key(self.pipeline)
        run_id, attempt = self.claim(key)
        return run_extraction(spark, ExtractJob.from_dict(self.document(key, run_id, attempt, **changes)))

    def plan(self, start: datetime) -> WindowRecord:
        """Plan the window starting at ``start`` as the operator does (from the watermark)."""
        state = self.store.get(self.pipeline)
        assert state is not None and state.watermark is not None
        read_from = min(start, parse_iso(state.watermark)) - FIVE
        label = start.strftime("%Y%m%dT%H%M%SZ")
        return self.store.plan_window(
            WindowRecord(
                pipeline=self.pipeline,
                window=label,
                job_key=f"{self.pipeline}#{label}",
                start=iso(start),
                end=iso(start + FIVE),
                read_from=iso(read_from),
                planned_at=iso(datetime.now(UTC)),
            )
        )

    def window_job(self, start: datetime, **changes: Any) -> ExtractJob:
        record = self.plan(start)
        run_id, attempt = self.claim(record.job_key)
        window = {"start": record.start, "end": record.end, "read_from": record.read_from}
        return ExtractJob.from_dict(self.document(record.job_key, run_id, attempt, window=window, **changes))

    def window(self, spark: SparkSession, start: datetime, **changes: Any) -> dict[str, Any]:
        return run_extraction(spark, self.window_job(start, **changes))

    def maintenance_job(self, **options: Any) -> MaintenanceJob:
        key = f"{self.pipeline}#maintenance-{uuid.uuid4().hex[:6]}"
        run_id, attempt = self.claim(key)
        doc = self.document(key, run_id, attempt)
        return MaintenanceJob.from_dict(
            {k: doc[k] for k in ("job_key", "attempt", "run_id", "pipeline", "lake", "registry", "commit")}
            | {"maintenance": options}
        )

    def maintain(self, spark: SparkSession, **options: Any) -> dict[str, Any]:
        return run_maintenance(spark, self.maintenance_job(**options))

    def iceberg(self, changes: bool = False) -> Any:
        """The pipeline's table as pyiceberg loads it now."""
        return lake.load(config.load(self.config_path), self.pipeline, changes=changes)

    def watermark(self) -> datetime:
        state = self.store.get(self.pipeline)
        assert state is not None and state.watermark is not None
        return parse_iso(state.watermark)

    def lake(self, changes: bool = False) -> list[dict[str, Any]]:
        return lake.read(config.load(self.config_path), self.pipeline, changes=changes).to_pylist()

    def source(self) -> dict[int, tuple[Any, ...]]:
        """The source as pymysql reads it, transformed as the job's transforms do."""
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, email, phone, amount, updated_at, deleted_at FROM {self.table}")
            rows = cur.fetchall()
        conn.close()
        return {r[0]: (r[0], normalised(r[1]), masked(r[2]), r[3], r[4], r[5]) for r in rows}

    def current(self) -> dict[int, tuple[Any, ...]]:
        rows = self.lake()
        keyed = {
            r["id"]: tuple(plain(r[c]) for c in ("id", "email", "phone", "amount", "updated_at", "deleted_at")) for r in rows
        }
        assert len(keyed) == len(rows), "a primary key appears twice in the current-state table"
        return keyed


def normalised(email: str | None) -> str | None:
    return None if email is None else email.strip().lower()


def masked(phone: str | None) -> str | None:
    return None if phone is None else ("*" * max(0, len(phone) - 4)) + phone[-4:]


def plain(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def orders_pipeline(mysql: dict[str, str], catalog_secret: str, tmp: Path) -> Lake:
    """A pipeline over a new orders table (id, email, phone, amount, updated_at, deleted_at)."""
    env = Lake(mysql, catalog_secret, tmp)
    env.sql(
        f"CREATE TABLE {env.table} (id BIGINT PRIMARY KEY, email VARCHAR(100), phone VARCHAR(20), "
        "amount DECIMAL(12,2), updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL, "
        "KEY ix_updated_at (updated_at))"
    )
    return env


def naive(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")


def seed(env: Lake, rows: int, at: datetime) -> None:
    with env.connect().cursor() as cur:
        cur.executemany(
            f"INSERT INTO {env.table} VALUES (%s, %s, %s, %s, %s, NULL)",
            [
                (i, f" User{i}@Example.com", f"555{i:07d}", Decimal(i) / 4, naive(at - timedelta(seconds=i)))
                for i in range(1, rows + 1)
            ],
        )


def next_window(env: Lake) -> datetime:
    """The first window start after the watermark (rows written there are new to the lake)."""
    w = env.watermark().replace(second=0, microsecond=0)
    return w.replace(minute=w.minute - w.minute % 5) + FIVE
