"""Table maintenance in-process (``run_maintenance``) on real Iceberg tables: compaction while
readers read and windows of two pipelines commit, snapshot expiry, orphan files. The lake is
read with pyiceberg and compared with MySQL read by pymysql."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from pyspark.sql import SparkSession

from spotlake.lake import split_s3
from spotlake.stack import StackLayout
from tests.support.job_harness import Lake, naive, next_window, orders_pipeline, seed

pytestmark = pytest.mark.integration

FIVE = timedelta(minutes=5)


@pytest.fixture
def two(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Lake, Lake]]:
    pipes = (
        orders_pipeline(mysql, catalog_secret, tmp_path_factory.mktemp("a")),
        orders_pipeline(mysql, catalog_secret, tmp_path_factory.mktemp("b")),
    )
    yield pipes
    for pipe in pipes:
        pipe.sql(f"DROP TABLE IF EXISTS {pipe.table}")


def data_files(pipe: Lake) -> int:
    return len(pipe.iceberg().inspect.data_files())


def with_windows(spark: SparkSession, pipe: Lake, count: int, start: datetime) -> datetime:
    """``count`` windows from ``start``, each updating five rows: small files and position deletes."""
    w = start
    for n in range(count):
        pipe.sql(
            f"UPDATE {pipe.table} SET email = %s, updated_at = %s WHERE id BETWEEN %s AND %s",
            f"w{n}@x.io",
            naive(w + timedelta(minutes=1)),
            5 * n + 1,
            5 * n + 5,
        )
        pipe.window(spark, w)
        w += FIVE
    return w


def test_maintenance_while_a_reader_reads_and_two_pipelines_commit(spark: SparkSession, two: tuple[Lake, Lake]) -> None:
    a, b = two
    for pipe in two:
        seed(pipe, 200, datetime.now(UTC) - timedelta(days=1))
        pipe.snapshot(spark)
    next_a = with_windows(spark, a, 6, next_window(a))
    next_b = with_windows(spark, b, 2, next_window(b))
    files_before = data_files(a)
    pinned = a.iceberg().current_snapshot().snapshot_id
    pinned_rows = a.iceberg().scan(snapshot_id=pinned).to_arrow().num_rows

    stop, errors, reads = threading.Event(), [], [0]

    def reader() -> None:  # an analyst's queries, over and over, while everything else runs
        while not stop.is_set():
            try:
                table = a.iceberg()
                current = table.scan().to_arrow()
                assert len(set(current.column("id").to_pylist())) == current.num_rows == 200
                assert table.scan(snapshot_id=pinned).to_arrow().num_rows == pinned_rows
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    outcomes: list[Any] = []

    def commits(pipe: Lake, start: datetime) -> None:  # each pipeline keeps committing windows
        try:
            with_windows(spark, pipe, 2, start)
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            outcomes.append(exc)

    threads = [
        threading.Thread(target=reader),
        threading.Thread(target=commits, args=(a, next_a)),
        threading.Thread(target=commits, args=(b, next_b)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)
    done_a = a.maintain(spark, snapshot_retention_s=3600)
    done_b = b.maintain(spark, snapshot_retention_s=3600)
    for thread in threads[1:]:
        thread.join(timeout=600)
    stop.set()
    threads[0].join(timeout=120)

    assert outcomes == ["ok", "ok"] and not errors, (outcomes, errors)
    assert reads[0] > 0
    current = f"lake.{a.namespace}.{a.pipeline}"
    assert done_a["tables"][current]["rewrite"]["rewritten_data_files_count"] >= 2
    assert done_b["tables"]
    assert data_files(a) < files_before
    for pipe in two:
        assert pipe.current() == pipe.source()
        assert pipe.store.get(pipe.pipeline).maintained_at is not None
    # The snapshot a reader planned on before maintenance still reads whole.
    assert a.iceberg().scan(snapshot_id=pinned).to_arrow().num_rows == pinned_rows


def test_expiry_keeps_the_newest_snapshot_and_only_old_orphans_are_removed(
    spark: SparkSession, two: tuple[Lake, Lake], layout: StackLayout
) -> None:
    pipe = two[0]
    seed(pipe, 50, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    with_windows(spark, pipe, 3, next_window(pipe))
    assert len(pipe.iceberg().snapshots()) > 3
    bucket, prefix = split_s3(pipe.iceberg().location())
    s3 = boto3.client("s3")
    old, young = f"{prefix}/data/orphan-old.parquet", f"{prefix}/data/orphan-young.parquet"
    for key in (old, young):
        s3.put_object(Bucket=bucket, Key=key, Body=b"not referenced by any snapshot")
    # The local S3 server keeps objects as files: age one the way four days would.
    on_disk = Path(layout.data_dir) / "s3" / "objects" / bucket / old
    four_days_ago = time.time() - 4 * 86400
    os.utime(on_disk, (four_days_ago, four_days_ago))

    deletes_before = len(pipe.iceberg().inspect.delete_files())
    done = pipe.maintain(spark, snapshot_retention_s=0, retain_last=1, orphan_age_s=3 * 86400)
    current = done["tables"][f"lake.{pipe.namespace}.{pipe.pipeline}"]
    assert current["expire"]["deleted_data_files_count"] >= 1, json.dumps(done)
    assert [p.endswith("orphan-old.parquet") for p in current["orphans_removed"]] == [True]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/data/").get("Contents", [])}
    assert old not in keys and young in keys
    assert len(pipe.iceberg().snapshots()) == 1  # the compacted one: what it replaced is gone
    assert len(pipe.iceberg().inspect.delete_files()) < deletes_before  # applied by compaction, then dropped
    assert pipe.current() == pipe.source()


def test_maintenance_of_a_pipeline_that_never_ran_does_nothing_and_succeeds(spark: SparkSession, two: tuple[Lake, Lake]) -> None:
    """The maintenance DAG may run before a new pipeline's first window."""
    done = two[0].maintain(spark)
    assert done["tables"] == {} and done["skipped"] == "the pipeline has not run yet"
