"""The extraction task's completion on moto's registry and in-memory Livy servers: a window batch
that succeeded counts only once the registry shows its window COMMITTED by that run; the initial
snapshot goes on to the run's window in the same try; every failure is noted in the pipeline's
lake state with the job's own error."""

from __future__ import annotations

import dataclasses
import logging
import re
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
from operators.links import LAKE_TABLE_KEY, LIVY_LOG_KEY, SNAPSHOT_KEY
from operators.livy_batch import BatchFailed
from spark_jobs.common.lake_state import Owner, iso
from spotlake import sessions
from spotlake.pools import SessionSettings
from spotlake.registry import JobState, Registry
from spotlake.window_figures import window_figures
from tests.support.batch_jobs import Livys, endpoint_of, publish_fake_dependencies, ready
from tests.support.pipeline_configs import parse, with_pipeline
from tests.support.session_livy import FakeLivy
from triggers.livy import LivyBatchTrigger, LivyStatementTrigger

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
        s3=boto3.client("s3", region_name="eu-west-1"),
    )
    op.livy = livys  # type: ignore[method-assign]
    return op


class TaskInstance(dict[str, Any]):
    """The task instance's XComs, as the task pushes them."""

    def xcom_push(self, key: str, value: Any) -> None:
        self[key] = value


def context() -> dict[str, Any]:
    return {
        "data_interval_start": START,
        "data_interval_end": END,
        "outlet_events": defaultdict(SimpleNamespace),
        "ti": TaskInstance(),
    }


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


TIMINGS = {"record_s": 0.05, "read_s": 1.2, "secret_s": 0.1, "current_s": 0.4, "changes_s": 0.5, "lock_s": 0.0}
START_LINE = (
    f"window {WINDOW} (2026-12-05T14:00:00.000000+00:00 → 2026-12-05T14:05:00.000000+00:00) of shop.orders reads "
    "updated_at 2026-12-05T13:55:00.000000+00:00 → 2026-12-05T14:05:00.000000+00:00 (lookback 5m, committed watermark "
    "2026-12-05T14:00:00.000000+00:00): "
)
END_LINE = (
    f"window {WINDOW} committed by attempt 1: read 12 rows, wrote 11; snapshots lake.raw.orders 41, "
    "lake.raw.orders_changes 42; watermark 2026-12-05T14:05:00.000000+00:00; timings secret 0.10 s, read 1.20 s, "
    "lock 0.00 s, changes 0.50 s, current 0.40 s, record 0.05 s"
)


def info_lines(task_log: pytest.LogCaptureFixture) -> list[str]:
    """What the task's own code (the operator, the core library, the hooks) logged at INFO."""
    ours = ("airflow.task.operators.operators.", "spotlake.", "hooks.", "triggers.")
    return [r.getMessage() for r in task_log.records if r.levelno == logging.INFO and r.name.startswith(ours)]


def test_a_window_committed_by_its_batch_finishes_the_task_with_its_summary(
    env: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    assert (trigger.job_key, trigger.endpoint) == (WINDOW_KEY, endpoint_of("c1"))
    # one line at the start: the window, the range read with its lookback, the batch and its cluster
    assert info_lines(task_log) == [f"{START_LINE}submitted batch 100 of {WINDOW_KEY} on cluster c1 (http://c1:8998), attempt 1"]
    task_log.clear()
    commit(
        op,
        WINDOW_KEY,
        {"watermark": iso(END)},
        rows_read=12,
        rows_written=11,
        chunks=1,
        current_snapshot=41,
        changes_snapshot=42,
        current_rows=3000,
        timings=TIMINGS,
    )
    summary = op.execute_complete(ctx, success(trigger))
    committed_at = op.lake_state.window("orders", WINDOW).committed_at
    assert summary == {
        "pipeline": "orders",
        "window": WINDOW,
        "start": iso(START),
        "end": iso(END),
        "read_from": iso(START - op.pipeline.lookback),
        "read_until": None,
        "chunks": 1,
        "rows_read": 12,
        "rows_written": 11,
        "current_snapshot_id": 41,
        "changes_snapshot_id": 42,
        "current_rows": 3000,
        "watermark": iso(END),
        "committed_at": committed_at,
        "timings": {"secret_s": 0.1, "read_s": 1.2, "lock_s": 0.0, "changes_s": 0.5, "current_s": 0.4, "record_s": 0.05},
        "table": "lake.raw.orders",
        "changes_table": "lake.raw.orders_changes",
        "cluster": "c1",
        "batch_id": 100,
    }
    # one line at the end: rows read and written, the snapshots committed, the watermark, the phases' timings
    assert info_lines(task_log) == [END_LINE]
    # what the lake's consumers see of the commit: the window's figures (snapshots, rows, watermark)
    figures = window_figures(op.lake_state.window("orders", WINDOW), op.lake_state.get("orders"))
    assert ctx["outlet_events"][ASSET].extra == figures
    assert figures == {k: v for k, v in summary.items() if k in figures}
    assert (figures["current_snapshot_id"], figures["changes_snapshot_id"], figures["rows_written"]) == (41, 42, 11)
    assert figures["watermark"] == iso(END)
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


def test_the_initial_snapshot_and_then_the_window_each_log_one_start_line(
    env: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    op, ctx = env.make(initial_load=True), context()
    snapshot = submitted(op, ctx)
    assert info_lines(task_log) == [
        "initial snapshot of shop.orders (from the first chunk): submitted batch 100 of orders#snapshot on cluster c1 "
        "(http://c1:8998), attempt 1"
    ]
    task_log.clear()
    commit(op, "orders#snapshot", {"snapshot": "DONE", "watermark": iso(START), "snapshot_rows": 5000, "snapshot_chunks": 2})
    with pytest.raises(TaskDeferred):
        op.execute_complete(ctx, success(snapshot))
    assert info_lines(task_log) == [
        f"initial snapshot of shop.orders done: 5000 rows in 2 chunks; windows start from {iso(START)}",
        f"{START_LINE}submitted batch 101 of {WINDOW_KEY} on cluster c1 (http://c1:8998), attempt 1",
    ]


def test_a_window_after_a_pause_says_the_gap_it_covers_and_the_chunks_it_reads_it_in(
    env: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    op, ctx = env.make(initial_load=False), context()
    paused = START - timedelta(hours=3)
    op.lake_state.ensure("orders", initial_load=False, first_start=paused)  # committed up to 3 h before this window
    submitted(op, ctx)
    assert info_lines(task_log) == [
        f"window {WINDOW} ({iso(START)} → {iso(END)}) of shop.orders reads updated_at {iso(paused - timedelta(minutes=5))} "
        f"→ {iso(END)} (lookback 5m, committed watermark {iso(paused)}; covers 3h not yet committed before this window; "
        "3h 10m to read, more than read.max_window (1h): read and committed in 4 chunks): submitted batch 100 of "
        f"{WINDOW_KEY} on cluster c1 (http://c1:8998), attempt 1"
    ]


def test_a_retry_reads_the_range_planned_by_the_first_try_and_says_so(
    env: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    submitted(env.make(initial_load=False), context())
    planned = env.registry.get_job(WINDOW_KEY)
    env.registry.update_job(planned, state=JobState.FAILED, reason="the first try failed")
    task_log.clear()
    retry = env.make(initial_load=False)
    submitted(retry, context())
    planned_at = retry.lake_state.window("orders", WINDOW).planned_at
    assert info_lines(task_log) == [
        f"window {WINDOW} ({iso(START)} → {iso(END)}) of shop.orders reads updated_at "
        f"{iso(START - timedelta(minutes=5))} → {iso(END)} (the range planned at {planned_at}, read again): "
        f"submitted batch 101 of {WINDOW_KEY} on cluster c1 (http://c1:8998), attempt 2"
    ]


def test_a_window_that_wrote_nothing_says_it_committed_no_snapshot(
    env: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    task_log.clear()
    commit(op, WINDOW_KEY, {"watermark": iso(END)}, chunks=2, read_until=iso(END - timedelta(seconds=2)))
    op.execute_complete(ctx, success(trigger))
    assert info_lines(task_log) == [
        f"window {WINDOW} committed by attempt 1: read 0 rows, wrote 0 in 2 chunks; read up to "
        f"{iso(END - timedelta(seconds=2))} (a transaction open on the source); snapshots none (nothing to write); "
        f"watermark {iso(END)}; timings none"
    ]


# ---------------------------------------------------------------- warm execution: a statement in a session


@pytest.fixture
def in_session(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The task with its windows as statements in the pool's sessions; Livy answers that a statement
    still runs the first time it is asked, so the task defers on it."""
    monkeypatch.setattr(sessions.time, "sleep", lambda seconds: None)
    livy = FakeLivy(statement_polls=1)
    op = env.make(initial_load=False)
    op.__dict__["session_settings"] = SessionSettings(inline_wait=timedelta(0))
    op.livy_sessions = lambda endpoint: sessions.LivySessions(livy)  # type: ignore[method-assign]
    return SimpleNamespace(op=op, livy=livy)


def posted(op: ExtractWindowOperator, ctx: dict[str, Any]) -> LivyStatementTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    assert deferred.value.method_name == "statement_complete"
    return deferred.value.trigger


def done(trigger: LivyStatementTrigger, livy: FakeLivy) -> dict[str, Any]:
    """The trigger's event once Livy has the statement done."""
    statement = livy.run_method(f"/sessions/{trigger.session_id}/statements/{trigger.statement_id}").json()
    assert statement["state"] == "available"
    return trigger._event("done", statement=statement).payload


def test_a_window_in_a_session_logs_its_statement_at_the_start_and_its_figures_at_the_end(
    in_session: SimpleNamespace, task_log: pytest.LogCaptureFixture
) -> None:
    op, ctx = in_session.op, context()
    trigger = posted(op, ctx)
    (start,) = info_lines(task_log)
    posted_line = f"posted statement 1 of session 0 of {WINDOW_KEY} on cluster c1 (http://c1:8998), attempt 1"
    assert re.fullmatch(
        re.escape(f"{START_LINE}{posted_line}; session 0 started in ") + r"\d+\.\d s; job code [0-9a-f]{12} loaded in \d+\.\d s",
        start,
    ), start
    task_log.clear()
    commit(op, WINDOW_KEY, {"watermark": iso(END)}, rows_read=12, rows_written=11, chunks=1, current_snapshot=41,
           changes_snapshot=42, timings=TIMINGS)  # fmt: skip
    summary = op.statement_complete(ctx, done(trigger, in_session.livy))
    assert info_lines(task_log) == [END_LINE]
    assert (summary["session_id"], summary["statement_id"], summary["batch_id"]) == (0, 1, -1)


def test_a_failed_statement_fails_the_task_with_the_jobs_error_line_and_the_tail_of_the_driver_log(
    in_session: SimpleNamespace,
) -> None:
    op, ctx, livy = in_session.op, context(), in_session.livy
    line = "pipeline orders (shop.orders): cannot connect to MySQL at db:3306: timed out"
    livy.output = {"status": "ok", "data": {"text/plain": f"starting\nSPOTLAKE_ERROR: {line}\nSPOTLAKE_EXIT: 1"}}
    livy.log = [f"26/12/05 14:05:{i:02d} INFO driver line {i}" for i in range(60)]
    trigger = posted(op, ctx)
    with pytest.raises(BatchFailed) as failed:
        op.statement_complete(ctx, done(trigger, livy))
    message = str(failed.value)
    assert failed.value.error == line
    assert message.startswith(f"{WINDOW_KEY}: statement 1 of session 0 on cluster c1 failed: {line}\n")
    assert f"--- statement output (tail) ---\nstarting\nSPOTLAKE_ERROR: {line}\nSPOTLAKE_EXIT: 1\n" in message
    driver = message.split("--- session 0 log (tail) ---\n", 1)[1].splitlines()
    assert driver == livy.log[-40:]
    assert op.lake_state.get("orders").failure_reason == line


def test_the_task_pushes_where_its_lake_table_snapshot_and_livy_log_are(env: SimpleNamespace) -> None:
    op, ctx = env.make(initial_load=False), context()
    trigger = submitted(op, ctx)
    table = {
        "table": "lake.raw.orders",
        "location": "s3://spotlake-lake/warehouse/raw/orders",  # the JDBC catalog's location of the table
        "console": {"region": "eu-west-1", "aws_domain": "aws.amazon.com"},
    }
    livy = {"endpoint": "http://c1:8998", "kind": "batch", "id": 100}
    assert ctx["ti"] == {LAKE_TABLE_KEY: table, LIVY_LOG_KEY: livy}  # from the start: a failed run links them too
    commit(op, WINDOW_KEY, {"watermark": iso(END)}, rows_read=1, rows_written=1, chunks=1, current_snapshot=41)
    op.execute_complete(ctx, success(trigger))
    assert ctx["ti"] == {LAKE_TABLE_KEY: table, LIVY_LOG_KEY: livy, SNAPSHOT_KEY: {**table, "snapshot_id": 41}}


def test_a_statements_livy_log_is_its_sessions(in_session: SimpleNamespace) -> None:
    ctx = context()
    posted(in_session.op, ctx)
    assert ctx["ti"][LIVY_LOG_KEY] == {"endpoint": "http://c1:8998", "kind": "session", "id": 0}
