"""The extraction job in-process (``run_extraction``): see tests/integration/job_harness.py for
the services and the per-test pipeline it runs against."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from spark_jobs.common.errors import ExtractionError, StaleAttemptError
from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.common.lake_state import iso, snapshot_job_key
from spark_jobs.extraction import main as extraction_main
from spark_jobs.extraction import run as extraction_run
from spark_jobs.extraction.run import run_extraction
from spotlake import config, lake
from tests.support.job_harness import (
    FIVE,
    Lake,
    naive,
    next_window,
    seed,
)

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ tests
def test_snapshot_then_windows_then_reruns_keep_the_lake_equal_to_the_source(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 150, datetime.now(UTC) - timedelta(days=1))
    result = pipe.snapshot(spark)
    assert (result["chunks"], result["rows"]) == (4, 150)  # chunks of 40 keys
    state = pipe.store.get(pipe.pipeline)
    assert state.snapshot == "DONE" and state.watermark == state.snapshot_started_at
    assert pipe.current() == pipe.source()
    changes = pipe.lake(changes=True)
    assert {r["_op"] for r in changes} == {"snapshot"} and len(changes) == 150
    assert sorted({r["_chunk"] for r in changes}) == [1, 2, 3, 4]

    # A second run of the snapshot job finds it done and reads nothing.
    again = pipe.snapshot(spark)
    assert again["already_done"] is True and len(pipe.lake(changes=True)) == 150

    w = next_window(pipe)
    pipe.sql(f"UPDATE {pipe.table} SET email = 'NEW@x.io', updated_at = %s WHERE id <= 5", naive(w + timedelta(minutes=1)))
    pipe.sql(
        f"UPDATE {pipe.table} SET deleted_at = %s, updated_at = %s WHERE id = 6",
        naive(w + timedelta(minutes=2)),
        naive(w + timedelta(minutes=2)),
    )
    first = pipe.window(spark, w)
    assert (first["rows_read"], first["rows_written"], first["chunks"]) == (6, 6, 1)
    assert first["watermark"] == iso(w + FIVE) and first["current_rows"] == 150
    assert pipe.current() == pipe.source()
    ops = {r["id"]: r["_op"] for r in pipe.lake(changes=True) if r["_window"] == w.strftime("%Y%m%dT%H%M%SZ")}
    assert ops == {1: "upsert", 2: "upsert", 3: "upsert", 4: "upsert", 5: "upsert", 6: "delete"}

    # Re-run: the window's rows are replaced in the changes table (attempt 2's), merged the same.
    pipe.window(spark, w)
    rerun = [r for r in pipe.lake(changes=True) if r["_window"] == w.strftime("%Y%m%dT%H%M%SZ")]
    assert len(rerun) == 6 and {r["_attempt"] for r in rerun} == {2}
    assert pipe.current() == pipe.source()

    # Snapshot summaries say who committed each snapshot.
    summaries = [s.summary for s in lake.load(config.load(pipe.config_path), pipe.pipeline).snapshots()]
    assert summaries[-1]["spotlake.job-key"] == f"{pipe.pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}"
    assert summaries[-1]["spotlake.attempt"] == "2"


def test_an_empty_window_commits_nothing_to_iceberg_but_moves_the_watermark(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 10, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    table = lake.load(config.load(pipe.config_path), pipe.pipeline)
    snapshots = len(table.snapshots())
    w = next_window(pipe)
    result = pipe.window(spark, w)
    assert (result["rows_read"], result["committed_to_lake"], result["watermark"]) == (0, False, iso(w + FIVE))
    assert len(lake.load(config.load(pipe.config_path), pipe.pipeline).snapshots()) == snapshots


def test_a_long_gap_is_read_in_bounded_chunks_each_moving_the_watermark(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 10, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    w0 = next_window(pipe)
    pipe.window(spark, w0)
    # Nothing ran for three hours (a weekend outage, a paused DAG); one run covers it.
    late = w0 + timedelta(hours=3)
    for hour in range(3):
        pipe.sql(
            f"UPDATE {pipe.table} SET email = %s, updated_at = %s WHERE id = %s",
            f"h{hour}@x.io",
            naive(w0 + timedelta(hours=hour, minutes=30)),
            hour + 1,
        )
    result = pipe.window(spark, late, read={"window_chunk_s": 3600})
    assert result["chunks"] == 4  # 3 h 10 min from the watermark less the lookback, in hours
    assert result["rows_read"] == 3 and pipe.watermark() == late + FIVE
    assert pipe.current() == pipe.source()


def test_a_resumed_snapshot_continues_after_its_last_committed_chunk(
    pipe: Lake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(pipe, 200, datetime.now(UTC) - timedelta(days=1))
    real = extraction_run.commit_locked
    commits: list[int] = []

    def dies_after_two(run: Any, read: Any, chunk: Any, record: Any) -> Any:
        if len(commits) == 2:
            raise RuntimeError("cluster lost")  # the driver dies before chunk 3 commits
        commits.append(chunk.number)
        return real(run, read, chunk, record)

    monkeypatch.setattr(extraction_run, "commit_locked", dies_after_two)
    with pytest.raises(RuntimeError, match="cluster lost"):
        pipe.snapshot(spark)
    monkeypatch.setattr(extraction_run, "commit_locked", real)
    state = pipe.store.get(pipe.pipeline)
    assert (state.snapshot, state.snapshot_chunks, state.snapshot_rows) == ("RUNNING", 2, 80)

    result = pipe.snapshot(spark)  # the next attempt (re-queued onto another cluster)
    assert (result["chunks"], result["rows"]) == (5, 200)
    by_chunk: dict[int, set[int]] = {}
    for row in pipe.lake(changes=True):
        by_chunk.setdefault(row["_chunk"], set()).add(row["_attempt"])
    assert by_chunk == {1: {1}, 2: {1}, 3: {2}, 4: {2}, 5: {2}}  # chunks 1-2 were not read again
    assert pipe.current() == pipe.source()


def test_a_zombie_attempt_that_commits_after_a_newer_one_is_refused(
    pipe: Lake, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(pipe, 20, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    w = next_window(pipe)
    pipe.sql(f"UPDATE {pipe.table} SET email = 'old@x.io', updated_at = %s WHERE id <= 3", naive(w + timedelta(minutes=1)))
    zombie_job = pipe.window_job(w)  # attempt 1: its cluster is declared dead while it reads

    read_done, resume = threading.Event(), threading.Event()
    real_read = extraction_run.read_chunk

    def slow_read(run: Any, condition: str, chunk: Any) -> Any:
        out = real_read(run, condition, chunk)
        if run.job.run_id == zombie_job.run_id:
            read_done.set()
            assert resume.wait(120)
        return out

    monkeypatch.setattr(extraction_run, "read_chunk", slow_read)
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(_run(spark, zombie_job)))
    thread.start()
    assert read_done.wait(120)
    # The fleet re-queued the job; attempt 2 runs on the replacement and commits newer rows.
    pipe.sql(f"UPDATE {pipe.table} SET email = 'new@x.io', updated_at = %s WHERE id <= 3", naive(w + timedelta(minutes=2)))
    newer = pipe.window(spark, w)
    assert newer["attempt"] == 2
    table = lake.load(config.load(pipe.config_path), pipe.pipeline)
    before = (table.current_snapshot().snapshot_id, pipe.current())

    resume.set()  # the zombie wakes up and tries to commit what it read
    thread.join(timeout=300)
    assert isinstance(outcome[0], StaleAttemptError), outcome
    assert "no longer owns its job" in str(outcome[0])
    table = lake.load(config.load(pipe.config_path), pipe.pipeline)
    assert (table.current_snapshot().snapshot_id, pipe.current()) == before
    assert {r[1] for r in pipe.current().values() if r[0] <= 3} == {"new@x.io"}
    assert pipe.current() == pipe.source()


def test_the_lake_itself_refuses_rows_of_an_older_attempt_than_it_holds(pipe: Lake, spark: SparkSession) -> None:
    """Even if the registry were wrong (restored from an old copy), a commit never replaces the
    rows of a newer attempt: the changes table's MERGE checks them in its own scan."""
    seed(pipe, 5, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    w = next_window(pipe)
    pipe.sql(f"UPDATE {pipe.table} SET updated_at = %s WHERE id = 1", naive(w + timedelta(minutes=1)))
    pipe.window(spark, w)
    pipe.window(spark, w)  # attempt 2's rows are in the lake
    table = lake.load(config.load(pipe.config_path), pipe.pipeline, changes=True)
    before = table.current_snapshot().snapshot_id
    job = pipe.window_job(w)  # attempt 3 in the registry...
    stale = ExtractJob.from_dict(
        {
            **pipe.document(
                job.job_key,
                job.run_id,
                1,
                window={"start": iso(job.window.start), "end": iso(job.window.end), "read_from": iso(job.window.read_from)},
            )
        }
    )
    with pytest.raises(StaleAttemptError, match="newer attempt already committed"):
        run_extraction(spark, stale)  # ...but the job says attempt 1
    assert lake.load(config.load(pipe.config_path), pipe.pipeline, changes=True).current_snapshot().snapshot_id == before


def test_schema_changes_evolve_the_tables_and_a_narrowed_type_stops_with_the_fix(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 5, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    w = next_window(pipe)
    pipe.sql(f"ALTER TABLE {pipe.table} ADD COLUMN note VARCHAR(30) NULL, MODIFY amount DECIMAL(16,2), DROP COLUMN phone")
    pipe.sql(
        f"UPDATE {pipe.table} SET note = 'hi', amount = 12345678901.25, updated_at = %s WHERE id = 1",
        naive(w + timedelta(minutes=1)),
    )
    pipe.window(spark, w, transforms=[])
    rows = {r["id"]: r for r in pipe.lake()}
    assert rows[1]["note"] == "hi" and rows[1]["amount"] == Decimal("12345678901.25") and rows[1]["phone"] is None
    assert rows[2]["note"] is None and rows[2]["phone"] == "******0002"  # older rows keep their values

    w2 = w + FIVE
    pipe.sql(f"UPDATE {pipe.table} SET amount = 1 WHERE id = 1")
    pipe.sql(f"ALTER TABLE {pipe.table} MODIFY amount DECIMAL(8,2)")
    pipe.sql(f"UPDATE {pipe.table} SET amount = 1.5, updated_at = %s WHERE id = 2", naive(w2 + timedelta(minutes=1)))
    watermark = pipe.watermark()
    with pytest.raises(ExtractionError) as caught:
        pipe.window(spark, w2, transforms=[])
    message = str(caught.value)
    assert "column 'amount' is decimal(8,2) in the source" in message and "decimal(16,2) in the lake table" in message
    assert 'cast: {amount: "decimal(16,2)"}' in message
    assert pipe.watermark() == watermark and {r["id"]: r["amount"] for r in pipe.lake()}[2] == Decimal("0.50")
    # The fix the message names works.
    pipe.window(spark, w2, transforms=[{"op": "cast", "columns": {"amount": "decimal(16,2)"}}])
    assert {r["id"]: r["amount"] for r in pipe.lake()}[2] == Decimal("1.50")


def test_failures_name_the_cause_and_change_nothing(pipe: Lake, spark: SparkSession) -> None:
    seed(pipe, 5, datetime.now(UTC) - timedelta(days=1))
    pipe.store.ensure(pipe.pipeline, True, datetime.now(UTC))
    key = snapshot_job_key(pipe.pipeline)
    run_id, attempt = pipe.claim(key)
    with pytest.raises(ExtractionError) as caught:
        run_extraction(spark, ExtractJob.from_dict(pipe.document(key, run_id, attempt, table=f"{pipe.table}_gone")))
    assert str(caught.value) == (
        f"pipeline {pipe.pipeline}: table shop.{pipe.table}_gone does not exist in the source (renamed or dropped?) "
        "— fix the table name in config/pipelines.yaml"
    )
    with pytest.raises(ExtractionError) as caught:
        run_extraction(
            spark, ExtractJob.from_dict(pipe.document(key, run_id, attempt, transforms=[{"op": "hash", "columns": ["emial"]}]))
        )
    assert f"pipeline {pipe.pipeline} (shop.{pipe.table}): transform #1 (hash) names unknown column 'emial'" in str(caught.value)
    pipe.sql(f"ALTER TABLE {pipe.table} DROP INDEX ix_updated_at")
    with pytest.raises(ExtractionError, match="cursor column 'updated_at' is not the first column of any index"):
        run_extraction(spark, ExtractJob.from_dict(pipe.document(key, run_id, attempt)))
    state = pipe.store.get(pipe.pipeline)
    assert (state.snapshot, state.snapshot_chunks, state.watermark) == ("PENDING", 0, None)


def test_composite_and_text_keys_are_paged_exactly_in_the_snapshot(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    # A case-insensitive collation: 'a' and 'A' sort together; keys with quotes and 4-byte characters.
    env.sql(
        f"CREATE TABLE {env.table} (region VARCHAR(10) COLLATE utf8mb4_unicode_ci, code VARCHAR(20), "
        "updated_at DATETIME(3) NOT NULL, PRIMARY KEY (region, code), KEY ix_u (updated_at))"
    )
    keys = [(r, c) for r in ("a", "B", "c'x", "d😀") for c in ("1", "10", "2", "Z", "é", "x'y")]
    at = naive(datetime.now(UTC) - timedelta(days=1))
    with env.connect().cursor() as cur:
        cur.executemany(f"INSERT INTO {env.table} VALUES (%s, %s, %s)", [(r, c, at) for r, c in keys])
    env.store.ensure(env.pipeline, True, datetime.now(UTC))
    key = snapshot_job_key(env.pipeline)
    run_id, attempt = env.claim(key)
    doc = env.document(
        key, run_id, attempt, primary_key=["region", "code"], soft_delete=None, transforms=[], read={"chunk_rows": 5}
    )
    result = run_extraction(spark, ExtractJob.from_dict(doc))
    assert (result["chunks"], result["rows"]) == (5, 24)
    got = sorted((r["region"], r["code"]) for r in env.lake())
    assert got == sorted(keys)
    env.sql(f"DROP TABLE {env.table}")


def _run(spark: SparkSession, job: ExtractJob) -> Any:
    try:
        return run_extraction(spark, job)
    except BaseException as exc:  # noqa: BLE001 - handed back to the test
        return exc


def test_main_prints_the_result_or_one_error_line(pipe: Lake, spark: SparkSession, capsys: pytest.CaptureFixture[str]) -> None:
    seed(pipe, 3, datetime.now(UTC) - timedelta(days=1))
    pipe.store.ensure(pipe.pipeline, True, datetime.now(UTC))
    key = snapshot_job_key(pipe.pipeline)
    run_id, attempt = pipe.claim(key)
    doc = pipe.document(key, run_id, attempt)
    encoded = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    assert extraction_main.main(["--job", encoded]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("SPOTLAKE_RESULT: ")
    assert json.loads(out[-1].removeprefix("SPOTLAKE_RESULT: "))["rows"] == 3
    assert pipe.mysql["password"] not in out[-1]

    job_file = pipe.tmp / "job.json"
    job_file.write_text(json.dumps({**doc, "table": "no_such_table"}))
    assert extraction_main.main(["--job-file", str(job_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"SPOTLAKE_ERROR: pipeline {pipe.pipeline}: table shop.no_such_table does not exist in the "
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
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "spark_jobs" / "extraction" / "main.py"), "--job", bad],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("SPOTLAKE_ERROR: pipeline test_orders: job field ")


@pytest.mark.parametrize("shape", ["rds-format", "rds-managed-master"])
def test_a_source_secret_in_each_shape_aws_writes_extracts_the_table(pipe: Lake, spark: SparkSession, shape: str) -> None:
    """The RDS secret format (``dbname``) and an RDS-managed master secret (user and password
    only, host and port from the configuration) both reach MariaDB and fill the lake."""
    import boto3

    seed(pipe, 7, datetime.now(UTC) - timedelta(minutes=1))
    secret_id = f"spotlake/test/{shape}-{pipe.tag}"
    value: dict[str, Any] = {"username": pipe.mysql["user"], "password": pipe.mysql["password"]}
    source: dict[str, Any] = {"secret_id": secret_id}
    if shape == "rds-format":
        value.update(
            engine="mariadb",
            host=pipe.mysql["host"],
            port=int(pipe.mysql["port"]),
            dbname=pipe.mysql["database"],
            dbInstanceIdentifier="source",
        )
    else:
        source["endpoint"] = {"host": pipe.mysql["host"], "port": int(pipe.mysql["port"])}
    boto3.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps(value))
    result = pipe.snapshot(spark, source=source)
    assert result["rows"] == 7, result
    assert {row["id"] for row in pipe.lake()} == set(range(1, 8))
