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

from spark_jobs.extraction import run_extraction
from spark_jobs.job_config import ExtractJob
from tests.integration.job_harness import Lake, iceberg_session, orders_pipeline, seed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def spark(moto_endpoint: str, s3_endpoint: str, mysql: dict[str, str]) -> Iterator[SparkSession]:
    yield from iceberg_session(s3_endpoint)


@pytest.fixture
def pipe(mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path) -> Iterator[Lake]:
    env = orders_pipeline(mysql, catalog_secret, tmp_path)
    yield env
    env.sql(f"DROP TABLE IF EXISTS {env.table}")


def reconcile(env: Lake, spark: SparkSession, **options: Any) -> dict[str, Any]:
    key = f"{env.pipeline}#reconcile-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    run_id, attempt = env.claim(key)
    doc = env.document(key, run_id, attempt, kind="reconcile", reconcile={"chunk_rows": 50, **options})
    return run_extraction(spark, ExtractJob.from_dict(doc))


def test_hard_deletes_and_updates_that_keep_the_cursor_are_found_and_repaired(pipe: Lake,
                                                                               spark: SparkSession) -> None:
    seed(pipe, 2000, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    assert pipe.current() == pipe.source()
    # Nothing changed: only the checksums are compared.
    quiet = reconcile(pipe, spark)
    assert (quiet["rows_checked"], quiet["chunks"], quiet["chunks_differing"], quiet["rows_compared"],
            quiet["rows_repaired"], quiet["deletes"]) == (2000, 40, 0, 0, 0, 0)
    # 100 rows hard-deleted, 100 rows updated with the cursor left as it was.
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id % 20 = 0")
    pipe.sql(f"UPDATE {pipe.table} SET email = CONCAT('changed', id, '@example.com'), updated_at = updated_at "
             "WHERE id % 20 = 1")
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


def test_rows_without_hashes_make_one_full_pass_then_deletes_are_exact(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 400, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    # As if written by a release before the lake stored _source_key / _source_hash.
    spark.sql(f"UPDATE lake.{pipe.namespace}.{pipe.pipeline} SET _source_key = NULL, _source_hash = NULL")
    pipe.sql(f"DELETE FROM {pipe.table} WHERE id > 390")
    found = reconcile(pipe, spark)
    assert (found["rows_without_hash"], found["rows_repaired"], found["deletes"]) == (400, 390, 10)
    assert pipe.current() == pipe.source()
    assert all(r["_source_key"] for r in pipe.lake())
    assert reconcile(pipe, spark)["chunks_differing"] == 0


def test_a_pipeline_with_a_filter_is_refused(pipe: Lake, spark: SparkSession) -> None:
    from spark_jobs.errors import ExtractionError

    seed(pipe, 5, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    key = f"{pipe.pipeline}#reconcile-x"
    run_id, attempt = pipe.claim(key)
    doc = pipe.document(key, run_id, attempt, kind="reconcile",
                        transforms=[{"op": "filter", "condition": "id > 1"}])
    with pytest.raises(ExtractionError, match="cannot tell a row that transform #1 \\(filter\\) drops"):
        run_extraction(spark, ExtractJob.from_dict(doc))
