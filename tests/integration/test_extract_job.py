"""The extraction job against the real MariaDB and moto server, in-process (``run_extraction``).

Needs the local stack's MariaDB and moto server running (``make up``) and the
Spark jars resolved into ``.stack/jars/spark``. Tables, buckets and secrets are
uniquely named and removed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession

from spark_jobs import extract
from spark_jobs.errors import ExtractionError
from spark_jobs.extraction import run_extraction
from spark_jobs.job_config import ExtractJob
from spark_jobs.lake_commit import read_manifest
from spark_jobs.lake_read import read_current
from spotlake.localstack.layout import StackLayout
from spotlake.localstack.services import aws_env, mysql_settings
from spotlake.localstack.services import moto_endpoint as moto_endpoint_of

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JARS_DIR = StackLayout.default().jars("spark")
_MYSQL = mysql_settings(StackLayout.default())
MYSQL = {**_MYSQL, "port": int(_MYSQL["port"])}
MOTO = moto_endpoint_of(StackLayout.default())
AWS_ENV = aws_env(StackLayout.default())
WINDOW = {
    "start": "2026-11-27T14:00:00+00:00",
    "end": "2026-11-27T14:05:00+00:00",
    "read_from": "2026-11-27T13:55:00+00:00",
}
NEXT_WINDOW = {
    "start": "2026-11-27T14:05:00+00:00",
    "end": "2026-11-27T14:10:00+00:00",
    "read_from": "2026-11-27T14:00:00+00:00",
}
# (order_id, email, phone, amount, updated_at, deleted_at)
ROWS = [
    (1, " Ann@Example.com", "5551234567", "10.50", "2026-11-27 13:55:00.000", None),  # lower bound: in
    (2, "bob@example.com", "5559876543", "20.00", "2026-11-27 14:02:30.250", None),
    (3, None, None, "30.00", "2026-11-27 14:04:59.999", "2026-11-27 14:04:59.999"),  # soft-deleted, in
    (4, "cat@example.com", "12", "40.00", "2026-11-27 14:05:00.000", None),  # upper bound: out
    (5, "dan@example.com", "5550000000", "50.00", "2026-11-27 13:54:59.999", None),  # before read_from: out
]


def jar(prefix: str) -> str:
    found = sorted(JARS_DIR.glob(f"{prefix}*.jar"))
    if not found:
        pytest.fail(f"no {prefix}*.jar in {JARS_DIR}; resolve the Spark jars first (make bootstrap)")
    return str(found[-1])


def mysql_connection() -> pymysql.connections.Connection:
    return pymysql.connect(
        host=MYSQL["host"],
        port=MYSQL["port"],
        user=MYSQL["user"],
        password=MYSQL["password"],
        database=MYSQL["database"],
        autocommit=True,
    )


@pytest.fixture(scope="session")
def aws(moto_endpoint: str, mysql: dict[str, str]) -> Iterator[None]:
    """moto server and MariaDB, started by the shared fixtures if they are not running."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        yield


def end_jvm() -> None:
    """End this process's Spark JVM: ``spark.jars`` is only read when the JVM starts, so a
    JVM started without them (by an earlier test module) cannot load the JDBC driver."""
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


@pytest.fixture(scope="session")
def spark(aws: None) -> Iterator[SparkSession]:
    jars = ",".join([jar("mysql-connector-j"), jar("hadoop-aws"), jar("aws-java-sdk-bundle")])
    existing = SparkSession.getActiveSession()
    if existing is not None:
        if "mysql-connector-j" in existing.sparkContext.getConf().get("spark.jars", ""):
            yield existing
            return
        existing.stop()
        end_jvm()
    session = (
        SparkSession.builder.master("local[2]")
        .appName("spotlake-integration-extract")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.jars", jars)
        .config("spark.hadoop.fs.s3a.endpoint", MOTO)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .config(
            "spark.hadoop.fs.s3a.aws.credentials.provider",
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        )
        .config("spark.hadoop.fs.s3a.access.key", "testing")
        .config("spark.hadoop.fs.s3a.secret.key", "testing")
        .config("spark.hadoop.fs.s3a.change.detection.mode", "none")
        .getOrCreate()
    )
    yield session
    # Another module's fixture may already have ended this JVM (to start one with other jars).
    with contextlib.suppress(Exception):
        session.stop()


@pytest.fixture(scope="session")
def secrets(aws: None) -> Iterator[dict[str, str]]:
    """Secret ids: ``good`` points at MariaDB, ``unreachable`` at a closed port."""
    client = boto3.client("secretsmanager")
    suffix = uuid.uuid4().hex[:8]
    ids = {"good": f"spotlake/test/extract-{suffix}", "unreachable": f"spotlake/test/extract-{suffix}-down"}
    for name, port in (("good", MYSQL["port"]), ("unreachable", 1)):
        client.create_secret(
            Name=ids[name],
            SecretString=json.dumps(
                {
                    "host": MYSQL["host"],
                    "port": port,
                    "database": MYSQL["database"],
                    "username": MYSQL["user"],
                    "password": MYSQL["password"],
                }
            ),
        )
    yield ids
    for secret_id in ids.values():
        client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def table(mysql: dict[str, str]) -> Iterator[str]:
    name = f"orders_{uuid.uuid4().hex[:10]}"
    conn = mysql_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE `{name}` (order_id BIGINT PRIMARY KEY, email VARCHAR(100), phone VARCHAR(20), "
                "amount DECIMAL(12,2), updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL, "
                "KEY ix_updated_at (updated_at))"
            )
            cur.executemany(f"INSERT INTO `{name}` VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        conn.close()


def execute(sql: str, *params: Any) -> None:
    conn = mysql_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
    finally:
        conn.close()


def document(table: str, secret_id: str, root: str, **changes: Any) -> dict[str, Any]:
    """A job document as the operator sends it (before base64url encoding)."""
    doc: dict[str, Any] = {
        "job_key": f"test_orders#{WINDOW['start']}",
        "attempt": 1,
        "run_id": uuid.uuid4().hex,
        "pipeline": "test_orders",
        "source": {"secret_id": secret_id},
        "database": MYSQL["database"],
        "table": table,
        "primary_key": ["order_id"],
        "cursor": "updated_at",
        "soft_delete": "deleted_at",
        "window": WINDOW,
        "transforms": [
            {"op": "function", "name": "shop.normalise_email"},
            {"op": "mask", "columns": {"phone": {"keep_last": 4}}},
            {"op": "rename", "columns": {"order_id": "id"}},
        ],
        "output": {"root": root},
        "read": {"fetch_size": 1000, "partition_rows": 250000, "max_partitions": 2},
    }
    doc.update(changes)
    return doc


def job(table: str, secret_id: str, root: str, **changes: Any) -> ExtractJob:
    return ExtractJob.from_dict(document(table, secret_id, root, **changes))


def lake_rows(spark: SparkSession, manifest: dict[str, Any]) -> list[tuple[Any, ...]]:
    df = spark.read.parquet(*manifest["files"])
    return sorted(
        tuple(r) for r in df.select("id", "email", "phone", "amount", "updated_at", "deleted_at").collect()
    )


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


EXPECTED = [
    (1, "ann@example.com", "******4567", Decimal("10.50"), ts("2026-11-27 13:55:00.000"), None),
    (2, "bob@example.com", "******6543", Decimal("20.00"), ts("2026-11-27 14:02:30.250"), None),
    (3, None, None, Decimal("30.00"), ts("2026-11-27 14:04:59.999"), ts("2026-11-27 14:04:59.999")),
]


def manifests_in(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "_manifests").iterdir())


def run_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data" / "window_start=20261127T140000Z").iterdir())


# ------------------------------------------------------------------------ tests
def test_extracts_the_window_and_commits_a_manifest(
    spark: SparkSession, secrets: dict[str, str], table: str, tmp_path: Path
) -> None:
    root = f"file:{tmp_path}/lake"
    first = job(table, secrets["good"], root)
    manifest = run_extraction(spark, first)

    assert manifest["rows_read"] == 3 and manifest["rows_written"] == 3
    assert manifest["cursor_min"] == "2026-11-27T13:55:00.000000+00:00"
    assert manifest["cursor_max"] == "2026-11-27T14:04:59.999000+00:00"
    assert (manifest["primary_key"], manifest["cursor"], manifest["soft_delete"]) == (
        ["id"],
        "updated_at",
        "deleted_at",
    )
    assert manifest["window"] == WINDOW
    assert (manifest["job_key"], manifest["attempt"], manifest["run_id"]) == (first.job_key, 1, first.run_id)
    assert (manifest["pipeline"], manifest["database"], manifest["table"]) == ("test_orders", "shop", table)
    assert manifest["data_path"] == f"{root}/data/window_start=20261127T140000Z/run={first.run_id}"
    assert manifest["files"] and all(
        f.startswith(manifest["data_path"] + "/part-") for f in manifest["files"]
    )
    assert set(manifest["timings"]) >= {"secret_s", "validate_s", "read_s", "write_s", "commit_s"}
    assert [f["name"] for f in json.loads(manifest["schema"])["fields"]] == [
        "id",
        "email",
        "phone",
        "amount",
        "updated_at",
        "deleted_at",
    ]
    committed = read_manifest(spark, f"{root}/_manifests/window_start=20261127T140000Z.json")
    assert committed == {k: v for k, v in manifest.items() if k != "after_commit"}
    assert lake_rows(spark, manifest) == EXPECTED

    # Re-running the window gives the same rows and still one manifest, now naming the new run.
    second = run_extraction(spark, job(table, secrets["good"], root, attempt=2))
    assert lake_rows(spark, second) == EXPECTED
    assert manifests_in(tmp_path / "lake") == ["window_start=20261127T140000Z.json"]
    assert second["data_path"] != manifest["data_path"]
    # The first run's directory is younger than the retention: kept (it could be a concurrent writer).
    assert run_dirs(tmp_path / "lake") == sorted([f"run={first.run_id}", f"run={second['run_id']}"])

    third = run_extraction(spark, job(table, secrets["good"], root, output={"root": root, "retention_s": 0}))
    assert lake_rows(spark, third) == EXPECTED
    assert run_dirs(tmp_path / "lake") == [f"run={third['run_id']}"]
    assert len(third["after_commit"]["removed_runs"]) == 2


def test_failures_name_the_cause_and_leave_the_manifest_untouched(
    spark: SparkSession, secrets: dict[str, str], table: str, tmp_path: Path
) -> None:
    root = f"file:{tmp_path}/lake"
    run_extraction(spark, job(table, secrets["good"], root))
    manifest_file = tmp_path / "lake" / "_manifests" / "window_start=20261127T140000Z.json"
    committed = manifest_file.read_bytes()

    with pytest.raises(ExtractionError) as caught:
        run_extraction(spark, job(f"{table}_gone", secrets["good"], root))
    assert str(caught.value) == (
        f"pipeline test_orders: table shop.{table}_gone does not exist in the source (renamed or dropped?) "
        "— fix the table name in config/pipelines.yaml"
    )

    unknown = [{"op": "hash", "columns": ["emial"]}]
    with pytest.raises(ExtractionError) as caught:
        run_extraction(spark, job(table, secrets["good"], root, transforms=unknown))
    assert str(caught.value).startswith(
        f"pipeline test_orders (shop.{table}): transform #1 (hash) names unknown column 'emial'; "
        "columns are: order_id, email, phone, amount, updated_at, deleted_at"
    )

    with pytest.raises(ExtractionError) as caught:
        run_extraction(spark, job(table, secrets["unreachable"], root))
    assert str(caught.value).startswith(
        f"pipeline test_orders: cannot connect to MySQL at 127.0.0.1:1 for table shop.{table}"
    )
    assert MYSQL["password"] not in str(caught.value)

    execute(f"ALTER TABLE `{table}` DROP INDEX ix_updated_at")
    with pytest.raises(ExtractionError) as caught:
        run_extraction(spark, job(table, secrets["good"], root))
    assert str(caught.value).startswith(
        f"pipeline test_orders (shop.{table}): cursor column 'updated_at' is not the first column of "
        "any index"
    )

    assert manifest_file.read_bytes() == committed
    assert manifests_in(tmp_path / "lake") == ["window_start=20261127T140000Z.json"]


def test_read_current_keeps_the_newest_version_of_each_row(
    spark: SparkSession, secrets: dict[str, str], table: str, tmp_path: Path
) -> None:
    root = f"file:{tmp_path}/lake"
    run_extraction(spark, job(table, secrets["good"], root))
    execute(
        f"UPDATE `{table}` SET email = 'bob@new.example', updated_at = '2026-11-27 14:07:00.000' "
        "WHERE order_id = 2"
    )
    execute(
        f"UPDATE `{table}` SET deleted_at = '2026-11-27 14:08:00.000', "
        "updated_at = '2026-11-27 14:08:00.000' WHERE order_id = 1"
    )
    nxt = run_extraction(
        spark,
        job(table, secrets["good"], root, window=NEXT_WINDOW, job_key=f"test_orders#{NEXT_WINDOW['start']}"),
    )
    # Rows 2 and 1 were updated; row 4 sits at the old window's end; row 3 is in the lookback overlap.
    assert nxt["rows_read"] == 4

    current = {r["id"]: r for r in read_current(spark, root).collect()}
    assert sorted(current) == [1, 2, 3, 4]
    assert current[2]["email"] == "bob@new.example"
    assert current[1]["deleted_at"] == ts("2026-11-27 14:08:00.000")
    live = sorted(r["id"] for r in read_current(spark, root, include_deleted=False).collect())
    assert live == [2, 4]


def test_large_window_is_read_in_key_partitions(
    spark: SparkSession, secrets: dict[str, str], table: str, tmp_path: Path
) -> None:
    execute(
        f"INSERT INTO `{table}` SELECT seq + 100, CONCAT('u', seq, '@example.com'), NULL, seq, "
        "'2026-11-27 14:01:00.000' + INTERVAL seq * 100000 MICROSECOND, NULL FROM seq_1_to_500"
    )
    root = f"file:{tmp_path}/lake"
    manifest = run_extraction(
        spark,
        job(
            table, secrets["good"], root, read={"fetch_size": 100, "partition_rows": 100, "max_partitions": 2}
        ),
    )
    assert manifest["read_partitions"] == 2 and len(manifest["files"]) == 2
    assert manifest["rows_read"] == manifest["rows_written"] == 503
    ids = sorted(r["id"] for r in spark.read.parquet(*manifest["files"]).select("id").collect())
    assert ids == [1, 2, 3, *range(101, 601)]


def test_empty_window_commits_zero_rows_with_the_schema(
    spark: SparkSession, secrets: dict[str, str], table: str, tmp_path: Path
) -> None:
    root = f"file:{tmp_path}/lake"
    empty = {
        "start": "2026-11-27T15:00:00+00:00",
        "end": "2026-11-27T15:05:00+00:00",
        "read_from": "2026-11-27T15:00:00+00:00",
    }
    manifest = run_extraction(spark, job(table, secrets["good"], root, window=empty))
    assert (manifest["rows_read"], manifest["rows_written"]) == (0, 0)
    assert manifest["cursor_min"] is None and manifest["cursor_max"] is None
    assert spark.read.parquet(*manifest["files"]).count() == 0


def test_s3a_output_on_moto(spark: SparkSession, secrets: dict[str, str], table: str) -> None:
    s3 = boto3.client("s3")
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    root = f"s3a://{bucket}/raw/test_orders"
    try:
        first = run_extraction(spark, job(table, secrets["good"], root))
        assert lake_rows(spark, first) == EXPECTED
        second = run_extraction(
            spark, job(table, secrets["good"], root, output={"root": root, "retention_s": 0})
        )
        assert lake_rows(spark, second) == EXPECTED

        key = "raw/test_orders/_manifests/window_start=20261127T140000Z.json"
        committed = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert committed["run_id"] == second["run_id"] and committed["files"] == second["files"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="raw/")["Contents"]]
        assert [k for k in keys if "_manifests/" in k] == [key]
        assert not [k for k in keys if f"run={first['run_id']}" in k]  # older than retention 0: removed
        assert sorted(r["id"] for r in read_current(spark, root).collect()) == [1, 2, 3]
    finally:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_main_prints_the_manifest_or_one_error_line(
    spark: SparkSession,
    secrets: dict[str, str],
    table: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = document(table, secrets["good"], f"file:{tmp_path}/lake")
    encoded = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    assert extract.main(["--job", encoded]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("SPOTLAKE_MANIFEST: ")
    assert json.loads(out[-1].removeprefix("SPOTLAKE_MANIFEST: "))["rows_written"] == 3
    assert MYSQL["password"] not in out[-1]

    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({**doc, "table": "no_such_table"}))
    assert extract.main(["--job-file", str(job_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "SPOTLAKE_ERROR: pipeline test_orders: table shop.no_such_table does not exist in the "
        "source (renamed or dropped?) — fix the table name in config/pipelines.yaml"
    )
    assert not spark.sparkContext._jsc.sc().isStopped()  # main leaves a session it did not start running


def test_entry_script_runs_from_the_shipped_zip(tmp_path: Path) -> None:
    package = tmp_path / "spark_jobs.zip"
    with zipfile.ZipFile(package, "w") as archive:
        for path in sorted((PROJECT_ROOT / "spark_jobs").rglob("*.py")):
            archive.write(path, str(path.relative_to(PROJECT_ROOT)))
    env = {**os.environ, "PYTHONPATH": str(package)}
    bad = base64.urlsafe_b64encode(b'{"pipeline": "test_orders", "attempt": 0}').decode()
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(PROJECT_ROOT / "spark_jobs" / "extract.py"), "--job", bad],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("SPOTLAKE_ERROR: pipeline test_orders: job field ")
    )
