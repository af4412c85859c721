"""Reconciliation in-process (``run_extraction`` with kind ``reconcile``): hard deletes, updates
that leave the cursor unchanged, rows written before the lake stored their hashes; the lake
compared with pymysql's reading of the source (see tests/integration/job_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.extraction.run import run_extraction
from spotlake import stack
from tests.support.job_harness import Lake, seed

pytestmark = pytest.mark.integration


def reconcile(env: Lake, spark: SparkSession, **options: Any) -> dict[str, Any]:
    key = f"{env.pipeline}#reconcile-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    run_id, attempt = env.claim(key)
    doc = env.document(key, run_id, attempt, kind="reconcile", reconcile={"chunk_rows": 50, **options})
    return run_extraction(spark, ExtractJob.from_dict(doc))


def test_hard_deletes_and_updates_that_keep_the_cursor_are_found_and_repaired(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 2000, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    assert pipe.current() == pipe.source()
    # Nothing changed: only the checksums are compared.
    quiet = reconcile(pipe, spark)
    assert (
        quiet["rows_checked"],
        quiet["chunks"],
        quiet["chunks_differing"],
        quiet["rows_compared"],
        quiet["rows_repaired"],
        quiet["deletes"],
    ) == (2000, 40, 0, 0, 0, 0)
    # 100 rows hard-deleted, 100 rows updated with the cursor left as it was.
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id % 20 = 0")
    pipe.sql(f"UPDATE {pipe.table} SET email = CONCAT('changed', id, '@example.com'), updated_at = updated_at WHERE id % 20 = 1")
    assert pipe.current() != pipe.source()
    found = reconcile(pipe, spark)
    assert (found["deletes"], found["rows_repaired"]) == (100, 100)
    assert 0 < found["chunks_differing"] <= found["chunks"] and found["rows_compared"] < 2000
    assert pipe.current() == pipe.source()
    deletes = [r for r in pipe.lake(changes=True) if r["_op"] == "delete"]
    assert sorted(r["id"] for r in deletes) == list(range(20, 2001, 20))
    state = pipe.store.get(pipe.pipeline)
    assert state is not None and state.reconciled_at and "100 deletes" in (state.reconcile_result or "")
    again = reconcile(pipe, spark)
    assert (again["chunks_differing"], again["rows_repaired"], again["deletes"]) == (0, 0, 0)


def test_deletes_can_be_flagged_in_the_soft_delete_column(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 300, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id IN (7, 8, 9)")
    found = reconcile(pipe, spark, deletes="flag")
    assert found["deletes"] == 3
    current = {r["id"]: r for r in pipe.lake()}
    assert len(current) == 300
    assert {i for i, r in current.items() if r["deleted_at"] is not None} == {7, 8, 9}
    assert {current[i]["_op"] for i in (7, 8, 9)} == {"delete"}


@pytest.mark.parametrize("deletes", ["remove", "flag"])
def test_rows_without_hashes_make_one_full_pass_then_deletes_are_exact(pipe: Lake, spark: SparkSession, deletes: str) -> None:
    seed(pipe, 400, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    # As if written by a release before the lake stored _source_key / _source_hash: no such columns.
    for column in ("_source_key", "_source_hash"):
        spark.sql(f"ALTER TABLE lake.{pipe.namespace}.{pipe.pipeline} DROP COLUMN {column}")
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id > 390")
    found = reconcile(pipe, spark, deletes=deletes)
    assert (found["rows_without_hash"], found["rows_repaired"], found["deletes"]) == (400, 390, 10)
    if deletes == "remove":
        assert pipe.current() == pipe.source()
        assert all(r["_source_key"] for r in pipe.lake())
        assert reconcile(pipe, spark)["chunks_differing"] == 0
    else:  # the ten rows stay, flagged; the 390 others are as the source has them
        flagged = {r["id"] for r in pipe.lake() if r["_op"] == "delete"}
        assert flagged == set(range(391, 401))
        assert {k: v for k, v in pipe.current().items() if k not in flagged} == pipe.source()


def test_a_pipeline_with_a_filter_is_refused(pipe: Lake, spark: SparkSession) -> None:
    from spark_jobs.common.errors import ExtractionError

    seed(pipe, 5, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    key = f"{pipe.pipeline}#reconcile-x"
    run_id, attempt = pipe.claim(key)
    doc = pipe.document(key, run_id, attempt, kind="reconcile", transforms=[{"op": "filter", "condition": "id > 1"}])
    with pytest.raises(ExtractionError, match="cannot tell a row that transform #1 \\(filter\\) drops"):
        run_extraction(spark, ExtractJob.from_dict(doc))


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second MariaDB server standing for a read replica: the test copies rows to it, so it can
    lag behind the primary exactly as the test says (this server has no replication stream)."""
    from spotlake.stack import PROJECT_ROOT, StackLayout
    from spotlake_dev.localstack import services
    from spotlake_dev.localstack.process import Supervisor, free_port

    layout = StackLayout(root=tmp_path / "replica", project=PROJECT_ROOT, settings={"SPOTLAKE_MYSQL_PORT": str(free_port(31500))})
    layout.ensure()
    supervisor = Supervisor(layout)
    supervisor.start(services.mariadb_spec(layout))
    try:
        services.bootstrap_mariadb(layout)
        yield stack.mysql_settings(layout)
    finally:
        supervisor.stop("mariadb")


def copy_rows(env: Lake, replica: dict[str, str]) -> None:
    """The replica catches up: it now holds the primary's rows as they are."""
    import pymysql

    with env.connect().cursor() as cur:
        cur.execute(f"SELECT * FROM {env.table}")
        rows = cur.fetchall()
    conn = pymysql.connect(
        host=replica["host"],
        port=int(replica["port"]),
        user=replica["user"],
        password=replica["password"],
        database=replica["database"],
        autocommit=True,
    )
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {env.table} (id BIGINT PRIMARY KEY, email VARCHAR(100), "
            "phone VARCHAR(20), amount DECIMAL(12,2), updated_at DATETIME(3) NOT NULL, "
            "deleted_at DATETIME(3) NULL, KEY ix_updated_at (updated_at))"
        )
        cur.execute(f"DELETE FROM {env.table}")
        cur.executemany(f"INSERT INTO {env.table} VALUES (%s, %s, %s, %s, %s, %s)", rows)
    conn.close()


def test_a_lagging_replica_serves_the_checksums_and_never_deletes_a_row(
    pipe: Lake, spark: SparkSession, replica: dict[str, str]
) -> None:
    import json

    import boto3

    from tests.support.job_harness import next_window

    seed(pipe, 500, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id <= 5")  # deleted on the primary ...
    copy_rows(pipe, replica)  # ... and replicated
    # Rows the primary has, a window brought into the lake, and the replica has not received yet.
    pipe.sql(
        f"INSERT INTO {pipe.table} VALUES "
        + ", ".join(f"({i}, 'new{i}@example.com', '5550000000', 1.00, NOW(3), NULL)" for i in range(501, 511))
    )
    pipe.window(spark, next_window(pipe))
    secret = f"{pipe.secret_id}-replica"
    boto3.client("secretsmanager").create_secret(
        Name=secret,
        SecretString=json.dumps(
            {
                "host": replica["host"],
                "port": int(replica["port"]),
                "database": replica["database"],
                "username": replica["user"],
                "password": replica["password"],
            }
        ),
    )
    found = reconcile(pipe, spark, replica_secret_id=secret)
    assert found["replica"] is True and found["rows_checked"] == 495  # the replica's rows
    assert (found["deletes"], found["deletes_still_in_source"]) == (5, 10)
    assert pipe.current() == pipe.source()  # the primary: rows 6..510
