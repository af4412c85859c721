"""Incremental, idempotent extraction end to end: the operator and its trigger drive
real Livy batches of spark_jobs/extract.py on a local cluster, reading the real
MariaDB and committing to moto's S3; the registry is moto's DynamoDB."""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from airflow.exceptions import AirflowException

from spotlake import lake
from spotlake.livy import EndpointLivyHook
from spotlake.windows import Window
from tests.integration.extraction_harness import ExtractionEnv, run_operator

pytestmark = pytest.mark.integration

FIVE = timedelta(minutes=5)


@pytest.fixture(scope="module")
def env(mysql: dict[str, str], moto_endpoint: str, start_livy: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtractionEnv]:
    livy_url = start_livy("extract")
    tmp = tmp_path_factory.mktemp("extraction")
    environment = ExtractionEnv(mysql, moto_endpoint, livy_url, tmp)
    saved = {k: os.environ.get(k) for k in ("SPOTLAKE_PIPELINES", "SPOTLAKE_REGISTRY_PREFIX",
                                            "AIRFLOW_CONN_AWS_DEFAULT")}
    os.environ["SPOTLAKE_PIPELINES"] = str(environment.config_path)
    os.environ["SPOTLAKE_REGISTRY_PREFIX"] = environment.prefix
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": moto_endpoint},
    })
    yield environment
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def create_table(env: ExtractionEnv, name: str, indexed: bool = True) -> str:
    table = f"{name}_{env.tag}"
    with env.connect().cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"""CREATE TABLE {table} (
            id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
            amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL
            {', KEY ix_updated (updated_at)' if indexed else ''})""")
    return table


def base_window() -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now.replace(minute=now.minute - now.minute % 5) - timedelta(hours=2)


def naive(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")


def source_rows(env: ExtractionEnv, table: str) -> dict[int, dict[str, Any]]:
    conn = env.connect()
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, customer, status, amount, updated_at, deleted_at FROM {table}")
        names = [d[0] for d in cur.description]
        rows = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    conn.close()
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return value


def lake_rows(env: ExtractionEnv, pipeline: str) -> dict[int, dict[str, Any]]:
    rows = lake.current_rows(env.s3, env.target(pipeline))
    keys = ("id", "customer", "status", "amount", "updated_at", "deleted_at")
    return {r["id"]: {k: _plain(r[k]) for k in keys} for r in rows}


def window_rowset(env: ExtractionEnv, pipeline: str, label: str) -> list[tuple]:
    manifest = lake.read_manifest(env.s3, env.target(pipeline), label)
    assert manifest is not None
    table = lake.window_table(env.s3, manifest)
    return sorted(tuple(r.values()) for r in table.to_pylist()) if table is not None else []


def manifest_keys(env: ExtractionEnv, pipeline: str) -> list[str]:
    listing = env.s3.list_objects_v2(Bucket=env.bucket, Prefix=f"raw/{pipeline}/_manifests/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def livy_batch_count(env: ExtractionEnv) -> int:
    with urllib.request.urlopen(f"{env.livy_url}/batches?size=1000") as resp:  # noqa: S310
        return int(json.load(resp)["total"])


def run_window(env: ExtractionEnv, pipeline: str, start: datetime) -> dict[str, Any]:
    return run_operator(env.operator(pipeline), start, start + FIVE)


def test_three_windows_then_reruns_leave_lake_equal_to_source(env: ExtractionEnv) -> None:
    table = create_table(env, "orders")
    pipeline = env.add_pipeline(f"orders_{env.tag}", table)
    w1 = base_window()
    w2, w3 = w1 + FIVE, w1 + 2 * FIVE
    conn = env.connect()
    cur = conn.cursor()
    # Window 1: 300 rows spread over the window, the first exactly at its start.
    cur.executemany(
        f"INSERT INTO {table} VALUES (%s, %s, 'placed', %s, %s, NULL)",
        [(i, f"c{i % 37}", Decimal(i) / 4, naive(w1 + timedelta(seconds=i % 300))) for i in range(1, 301)],
    )
    # 1,000 rows sharing one cursor value: exactly the boundary between windows 1 and 2.
    cur.executemany(
        f"INSERT INTO {table} VALUES (%s, %s, 'placed', %s, %s, NULL)",
        [(i, "tie", Decimal("9.99"), naive(w2)) for i in range(1001, 2001)],
    )
    # A row from long before: the pipeline's first window is an initial load and takes it too.
    cur.execute(f"INSERT INTO {table} VALUES (9000, 'old', 'placed', 2.00, %s, NULL)", (naive(w1 - timedelta(days=3)),))
    first = run_window(env, pipeline, w1)
    assert first["rows_written"] == 301

    # Window 2: updates, soft deletes, and a row committed late with a cursor in window 1.
    cur.execute(f"UPDATE {table} SET status = 'paid', updated_at = %s WHERE id <= 50", (naive(w2 + timedelta(seconds=30)),))
    cur.execute(f"UPDATE {table} SET deleted_at = %s, updated_at = %s WHERE id BETWEEN 51 AND 70",
                (naive(w2 + timedelta(seconds=40)), naive(w2 + timedelta(seconds=40))))
    cur.execute(f"INSERT INTO {table} VALUES (5000, 'late', 'placed', 1.00, %s, NULL)",
                (naive(w1 + timedelta(seconds=299, milliseconds=999)),))
    second = run_window(env, pipeline, w2)
    # read_from = w1: window 1's 300 rows again (70 of them now changed) + 1,000 ties + the late row
    assert second["rows_read"] == 300 + 1000 + 1

    # Window 3: more updates, a new row, a delete of a tie row, a row updated twice.
    cur.execute(f"UPDATE {table} SET status = 'shipped', updated_at = %s WHERE id BETWEEN 1 AND 10", (naive(w3),))
    cur.execute(f"UPDATE {table} SET status = 'delivered', updated_at = %s WHERE id = 1", (naive(w3 + timedelta(seconds=1)),))
    cur.execute(f"INSERT INTO {table} VALUES (6000, 'new', 'placed', 3.50, %s, NULL)", (naive(w3 + timedelta(minutes=4)),))
    cur.execute(f"UPDATE {table} SET deleted_at = %s, updated_at = %s WHERE id = 1500",
                (naive(w3 + timedelta(seconds=5)), naive(w3 + timedelta(seconds=5))))
    run_window(env, pipeline, w3)
    conn.close()

    expected = source_rows(env, table)
    assert lake_rows(env, pipeline) == expected
    assert len(manifest_keys(env, pipeline)) == 3
    log = {e.window: e for e in env.registry.extraction_log(pipeline)}
    assert set(log) == {Window(w, w + FIVE, FIVE).label for w in (w1, w2, w3)}
    assert log[Window(w2, w2 + FIVE, FIVE).label].rows_written == 1301

    # Re-running a window replaces it exactly: with the source unchanged, the same row set,
    # still one manifest per window; an older window re-read after later changes still
    # folds into the same merged view.
    label3 = Window(w3, w3 + FIVE, FIVE).label
    before3 = window_rowset(env, pipeline, label3)
    run_window(env, pipeline, w3)
    assert window_rowset(env, pipeline, label3) == before3
    run_window(env, pipeline, w2)
    assert len(manifest_keys(env, pipeline)) == 3
    assert lake_rows(env, pipeline) == expected

    # Two runs of the same window at once submit one batch and both succeed.
    batches_before = livy_batch_count(env)
    results: list[Any] = []

    def run() -> None:
        results.append(run_window(env, pipeline, w3))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0]["batch_id"] == results[1]["batch_id"]
    assert livy_batch_count(env) == batches_before + 1
    assert window_rowset(env, pipeline, label3) == before3
    assert len(manifest_keys(env, pipeline)) == 3
    assert lake_rows(env, pipeline) == expected


def assert_fails_and_changes_nothing(env: ExtractionEnv, pipeline: str, start: datetime, *needles: str) -> str:
    manifests = {k: env.s3.get_object(Bucket=env.bucket, Key=k)["Body"].read() for k in manifest_keys(env, pipeline)}
    log = [e.__dict__ for e in env.registry.extraction_log(pipeline)]
    with pytest.raises(AirflowException) as err:
        run_window(env, pipeline, start)
    message = str(err.value).split("\n--- batch log")[0]
    for needle in needles:
        assert needle in message, message
    after = {k: env.s3.get_object(Bucket=env.bucket, Key=k)["Body"].read() for k in manifest_keys(env, pipeline)}
    assert after == manifests
    assert [e.__dict__ for e in env.registry.extraction_log(pipeline)] == log
    return message


def seeded_pipeline(env: ExtractionEnv, name: str, indexed: bool = True, **extra: Any) -> tuple[str, str, datetime]:
    table = create_table(env, name, indexed=indexed)
    w = base_window()
    with env.connect().cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s, 'c', 'placed', 1.00, %s, NULL)",
                        [(i, naive(w + timedelta(seconds=i))) for i in range(1, 51)])
    return env.add_pipeline(f"{name}_{env.tag}", table, **extra), table, w


def test_unknown_column_in_a_transformation_fails_naming_table_and_column(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "badcol", transforms=[{"rename": {"colour": "color"}}])
    assert_fails_and_changes_nothing(env, pipeline, w, table, "colour")


def test_unindexed_cursor_fails_naming_table_and_cause(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "noindex", indexed=False)
    assert_fails_and_changes_nothing(env, pipeline, w, table, "updated_at", "index")


def test_missing_cursor_column_fails(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "nocursor")
    env.pipelines[-1]["cursor"] = "modified_at"
    env.write_config()
    assert_fails_and_changes_nothing(env, pipeline, w, table, "modified_at")


def test_table_renamed_away_fails_and_keeps_previous_window(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "renamed")
    run_window(env, pipeline, w)
    with env.connect().cursor() as cur:
        cur.execute(f"RENAME TABLE {table} TO {table}_old")
    assert_fails_and_changes_nothing(env, pipeline, w, table, "does not exist")


def test_unreachable_mysql_fails_naming_the_address(env: ExtractionEnv) -> None:
    table = create_table(env, "unreach")
    env.add_source("down", {**env.mysql, "port": "1"})
    pipeline = env.add_pipeline(f"unreach_{env.tag}", table, source="down")
    assert_fails_and_changes_nothing(env, pipeline, base_window(), "127.0.0.1:1")


def test_source_password_never_reaches_livy_requests_or_logs(
    env: ExtractionEnv, layout: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    user = f"reader_{env.tag}"
    root = pymysql.connect(unix_socket=str(layout.run_dir / "mariadb.sock"), user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT SELECT ON `{env.mysql['database']}`.* TO %s@'127.0.0.1'", (user,))
    root.close()
    env.add_source("reader", {**env.mysql, "user": user, "password": password})
    table = create_table(env, "secret")
    w = base_window()
    with env.connect().cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, 'c', 'placed', 1.00, %s, NULL)", (naive(w),))
    pipeline = env.add_pipeline(f"secret_{env.tag}", table, source="reader")
    sent: list[dict[str, Any]] = []
    real_post = EndpointLivyHook.post_batch

    def spy(self: EndpointLivyHook, *args: Any, **kwargs: Any) -> int:
        sent.append(kwargs)
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(EndpointLivyHook, "post_batch", spy)
    with caplog.at_level("DEBUG"):
        result = run_window(env, pipeline, w)
    assert result["rows_written"] == 1
    assert password not in caplog.text
    # The batch request as sent, with its job document decoded: a secret reference only.
    [body] = sent
    job = json.loads(base64.urlsafe_b64decode(body["args"][1]))
    assert job["source"] == {"secret_id": env.sources["reader"]}
    assert password not in json.dumps(body) and password not in json.dumps(job)
    with urllib.request.urlopen(f"{env.livy_url}/batches?size=1000") as resp:  # noqa: S310
        assert password not in resp.read().decode()
    with urllib.request.urlopen(f"{env.livy_url}/batches/{result['batch_id']}/log?size=5000") as resp:  # noqa: S310
        assert password not in resp.read().decode()
    for log_file in layout.log_dir.glob("*.log"):
        assert password not in log_file.read_text(errors="replace"), log_file
