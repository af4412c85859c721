"""Extraction end to end, driven as Airflow drives it: the operator and its trigger run real
Livy batches of spark_jobs/extraction/main.py on a local cluster, reading the real MariaDB and
committing to the lake's Iceberg tables (JDBC catalog on PostgreSQL, files on the local S3
server); the registry is moto's DynamoDB. Every check of the lake compares it with an
independent read of MySQL (pymysql), and reads the lake through pyiceberg, not the job's code.

Windows are labelled by Airflow data intervals; what a run reads starts at the pipeline's
committed watermark. The initial snapshot starts the watermark at the source's clock, so the
windows that must move it lie after "now": their rows carry explicit cursor values there.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pymysql
import pytest
from airflow.exceptions import AirflowException
from airflow.sdk.exceptions import AirflowFailException

from hooks.livy import EndpointLivyHook
from operators.extraction import ExtractWindowOperator
from operators.maintenance import LakeMaintenanceOperator
from operators.reconcile import ReconcileOperator
from spark_jobs.common.lake_state import parse_iso, snapshot_job_key
from spotlake import lake
from spotlake.freshness import FAILING, FRESH, freshness
from spotlake.registry import JobState
from tests.support.extraction_harness import (
    FIVE,
    ExtractionEnv,
    aws_connection,
    base_window,
    create_table,
    floor5,
    insert,
    lake_rows,
    naive,
    run_operator,
    source_rows,
    update,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(
    mysql: dict[str, str], moto_endpoint: str, catalog_secret: str, start_livy: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExtractionEnv]:
    livy_url = start_livy("extract")
    tmp = tmp_path_factory.mktemp("extraction")
    environment = ExtractionEnv(mysql, moto_endpoint, livy_url, tmp, catalog_secret)
    saved = {k: os.environ.get(k) for k in (*environment.environ(), "AIRFLOW_CONN_AWS_DEFAULT")}
    os.environ.update(environment.environ())
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = aws_connection(moto_endpoint)
    yield environment
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def changes_count(env: ExtractionEnv, pipeline: str, window: str) -> int:
    table = env.lake_table(pipeline, changes=True)
    return sum(1 for w in table.column("_window").to_pylist() if w == window)


def run_window(env: ExtractionEnv, pipeline: str, start: datetime) -> dict[str, Any]:
    return run_operator(env.operator(pipeline), start, start + FIVE)


def label(start: datetime) -> str:
    return start.strftime("%Y%m%dT%H%M%SZ")


def livy_batch_count(env: ExtractionEnv) -> int:
    with urllib.request.urlopen(f"{env.livy_url}/batches?size=1000") as resp:  # noqa: S310
        return int(json.load(resp)["total"])


# --------------------------------------------------------------------- tests
def test_first_run_loads_the_table_and_every_rerun_leaves_it_equal_to_mysql(env: ExtractionEnv) -> None:
    table = create_table(env, "orders")
    w1 = base_window()
    # 1,000 rows from days before the pipeline existed, 200 sharing one cursor value.
    insert(
        env, table, [(i, f"c{i % 37}", "placed", Decimal(i) / 4, w1 - timedelta(days=3, seconds=i % 800)) for i in range(1, 1001)]
    )
    pipeline = env.add_pipeline(f"orders_{env.tag}", table)

    first = run_window(env, pipeline, w1)
    state = env.state(pipeline)
    assert (state.snapshot, state.snapshot_rows) == ("DONE", 1000)
    assert lake_rows(env, pipeline) == source_rows(env, table)
    assert changes_count(env, pipeline, "snapshot") == 1000
    assert first["window"] == label(w1) and first["current_rows"] == 1000
    assert first["table"] == f"lake.{env.namespace}.{pipeline}"
    snapshot_job = env.registry.get_job(snapshot_job_key(pipeline))
    assert (snapshot_job.state, snapshot_job.attempt) == (JobState.SUCCEEDED, 1)

    # Clear the first run (the most common operator action): its window runs again; the
    # initial load is neither repeated nor erased.
    run_window(env, pipeline, w1)
    assert env.registry.get_job(snapshot_job_key(pipeline)).attempt == 1
    assert changes_count(env, pipeline, "snapshot") == 1000
    assert lake_rows(env, pipeline) == source_rows(env, table)

    # Changes with cursors in the windows after the snapshot's watermark.
    w2 = floor5(parse_iso(env.state(pipeline).watermark)) + FIVE
    update(env, table, "status = 'paid', updated_at = %s WHERE id <= 50", naive(w2 + timedelta(seconds=30)))
    update(
        env,
        table,
        "deleted_at = %s, updated_at = %s WHERE id BETWEEN 51 AND 70",
        naive(w2 + timedelta(seconds=40)),
        naive(w2 + timedelta(seconds=40)),
    )
    insert(env, table, [(5000, "late", "placed", Decimal("1.00"), w2 - timedelta(seconds=1))])
    second = run_window(env, pipeline, w2)
    assert parse_iso(env.state(pipeline).watermark) == w2 + FIVE
    assert second["rows_read"] >= 71
    assert lake_rows(env, pipeline) == source_rows(env, table)

    # A retry of the window (attempt 2) replaces its rows in the changes table, merges the same.
    before = changes_count(env, pipeline, label(w2))
    run_window(env, pipeline, w2)
    assert env.registry.get_job(f"{pipeline}#{label(w2)}").attempt == 2
    assert changes_count(env, pipeline, label(w2)) == before
    assert lake_rows(env, pipeline) == source_rows(env, table)

    # Newer changes, then an old window re-run after them (a backfill over committed windows):
    # the newest cursor wins, not the latest run.
    w3 = w2 + FIVE
    update(env, table, "status = 'shipped', updated_at = %s WHERE id <= 10", naive(w3 + timedelta(seconds=5)))
    run_window(env, pipeline, w3)
    run_window(env, pipeline, w2)
    run_window(env, pipeline, w1)
    # A backfill of a window from before the pipeline existed.
    run_window(env, pipeline, w1 - timedelta(days=2))
    assert lake_rows(env, pipeline) == source_rows(env, table)
    assert changes_count(env, pipeline, "snapshot") == 1000
    assert parse_iso(env.state(pipeline).watermark) == w3 + FIVE

    # Two runs of one window at once submit one batch, and both succeed.
    batches_before = livy_batch_count(env)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(run_window(env, pipeline, w3))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0]["batch_id"] == results[1]["batch_id"]
    assert livy_batch_count(env) == batches_before + 1
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_a_paused_dag_loses_nothing_and_a_failing_window_shows_stale_until_one_run_covers_the_gap(
    env: ExtractionEnv,
) -> None:
    table = create_table(env, "pause")
    w0 = base_window()
    insert(env, table, [(i, "c", "placed", Decimal("1.00"), w0 - timedelta(hours=1)) for i in range(1, 101)])
    pipeline = env.add_pipeline(f"pause_{env.tag}", table)
    run_window(env, pipeline, w0)
    w1 = floor5(parse_iso(env.state(pipeline).watermark)) + FIVE
    run_window(env, pipeline, w1)
    assert parse_iso(env.state(pipeline).watermark) == w1 + FIVE

    # Paused for three intervals (w2, w3, w4 never run) while rows change in each of them.
    for n, start in enumerate((w1 + FIVE, w1 + 2 * FIVE, w1 + 3 * FIVE)):
        update(
            env,
            table,
            "status = %s, updated_at = %s WHERE id BETWEEN %s AND %s",
            f"paused{n}",
            naive(start + timedelta(minutes=2)),
            10 * n + 1,
            10 * n + 10,
        )
        insert(env, table, [(1000 + n, "new", "placed", Decimal("2.00"), start + timedelta(minutes=3))])
    w5 = w1 + 4 * FIVE
    result = run_window(env, pipeline, w5)  # unpaused: catchup=False schedules only the latest
    assert parse_iso(result["read_from"]) == w1  # from the watermark, less the lookback
    assert lake_rows(env, pipeline) == source_rows(env, table)

    # The source secret goes away: every try of w6 fails, and so does the next window.
    sm = boto3.client("secretsmanager")
    secret = sm.get_secret_value(SecretId=env.secret_id)["SecretString"]
    sm.delete_secret(SecretId=env.secret_id, ForceDeleteWithoutRecovery=True)
    update(env, table, "status = 'during outage', updated_at = %s WHERE id = 99", naive(w5 + 2 * FIVE))
    try:
        for start in (w5 + FIVE, w5 + 2 * FIVE):
            with pytest.raises(AirflowException, match=env.secret_id):
                run_window(env, pipeline, start)
        seen = freshness(env.config().get(pipeline), env.state(pipeline), w5 + 3 * FIVE + timedelta(minutes=1))
        assert seen.status == FAILING and seen.watermark == (w5 + FIVE).isoformat(timespec="microseconds")
        assert seen.reason.startswith(f"pipeline {pipeline}: source secret '{env.secret_id}' cannot be read")
        assert label(w5 + 2 * FIVE) in seen.reason
    finally:
        sm.create_secret(Name=env.secret_id, SecretString=secret)
    # After the fix one run covers the gap.
    w8 = w5 + 3 * FIVE
    result = run_window(env, pipeline, w8)
    assert parse_iso(result["read_from"]) == w5
    assert lake_rows(env, pipeline) == source_rows(env, table)
    seen = freshness(env.config().get(pipeline), env.state(pipeline), w8 + FIVE + timedelta(minutes=1))
    assert seen.status == FRESH, seen


def test_a_task_that_fails_before_any_batch_shows_the_table_failing_with_the_reason(env: ExtractionEnv) -> None:
    table = create_table(env, "nocluster")
    w = base_window()
    insert(env, table, [(1, "c", "placed", Decimal("1.00"), w)])
    pipeline = env.add_pipeline(f"nocluster_{env.tag}", table, pool="nopool")
    operator = ExtractWindowOperator(task_id="extract", pipeline_name=pipeline, pool_name="nopool", wait_for_cluster=timedelta(0))
    with pytest.raises(AirflowException, match="pool 'nopool' had no READY cluster"):
        run_operator(operator, w, w + FIVE)
    seen = freshness(env.config().get(pipeline), env.state(pipeline), datetime.now(UTC))
    assert seen.status == FAILING and "pool 'nopool' had no READY cluster" in seen.reason, seen


def duckdb_summary(env: ExtractionEnv, pipeline: str) -> list[tuple[Any, ...]]:
    orders = lake.load(env.config(), pipeline).scan().to_duckdb(table_name="orders")
    return orders.execute(
        "SELECT customer, status, count(*), sum(amount) FROM orders WHERE deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def test_duckdb_reads_the_current_state_as_mysql_has_it_before_and_after_the_maintenance_task(
    env: ExtractionEnv,
) -> None:
    table = create_table(env, "duck")
    w = base_window()
    insert(
        env, table, [(i, f"c{i % 3}", ["placed", "paid"][i % 2], Decimal(i) / 8, w - timedelta(hours=1)) for i in range(1, 301)]
    )
    update(env, table, "deleted_at = %s WHERE id <= 7", naive(w - timedelta(minutes=30)))
    pipeline = env.add_pipeline(f"duck_{env.tag}", table)
    run_window(env, pipeline, w)
    w1 = floor5(parse_iso(env.state(pipeline).watermark)) + FIVE
    for n in range(3):  # three windows of updates: small files and position deletes to compact
        update(
            env,
            table,
            "status = %s, updated_at = %s WHERE id BETWEEN %s AND %s",
            f"s{n}",
            naive(w1 + n * FIVE + timedelta(minutes=1)),
            10 * n + 1,
            10 * n + 20,
        )
        run_window(env, pipeline, w1 + n * FIVE)

    conn = env.connect()
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT customer, status, count(*), sum(amount) FROM {table} WHERE deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
        expected = [tuple(r) for r in cur.fetchall()]
    conn.close()
    assert duckdb_summary(env, pipeline) == expected

    files_before = len(lake.load(env.config(), pipeline).inspect.data_files())
    operator = LakeMaintenanceOperator(task_id="maintain", pipeline_name=pipeline, pool_name=env.pool, poll_interval=1.0)
    done = run_operator(operator, w1, w1 + timedelta(days=1))
    assert done["tables"][f"lake.{env.namespace}.{pipeline}"]["rewrite"]["rewritten_data_files_count"] >= 2
    assert len(lake.load(env.config(), pipeline).inspect.data_files()) < files_before
    assert env.state(pipeline).maintained_at is not None
    assert duckdb_summary(env, pipeline) == expected
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_the_lake_command_prints_a_duckdb_query_over_a_table(env: ExtractionEnv, capsys: pytest.CaptureFixture[str]) -> None:
    table = create_table(env, "cli")
    insert(env, table, [(i, "c", "placed", Decimal("1.00"), base_window() - timedelta(hours=1)) for i in range(1, 4)])
    pipeline = env.add_pipeline(f"cli_{env.tag}", table)
    run_window(env, pipeline, base_window())
    assert lake.main([pipeline, "--sql", "SELECT count(*) AS keys, max(id) AS top FROM t"]) == 0
    printed = capsys.readouterr().out
    assert "keys" in printed and re.search(r"│\s+3\s+│\s+3\s+│", printed), printed
    assert lake.main([pipeline, "--changes", "--sql", "SELECT _op FROM t"]) == 0
    assert "snapshot" in capsys.readouterr().out


def assert_fails_and_changes_nothing(env: ExtractionEnv, pipeline: str, start: datetime, *needles: str) -> str:
    before = env.lake_state.get(pipeline)
    with pytest.raises(AirflowException) as err:
        run_window(env, pipeline, start)
    message = str(err.value).split("\n--- batch log")[0]
    for needle in needles:
        assert needle in message, message
    after = env.state(pipeline)
    assert after.watermark == (before.watermark if before else None)
    assert after.failure_job is not None and needles[0] in (after.failure_reason or "")
    return message


def seeded_pipeline(env: ExtractionEnv, name: str, indexed: bool = True, **extra: Any) -> tuple[str, str, datetime]:
    table = create_table(env, name, indexed=indexed)
    w = base_window()
    insert(env, table, [(i, "c", "placed", Decimal("1.00"), w + timedelta(seconds=i)) for i in range(1, 51)])
    return env.add_pipeline(f"{name}_{env.tag}", table, **extra), table, w


def test_unknown_column_in_a_transformation_fails_naming_table_and_column(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "badcol", transforms=[{"rename": {"colour": "color"}}])
    assert_fails_and_changes_nothing(env, pipeline, w, table, "colour")


def test_unindexed_cursor_fails_naming_table_and_cause(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "noindex", indexed=False)
    assert_fails_and_changes_nothing(env, pipeline, w, table, "updated_at", "index")


def test_table_renamed_away_fails_and_keeps_the_lake(env: ExtractionEnv) -> None:
    pipeline, table, w = seeded_pipeline(env, "renamed")
    run_window(env, pipeline, w)
    before = lake_rows(env, pipeline)
    with env.connect().cursor() as cur:
        cur.execute(f"RENAME TABLE {table} TO {table}_old")
    assert_fails_and_changes_nothing(env, pipeline, w + FIVE, table, "does not exist")
    assert lake_rows(env, pipeline) == before


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
        cur.execute("GRANT PROCESS ON *.* TO %s@'127.0.0.1'", (user,))  # to see open transactions
    root.close()
    env.add_source("reader", {**env.mysql, "user": user, "password": password})
    table = create_table(env, "secret")
    w = base_window()
    insert(env, table, [(1, "c", "placed", Decimal("1.00"), w)])
    pipeline = env.add_pipeline(f"secret_{env.tag}", table, source="reader")
    sent: list[dict[str, Any]] = []
    real_post = EndpointLivyHook.post_batch

    def spy(self: EndpointLivyHook, *args: Any, **kwargs: Any) -> int:
        sent.append(kwargs)
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(EndpointLivyHook, "post_batch", spy)
    with caplog.at_level("DEBUG"):
        result = run_window(env, pipeline, w)
    assert result["current_rows"] == 1
    assert password not in caplog.text
    # The batch requests as sent (the snapshot's, then the window's), their job documents
    # decoded: secret references only.
    assert len(sent) == 2
    for body in sent:
        job = json.loads(base64.urlsafe_b64decode(body["args"][1]))
        assert job["source"] == {"secret_id": env.sources["reader"], "tls": {"mode": "auto"}}
        assert job["lake"]["secret_id"] == env.catalog_secret
        assert password not in json.dumps(body) and password not in json.dumps(job)
    with urllib.request.urlopen(f"{env.livy_url}/batches?size=1000") as resp:  # noqa: S310
        assert password not in resp.read().decode()
    with urllib.request.urlopen(f"{env.livy_url}/batches/{result['batch_id']}/log?size=5000") as resp:  # noqa: S310
        assert password not in resp.read().decode()
    for log_file in layout.log_dir.glob("*.log"):
        assert password not in log_file.read_text(errors="replace"), log_file


@pytest.mark.parametrize(
    "expression",
    [
        "`reflect`('java.lang.System', 'exit', 0)",
        "java_method /* a comment */ ('java.lang.System', 'exit', 0)",
        "REFLECT\n('java.lang.System', 'exit', 0)",
    ],
)
def test_reflection_in_a_transform_is_refused_before_anything_is_submitted(env: ExtractionEnv, expression: str) -> None:
    name = f"reflect{len(env.pipelines)}"
    pipeline, table, w = seeded_pipeline(env, name, transforms=[{"derive": {"x": expression}}])
    batches = livy_batch_count(env)
    with pytest.raises(AirflowFailException) as err:  # failed without retries
        run_window(env, pipeline, w)
    assert "runs arbitrary Java code" in str(err.value) and "nothing was submitted" in str(err.value)
    assert livy_batch_count(env) == batches
    state = env.state(pipeline)
    assert state.watermark is None and "runs arbitrary Java code" in (state.failure_reason or "")


def test_the_reconcile_task_finds_hard_deletes_and_updates_the_cursor_missed(env: ExtractionEnv) -> None:
    table = create_table(env, "recon")
    w = base_window()
    insert(env, table, [(i, f"c{i % 5}", "placed", Decimal(i) / 4, w - timedelta(hours=2)) for i in range(1, 1001)])
    pipeline = env.add_pipeline(f"recon_{env.tag}", table, reconcile={"chunk_rows": 50})
    run_window(env, pipeline, w)
    assert lake_rows(env, pipeline) == source_rows(env, table)
    # 100 rows hard-deleted, 100 updated with the cursor column left as it was: no window sees them.
    update(env, table, "status = 'shipped', updated_at = updated_at WHERE MOD(id, 10) = 1")
    with env.connect().cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE MOD(id, 10) = 2")
    run_window(env, pipeline, floor5(parse_iso(env.state(pipeline).watermark)) + FIVE)
    assert lake_rows(env, pipeline) != source_rows(env, table)
    operator = ReconcileOperator(task_id="reconcile", pipeline_name=pipeline, pool_name=env.pool, poll_interval=1.0)
    found = run_operator(operator, w, w + timedelta(hours=1))
    assert (found["rows_checked"], found["deletes"], found["rows_repaired"]) == (900, 100, 100)
    assert 0 < found["chunks_differing"] <= found["chunks"] == 20
    assert lake_rows(env, pipeline) == source_rows(env, table)
    assert "100 deletes" in (env.state(pipeline).reconcile_result or "")
