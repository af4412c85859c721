"""Each service of the local stack really answers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import uuid
from typing import Any

import boto3
import psycopg2
import pyarrow.parquet as pq
import pymysql
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from spotlake.stack import PROJECT_ROOT


def test_mariadb_answers_a_query(mysql: dict[str, str]) -> None:
    conn = pymysql.connect(
        host=mysql["host"],
        port=int(mysql["port"]),
        user=mysql["user"],
        password=mysql["password"],
        database=mysql["database"],
    )
    with conn.cursor() as cur:
        cur.execute("SELECT 6 * 7, VERSION()")
        answer, version = cur.fetchone()
    conn.close()
    assert answer == 42
    assert "MariaDB" in version


def test_postgres_answers_a_query(postgres: dict[str, str]) -> None:
    conn = psycopg2.connect(
        host=postgres["host"],
        port=int(postgres["port"]),
        user=postgres["user"],
        password=postgres["password"],
        dbname=postgres["database"],
    )
    with conn.cursor() as cur:
        cur.execute("SELECT 6 * 7, current_user")
        assert cur.fetchone() == (42, postgres["user"])
    conn.close()


def test_the_documented_database_clients_connect(mysql: dict[str, str], postgres: dict[str, str]) -> None:
    """docs/local-stack.md's psql and mariadb commands, with this stack's ports."""
    psql = subprocess.run(
        [
            "psql",
            "-h",
            postgres["host"],
            "-p",
            postgres["port"],
            "-U",
            postgres["user"],
            postgres["database"],
            "-Atc",
            "SELECT 6 * 7",
        ],
        env={**os.environ, "PGPASSWORD": postgres["password"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (psql.returncode, psql.stdout.strip()) == (0, "42"), psql.stderr
    mariadb = subprocess.run(
        [
            "mariadb",
            "-h",
            mysql["host"],
            "-P",
            mysql["port"],
            "-u",
            mysql["user"],
            f"-p{mysql['password']}",
            mysql["database"],
            "-Ne",
            "SELECT 6 * 7",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (mariadb.returncode, mariadb.stdout.strip()) == (0, "42"), mariadb.stderr


def test_kafka_produce_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    sent = [f"message-{i}".encode() for i in range(100)]
    for value in sent:
        producer.produce(topic, value=value, key=b"k")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            received.append(msg.value())
    consumer.close()
    assert received == sent


def test_the_s3_server_and_moto_serve_s3_dynamodb_and_secrets_manager(moto_endpoint: str, s3_endpoint: str, layout: Any) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a/b.txt", Body=b"hello")  # boto3's default CRC32 checksums included
    assert s3.get_object(Bucket=name, Key="a/b.txt")["Body"].read() == b"hello"
    assert (layout.data_dir / "s3" / "objects" / name / "a" / "b.txt").read_bytes() == b"hello"  # on disk
    assert boto3.client("s3").list_objects_v2(Bucket=name)["KeyCount"] == 1  # AWS_ENDPOINT_URL_S3 finds it

    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    ddb.put_item(TableName=name, Item={"pk": {"S": "x"}, "v": {"N": "1"}})
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName=name, Item={"pk": {"S": "x"}, "v": {"N": "2"}}, ConditionExpression="attribute_not_exists(pk)")
    assert ddb.get_item(TableName=name, Key={"pk": {"S": "x"}})["Item"]["v"] == {"N": "1"}

    sm = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
    sm.create_secret(Name=name, SecretString='{"password": "p"}')
    assert json.loads(sm.get_secret_value(SecretId=name)["SecretString"]) == {"password": "p"}


def test_livy_batch_reads_mariadb_over_jdbc_and_writes_parquet_to_s3a(
    mysql: dict[str, str],
    moto_endpoint: str,
    s3_endpoint: str,
    start_livy,
    monkeypatch: pytest.MonkeyPatch,
    job_dependencies: Any,
) -> None:
    """A batch that names the published jars and Python archive reads over JDBC with boto3's
    secret; the same batch without them fails: the local Spark has no driver or boto3 of its own."""
    from airflow.providers.apache.livy.hooks.livy import BatchState, LivyHook

    table = f"probe_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(
        host=mysql["host"],
        port=int(mysql["port"]),
        user=mysql["user"],
        password=mysql["password"],
        database=mysql["database"],
        autocommit=True,
    )
    rows = [(i, f"name-{i}", i * 1.5) for i in range(1, 501)]
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(40), amount DOUBLE)")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", rows)
    conn.close()

    secret_id = f"spotlake/probe/{table}"
    boto3.client("secretsmanager", endpoint_url=moto_endpoint).create_secret(
        Name=secret_id,
        SecretString=json.dumps(
            {
                "host": mysql["host"],
                "port": int(mysql["port"]),
                "database": mysql["database"],
                "username": mysql["user"],
                "password": mysql["password"],
            }
        ),
    )
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)

    url = start_livy("probe")
    host, port = url.removeprefix("http://").split(":")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIVY_PROBE",
        json.dumps({"conn_type": "livy", "host": host, "port": int(port), "schema": "http"}),
    )
    hook = LivyHook(livy_conn_id="livy_probe")
    job = PROJECT_ROOT / "tests" / "integration" / "jobs" / "jdbc_to_s3.py"

    def run(**dependencies: Any) -> tuple[Any, str]:
        batch_id = hook.post_batch(file=str(job), args=[secret_id, table, f"s3a://{bucket}/{table}"], **dependencies)
        deadline = time.monotonic() + 300
        state = hook.get_batch_state(batch_id)
        while state not in hook.TERMINAL_STATES and time.monotonic() < deadline:
            time.sleep(1)
            state = hook.get_batch_state(batch_id)
        return state, "\n".join(hook.get_batch_logs(batch_id, 0, 400)["log"])

    state, log = run()
    assert state in (BatchState.ERROR, BatchState.DEAD), log
    assert "No module named 'boto3'" in log, log
    state, log = run(conf=job_dependencies.spark_conf())
    assert state in (BatchState.ERROR, BatchState.DEAD), log
    assert "ClassNotFoundException: com.mysql.cj.jdbc.Driver" in log, log

    state, log = run(jars=job_dependencies.jars, conf=job_dependencies.spark_conf())
    if state != BatchState.SUCCESS:
        pytest.fail(f"batch ended {state}:\n{log}")

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=table)["Contents"]]
    assert f"{table}/_SUCCESS" in keys
    tables = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys if k.endswith(".parquet")
    ]
    got = sorted((r["id"], r["name"], r["amount"]) for t in tables for r in t.to_pylist())
    assert got == rows
