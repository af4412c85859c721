"""The extraction task's completion on moto's registry and in-memory Livy servers: a window batch
that succeeded counts only once the registry shows its window COMMITTED by that run; the initial
snapshot goes on to the run's window in the same try; every failure is noted in the pipeline's
lake state with the job's own error."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from airflow.sdk import Asset
from moto import mock_aws

from operators.extraction import ExtractWindowOperator
from operators.livy_batch import BatchFailed
from spark_jobs.common.lake_state import Owner, iso
from spotlake.pools import SessionSettings
from spotlake.registry import JobState, Registry
from tests.support.batch_jobs import Livys, endpoint_of, publish_fake_dependencies, ready
from tests.support.pipeline_configs import parse, with_pipeline
from triggers.livy import LivyBatchTrigger

START = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)
WINDOW = "20261205T140000Z"  # a window is named by its start
WINDOW_KEY = f"orders#{WINDOW}"
ASSET = Asset("iceberg://lake/raw/orders")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("SPOTLAKE_ARTIFACTS", str(tmp_path / "artifacts"))
    publish_fake_dependencies(tmp_path / "artifacts")
    with mock_aws():
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        registry.create_tables()
        ready(registry, "c1")
        livys = Livys()
        yield SimpleNamespace(registry=registry, livys=livys, make=lambda **pipeline: operator(registry, livys, **pipeline))


def operator(registry: Registry, livys: Livys, **pipeline: Any) -> ExtractWindowOperator:
    """The task of pipeline orders on pool small, windows as batches (sessions off)."""
    op = ExtractWindowOperator(task_id="extract", pipeline_name="orders", pool_name="small", outlets=[ASSET])
    op.__dict__.update(
        registry=registry,
        session_settings=SessionSettings(enabled=False),
        config=parse(with_pipeline(pool="small", schedule="*/5 * * * *", **pipeline)),
    )
    op.livy = livys  # type: ignore[method-assign]
    return op


def context() -> dict[str, Any]:
    return {"data_interval_start": START, "data_interval_end": END, "outlet_events": defaultdict(SimpleNamespace)}


def submitted(op: ExtractWindowOperator, ctx: dict[str, Any]) -> LivyBatchTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


def success(trigger: LivyBatchTrigger) -> dict[str, Any]:
    return trigger._event("success", state="success").payload


def commit(op: ExtractWindowOperator, job_key: str, state_changes: dict[str, Any], **window: Any) -> None:
    """What the job does at its end: under the commit lock, which only the attempt owning its job
    takes, move the pipeline's state and (for a window) record the window COMMITTED by its run."""
    job = op.registry.get_job(job_key)
    lock = op.lake_state.acquire("orders", Owner(job_key, job.run_id, job.attempt), lease_s=60)
    record = None
    if window:
        planned = op.lake_state.window("orders", job_key.split("#")[1])
        record = dataclasses.replace(
            planned, state="COMMITTED", run_id=job.run_id, attempt=job.attempt, committed_at=iso(datetime.now(UTC)), **window
        )
    op.lake_state.release(lock, state_changes, record)


def test_a_window_committed_by_its_batch_finishes_the_task_with_its_summary(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    assert (trigger.job_key, trigger.endpoint) == (WINDOW_KEY, endpoint_of("c1"))
    commit(
        op,
        WINDOW_KEY,
        {"watermark": iso(END)},
        rows_read=12,
        rows_written=12,
        chunks=1,
        current_snapshot=41,
        changes_snapshot=42,
        current_rows=3000,
    )
    summary = op.execute_complete(ctx, success(trigger))
    assert summary == {
        "pipeline": "orders",
        "window": WINDOW,
        "read_from": iso(START - op.pipeline.lookback),
        "end": iso(END),
        "rows_read": 12,
        "rows_written": 12,
        "chunks": 1,
        "watermark": iso(END),
        "table": "lake.raw.orders",
        "changes_table": "lake.raw.orders_changes",
        "current_snapshot_id": 41,
        "changes_snapshot_id": 42,
        "current_rows": 3000,
        "cluster": "c1",
        "batch_id": 100,
    }
    assert ctx["outlet_events"][ASSET].extra == summary  # what the lake's consumers see of the commit
    assert op.registry.get_job(WINDOW_KEY).state == JobState.SUCCEEDED


def test_a_window_batch_that_succeeded_without_its_commit_fails_the_task_and_notes_why(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    run_id = op.registry.get_job(WINDOW_KEY).run_id
    with pytest.raises(
        AirflowException,
        match=(
            rf"{WINDOW_KEY}: batch 100 succeeded but the registry's record of window {WINDOW} is "
            rf"PLANNED by run None, not COMMITTED by run {run_id}; the window is not recorded — re-run it"
        ),
    ):
        op.execute_complete(ctx, success(trigger))
    state = op.lake_state.get("orders")
    assert state.failure_job == WINDOW_KEY and "not COMMITTED by run" in state.failure_reason
    assert state.watermark == iso(START)  # initial_load off: the first window's start; nothing moved it
    # The job is FAILED: the retry runs the window again as a new attempt, where reconnecting to the
    # same finished batch would only fail the same way.
    assert op.registry.get_job(WINDOW_KEY).state == JobState.FAILED
    retry = submitted(env.make(initial_load=False), context())
    job = op.registry.get_job(WINDOW_KEY)
    assert (job.state, job.attempt, retry.batch_id) == (JobState.SUBMITTED, 2, 101)


def test_the_initial_snapshot_goes_on_to_the_runs_window_in_the_same_try(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=True), context()
    snapshot = submitted(op, ctx)
    assert snapshot.job_key == "orders#snapshot"
    commit(op, "orders#snapshot", {"snapshot": "DONE", "watermark": iso(START), "snapshot_rows": 5000, "snapshot_chunks": 2})
    with pytest.raises(TaskDeferred) as window:
        op.execute_complete(ctx, success(snapshot))
    assert (window.value.trigger.job_key, window.value.trigger.batch_id) == (WINDOW_KEY, 101)
    assert op.registry.get_job("orders#snapshot").state == JobState.SUCCEEDED
    assert op.registry.get_job(WINDOW_KEY).state == JobState.SUBMITTED
    assert op.lake_state.window("orders", WINDOW).read_from == iso(START - op.pipeline.lookback)


def test_a_snapshot_batch_that_succeeded_without_finishing_the_snapshot_fails_the_task(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=True), context()
    snapshot = submitted(op, ctx)
    with pytest.raises(
        AirflowException,
        match="orders#snapshot: batch 100 succeeded but the registry shows the snapshot PENDING; re-run the task to resume it",
    ):
        op.execute_complete(ctx, success(snapshot))
    assert op.lake_state.get("orders").failure_job == "orders#snapshot"


def test_a_failed_window_notes_the_jobs_error_line_in_the_lake_state(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    line = "pipeline orders (shop.orders): cannot connect to MySQL at db:3306: timed out"
    env.livys(endpoint_of("c1")).log = ["INFO starting", f"SPOTLAKE_ERROR: {line}"]
    with pytest.raises(BatchFailed):
        op.execute_complete(ctx, trigger._event("failed", state="dead").payload)
    state = op.lake_state.get("orders")
    assert (state.failure_job, state.failure_reason) == (WINDOW_KEY, line)  # the line, not the whole log
