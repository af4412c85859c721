"""Drive an extraction operator as Airflow does (execute, defer, run the trigger,
resume), against the real services, without a scheduler: the operator, trigger,
registry, Livy, Spark, S3, the Iceberg catalog and MariaDB are all real."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pymysql
import yaml
from airflow.exceptions import TaskDeferred

from operators.extraction import ExtractWindowOperator
from spark_jobs.common.lake_state import LakeState, PipelineState
from spotlake import config, lake
from spotlake.registry import Cluster, Registry


@dataclass
class FakeTaskInstance:
    try_number: int = 1
    start_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    xcom: dict[str, Any] = field(default_factory=dict)  # what the task pushed (its extra links' values)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError(f"{trigger!r} ended without an event")


def run_operator(
    operator: Any, start: datetime, end: datetime, max_deferrals: int = 50, context: dict[str, Any] | None = None
) -> Any:
    context = context if context is not None else {}
    context.update(
        {
            "data_interval_start": start,
            "data_interval_end": end,
            "ti": FakeTaskInstance(),
            "outlet_events": defaultdict(SimpleNamespace),
        }
    )
    step: Any = lambda: operator.execute(context)  # noqa: E731
    for _ in range(max_deferrals):
        try:
            return step()
        except TaskDeferred as deferred:
            event = asyncio.run(_first_event(deferred.trigger))
            method = getattr(operator, deferred.method_name)
            kwargs = deferred.kwargs or {}
            step = lambda m=method, e=event, k=kwargs: m(context, event=e.payload, **k)  # noqa: E731
    raise AssertionError("too many deferrals")


class ExtractionEnv:
    """A pool with one local cluster, a lake (bucket and catalog namespace), a source secret
    and a pipelines file of its own."""

    def __init__(
        self,
        mysql: dict[str, str],
        moto_endpoint: str,
        livy_url: str,
        tmp: Path,
        catalog_secret: str,
        register_cluster: bool = True,
        sessions: dict[str, Any] | None = None,
    ) -> None:
        self.mysql = mysql
        self.moto_endpoint = moto_endpoint
        self.livy_url = livy_url
        self.tag = uuid.uuid4().hex[:8]
        self.pool = f"itest{self.tag}"
        self.bucket = f"lake-{self.tag}"
        self.namespace = f"itest_{self.tag}"
        self.catalog_secret = catalog_secret
        self.secret_id = f"spotlake/itest/{self.tag}"
        self.prefix = f"itest-{self.tag}"
        self.config_path = tmp / "pipelines.yaml"
        # The pool's settings: windows run as Livy batches unless ``sessions`` enables warm sessions.
        self.pools_path = tmp / "pools.yaml"
        self.pools_path.write_text(
            yaml.safe_dump(
                {
                    "pools": {
                        self.pool: {
                            "serves": {"pipelines": ["*"]},
                            "local": {"master": "local[1]"},
                            "sessions": sessions if sessions is not None else {"enabled": False},
                        }
                    }
                }
            )
        )
        self.s3 = boto3.client("s3")  # the local S3 server, through AWS_ENDPOINT_URL_S3
        self.s3.create_bucket(Bucket=self.bucket)
        self.put_secret(mysql)
        self.registry = Registry(boto3.client("dynamodb", endpoint_url=moto_endpoint), prefix=self.prefix)
        self.registry.create_tables()
        self.lake_state = LakeState(self.registry.client, self.prefix)
        if register_cluster:
            cluster = Cluster(pool=self.pool, cluster_id=f"local-{self.tag}", provider="local", state="")
            self.registry.put_launching(cluster)
            self.registry.mark_ready(cluster, livy_url)
        self.pipelines: list[dict[str, Any]] = []
        self.sources: dict[str, str] = {"src": self.secret_id}

    def environ(self) -> dict[str, str]:
        """The settings a task of this environment reads from the environment."""
        return {
            "SPOTLAKE_PIPELINES": str(self.config_path),
            "SPOTLAKE_POOLS": str(self.pools_path),
            "SPOTLAKE_REGISTRY_PREFIX": self.prefix,
        }

    def put_secret(self, mysql: dict[str, str], secret_id: str | None = None) -> str:
        sm = boto3.client("secretsmanager", endpoint_url=self.moto_endpoint)
        secret = json.dumps(
            {
                "host": mysql["host"],
                "port": int(mysql["port"]),
                "database": mysql["database"],
                "username": mysql["user"],
                "password": mysql["password"],
            }
        )
        secret_id = secret_id or self.secret_id
        try:
            sm.create_secret(Name=secret_id, SecretString=secret)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=secret_id, SecretString=secret)
        return secret_id

    def add_pipeline(self, name: str, table: str, source: str = "src", **extra: Any) -> str:
        self.pipelines.append(
            {
                "name": name,
                "source": source,
                "database": self.mysql["database"],
                "table": table,
                "primary_key": "id",
                "cursor": "updated_at",
                "soft_delete": "deleted_at",
                "pool": self.pool,
                **extra,
            }
        )
        self.write_config()
        return name

    def add_source(self, name: str, mysql: dict[str, str]) -> None:
        self.sources[name] = self.put_secret(mysql, f"{self.secret_id}/{name}")
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "lake": {
                        "catalog": "lake",
                        "type": "jdbc",
                        "secret_id": self.catalog_secret,
                        "warehouse": f"s3://{self.bucket}/warehouse",
                        "namespace": self.namespace,
                    },
                    "defaults": {"schedule": "*/5 * * * *", "lookback": "5m"},
                    "sources": {name: {"secret_id": sid} for name, sid in self.sources.items()},
                    "pipelines": self.pipelines,
                }
            )
        )

    def operator(self, pipeline: str) -> ExtractWindowOperator:
        return ExtractWindowOperator(
            task_id=f"extract_{pipeline}", pipeline_name=pipeline, pool_name=self.pool, poll_interval=1.0
        )

    def config(self) -> config.PipelinesConfig:
        return config.load(self.config_path)

    def lake_table(self, pipeline: str, changes: bool = False) -> Any:
        """The pipeline's table read through pyiceberg (not through the job's Spark code)."""
        return lake.read(self.config(), pipeline, changes=changes)

    def state(self, pipeline: str) -> PipelineState:
        state = self.lake_state.get(pipeline)
        assert state is not None, f"{pipeline} has no lake state"
        return state

    def connect(self) -> pymysql.Connection:
        m = self.mysql
        return pymysql.connect(
            host=m["host"], port=int(m["port"]), user=m["user"], password=m["password"], database=m["database"], autocommit=True
        )


# ----------------------------------------------------------- shared helpers
FIVE = timedelta(minutes=5)


COLUMNS = ("id", "customer", "status", "amount", "updated_at", "deleted_at")


def aws_connection(moto_endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {
                "region_name": "us-east-1",
                "endpoint_url": moto_endpoint,
                "service_config": {"s3": {"endpoint_url": os.environ["AWS_ENDPOINT_URL_S3"]}},
            },
        }
    )


def create_table(env: ExtractionEnv, name: str, indexed: bool = True) -> str:
    table = f"{name}_{env.tag}"
    with env.connect().cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"""CREATE TABLE {table} (
            id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
            amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL
            {", KEY ix_updated (updated_at)" if indexed else ""})""")
    return table


def floor5(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return moment.replace(minute=moment.minute - moment.minute % 5)


def base_window() -> datetime:
    """A window start two hours back (before any snapshot's watermark)."""
    return floor5(datetime.now(UTC)) - timedelta(hours=2)


def naive(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")


def source_rows(env: ExtractionEnv, table: str) -> dict[int, dict[str, Any]]:
    """The table as pymysql reads it: the independent side of every comparison."""
    conn = env.connect()
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {table}")
        rows = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()}
    conn.close()
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return value


def lake_rows(env: ExtractionEnv, pipeline: str) -> dict[int, dict[str, Any]]:
    """The current-state table as pyiceberg reads it, in the shape of :func:`source_rows`."""
    rows = env.lake_table(pipeline).to_pylist()
    keyed = {r["id"]: {k: _plain(r[k]) for k in COLUMNS} for r in rows}
    assert len(keyed) == len(rows), "the current-state table holds a primary key twice"
    return keyed


def insert(env: ExtractionEnv, table: str, rows: list[tuple[int, str, str, Decimal, datetime]]) -> None:
    with env.connect().cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, NULL)", [(i, c, s, a, naive(t)) for i, c, s, a, t in rows]
        )


def update(env: ExtractionEnv, table: str, sql: str, *params: Any) -> None:
    with env.connect().cursor() as cur:
        cur.execute(f"UPDATE {table} SET {sql}", params)
