"""The batch operator waits for a READY cluster by deferring, for a bounded time; on its trigger's
event it finishes, fails with the job's own error, or moves the job to the pool's replacement
cluster, up to max_moves times."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from airflow.sdk.exceptions import AirflowFailException
from moto import mock_aws

from operators.livy_batch import NEXT_JOB, BatchFailed, PoolBatchOperator
from spotlake.jobs import BatchRequest
from spotlake.registry import ClusterState, JobState, Registry
from tests.support.batch_jobs import Livys, endpoint_of, ready, replace
from triggers.livy import MIN_DEFERRAL, LivyBatchTrigger


class Op(PoolBatchOperator):
    def build_request(self, context: Any) -> BatchRequest:
        return BatchRequest(job_key="orders#w1", pool=self.pool_name, file="/jobs/extract.py")

    def build_args(self, context: Any, run_id: str) -> list[str]:
        return []


@pytest.fixture
def operator() -> Iterator[Op]:
    with mock_aws():
        op = Op(task_id="t", pool_name="small", wait_for_cluster=timedelta(minutes=15), capacity_inline_wait=timedelta(0))
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        registry.create_tables()
        op.__dict__["registry"] = registry  # the cached property, without an Airflow connection
        yield op


def test_no_ready_cluster_defers_and_carries_when_the_wait_began(operator: Op) -> None:
    with pytest.raises(TaskDeferred) as first:
        operator.execute({})
    since = first.value.kwargs["since"]
    assert first.value.method_name == "resume_waiting"
    with pytest.raises(TaskDeferred) as again:
        operator.resume_waiting({}, since=since)
    assert again.value.kwargs["since"] == since


class FakeTime:
    """The operator's clock and sleep: each sleep advances the clock and runs ``on_sleep``."""

    def __init__(self, on_sleep: Callable[[int], None] = lambda n: None) -> None:
        self.now, self.slept, self.on_sleep = 0.0, [], on_sleep

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.slept))

    def monotonic(self) -> float:
        return self.now


def test_capacity_is_awaited_in_the_task_first_and_a_deferral_for_it_is_never_short(
    operator: Op, livys: Livys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deferral that resumes within seconds can be failed by Airflow's scheduler as "changed
    # externally" (apache/airflow#72716): a cluster READY within the inline wait costs no deferral.
    operator.capacity_inline_wait = timedelta(seconds=20)
    clock = FakeTime(lambda n: ready(operator.registry, "c1") if n == 3 else None)
    monkeypatch.setattr("operators.livy_batch.time", clock)
    with pytest.raises(TaskDeferred) as submitted:
        operator.execute({})
    assert clock.slept == [2.0, 2.0, 2.0] and submitted.value.method_name == "execute_complete"
    assert isinstance(submitted.value.trigger, LivyBatchTrigger)


def test_no_ready_cluster_within_the_inline_wait_defers_for_at_least_the_minimum(
    operator: Op, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator.capacity_inline_wait = timedelta(seconds=20)
    clock = FakeTime()
    monkeypatch.setattr("operators.livy_batch.time", clock)
    deferred_at = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    assert deferred.value.method_name == "resume_waiting" and sum(clock.slept) == 20.0
    (_, kwargs) = deferred.value.trigger.serialize()
    assert kwargs["moment"] - deferred_at >= MIN_DEFERRAL


def test_wait_longer_than_wait_for_cluster_fails_clearly(operator: Op) -> None:
    long_ago = (datetime.now(UTC) - timedelta(minutes=16)).isoformat()
    with pytest.raises(AirflowException, match="pool 'small' had no READY cluster for 0:15:00"):
        operator.resume_waiting({}, since=long_ago)


class Logs:
    """Livy's answer to a batch log request."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def get_batch_logs(self, batch_id: int, start: int, size: int) -> dict[str, Any]:
        return {"log": self.lines}


def failed_batch(operator: Op, log: list[str]) -> dict[str, Any]:
    from spotlake.registry import Cluster

    registry = operator.registry
    cluster = Cluster(pool="small", cluster_id="c1", provider="local", state="")
    registry.put_launching(cluster)
    cluster = registry.mark_ready(cluster, "http://livy")
    job = registry.claim_job("orders#w1", "small", cluster, "run-1", None)
    registry.update_job(job, batch_id=7, endpoint="http://livy")
    operator.livy = lambda endpoint: Logs(log)  # type: ignore[method-assign]
    return {"job_key": "orders#w1", "batch_id": 7, "endpoint": "http://livy", "status": "failed", "state": "dead"}


def test_a_data_error_fails_the_task_without_retries(operator: Op) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.livy_batch import BatchFailed

    message = "pipeline orders (shop.orders): window W chunk 1: transforms #1 (cast) column 'amount': [CAST_OVERFLOW]"
    event = failed_batch(operator, ["spark log", f"SPOTLAKE_DATA_ERROR: {message}", f"SPOTLAKE_ERROR: {message}"])
    with pytest.raises(AirflowFailException) as failed:
        operator.execute_complete({}, event)
    assert isinstance(failed.value, BatchFailed) and failed.value.error == message


def test_any_other_job_error_stays_retryable(operator: Op) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.livy_batch import BatchFailed

    event = failed_batch(operator, ["SPOTLAKE_ERROR: pipeline orders: cannot connect to MySQL"])
    with pytest.raises(BatchFailed) as failed:
        operator.execute_complete({}, event)
    assert not isinstance(failed.value, AirflowFailException)


class Livy(Logs):
    """A Livy that also takes a new batch (the re-queued one)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.deleted: list[int] = []

    def post_batch(self, **body: Any) -> int:
        return 8

    def delete_batch(self, batch_id: int) -> None:
        self.deleted.append(batch_id)

    def get_batch_state(self, batch_id: int, retry_args: Any = None) -> str:
        return "running"


SPOT_RECLAIM = [
    "26/12/05 12:00:01 WARN YarnAllocator: Container marked as failed: container_1_0001_01_000003 on host: "
    "ip-10-0-1-5.ec2.internal. Exit status: -100. Diagnostics: Container released on a *lost* node.",
    "SPOTLAKE_ERROR: pipeline orders (shop.orders): extraction failed: SparkException: Job aborted due to stage "
    "failure: Task 3 in stage 2.0 failed 4 times: ExecutorLostFailure (executor 2 exited caused by one of the "
    "running tasks) Reason: Container marked as failed",
]


def test_a_batch_that_lost_its_spot_capacity_is_requeued_without_a_retry(operator: Op) -> None:
    event = failed_batch(operator, [])
    livy = Livy(SPOT_RECLAIM)
    operator.livy = lambda endpoint: livy  # type: ignore[method-assign]
    with pytest.raises(TaskDeferred):
        operator.execute_complete({}, event)
    job = operator.registry.get_job("orders#w1")
    assert (job.moves, job.batch_id, livy.deleted, job.state) == (1, 8, [7], "SUBMITTED")  # moved, not failed


def test_a_data_error_is_never_taken_for_lost_capacity(operator: Op) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    event = failed_batch(operator, [*SPOT_RECLAIM, "SPOTLAKE_DATA_ERROR: column 'amount': [CAST_OVERFLOW]"])
    with pytest.raises(AirflowFailException):
        operator.execute_complete({}, event)


def test_the_jobs_report_is_read_when_the_log_has_no_lines(operator: Op, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cluster mode: the driver's lines go to YARN, not to Livy's batch log; the report has them."""
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from spotlake.jobs import report_uri

    monkeypatch.setenv("SPOTLAKE_ARTIFACTS", str(tmp_path))
    event = failed_batch(operator, ["26/12/05 INFO Client: Application report for application_1 (state: FAILED)"])
    report = tmp_path / "reports" / "run-1.json"
    assert report_uri(str(tmp_path), "run-1") == str(report)
    report.parent.mkdir()
    report.write_text(json.dumps({"status": "failed", "error": "column 'amount': [CAST_OVERFLOW]", "data_error": True}))
    with pytest.raises(AirflowFailException, match=r"CAST_OVERFLOW"):
        operator.execute_complete({}, event)
    report.write_text(json.dumps({"status": "succeeded", "result": {"rows": 3}}))
    assert operator._batch_result(operator.registry.get_job("orders#w1")) == {"rows": 3}


@pytest.mark.parametrize(
    ("error", "log", "lost"),
    [
        # the job failed on executors YARN took away: capacity
        (
            "SparkException: Job aborted: ExecutorLostFailure (executor 2 exited caused by one of the running tasks)",
            "WARN YarnAllocator: Container marked as failed: c3 on host h. Exit status: -100. Diagnostics: Container "
            "released on a *lost* node.",
            True,
        ),
        # the driver died without a word (its application master's node went away): capacity
        ("", "Application application_1 failed 1 times due to AM Container exited with exitCode: -100", True),
        # a memory kill is the job's own failure
        (
            "ExecutorLostFailure (executor 2 exited) Reason: Container killed by YARN for exceeding physical memory limits",
            "Exit status: -100",
            False,
        ),
        ("ExecutorLostFailure (executor 1 exited)", "Container marked as failed. Exit status: 137", False),
        # a spot reclaim Spark recovered from, then a real error: the job's own
        ("pipeline orders: Secrets Manager AccessDeniedException", "Exit status: -100 ... *lost* node", False),
        # a name that merely contains a word of YARN's
        ("pipeline asset_decommissions: cannot connect to MySQL", "INFO decommission of nothing", False),
    ],
)
def test_only_capacity_yarn_took_away_counts_as_lost(error: str, log: str, lost: bool) -> None:
    from operators.livy_batch import lost_capacity

    assert (lost_capacity(error, log) is not None) is lost


# ---------------------------------------------------------------- completion: each event of the trigger


@pytest.fixture
def livys(operator: Op, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Livys:
    monkeypatch.setenv("SPOTLAKE_ARTIFACTS", str(tmp_path))  # where a job's report would be: none is
    livys = Livys()
    operator.livy = livys  # type: ignore[method-assign]
    return livys


def submitted(operator: Op) -> LivyBatchTrigger:
    """Execute the task: it submits orders#w1 to the pool's READY cluster and defers on the batch."""
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


def event(trigger: LivyBatchTrigger, status: str, **extra: Any) -> dict[str, Any]:
    """What the trigger yields for ``status``."""
    return trigger._event(status, **extra).payload


def test_a_batch_that_succeeded_marks_its_job_succeeded_and_returns_the_tasks_result(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    result = operator.execute_complete({}, event(trigger, "success", state="success"))
    assert result == {"job_key": "orders#w1", "batch_id": 100, "cluster": "c1"}
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.batch_id, job.attempt, job.moves) == (JobState.SUCCEEDED, 100, 1, 0)


def test_the_jobs_result_is_its_last_result_line_in_the_batch_log(
    operator: Op, livys: Livys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the maintenance and reconciliation operators read what their job did (it wrote no report)."""
    monkeypatch.setattr(operator, "on_batch_success", lambda context, job: operator._batch_result(job))
    ready(operator.registry, "c1")
    livys(endpoint_of("c1")).log = [
        "INFO starting",
        'SPOTLAKE_RESULT: {"rows": 1}',
        "INFO done",
        'SPOTLAKE_RESULT: {"rows": 3, "tables": {"lake.shop.orders": {}}}',
    ]
    trigger = submitted(operator)
    assert operator.execute_complete({}, event(trigger, "success", state="success")) == {
        "rows": 3,
        "tables": {"lake.shop.orders": {}},
    }
    livys(endpoint_of("c1")).log = ["SPOTLAKE_RESULT: {not json"]
    assert operator._batch_result(operator.registry.get_job("orders#w1")) is None
    livys(endpoint_of("c1")).unreachable = True
    assert operator._batch_result(operator.registry.get_job("orders#w1")) is None


def test_a_job_that_goes_on_to_its_next_job_submits_it_in_the_same_try(
    operator: Op, livys: Livys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the extraction task does after the initial snapshot: on_batch_success says NEXT_JOB."""
    keys = ["orders#snapshot", "orders#w1"]

    def next_job(context: Any, job: Any) -> Any:
        keys.pop(0)
        return NEXT_JOB

    monkeypatch.setattr(
        operator, "build_request", lambda context: BatchRequest(job_key=keys[0], pool="small", file="/jobs/extract.py")
    )
    monkeypatch.setattr(operator, "on_batch_success", next_job)
    ready(operator.registry, "c1")
    first = submitted(operator)
    assert first.job_key == "orders#snapshot"
    with pytest.raises(TaskDeferred) as second:
        operator.execute_complete({}, event(first, "success", state="success"))
    assert (second.value.trigger.job_key, second.value.trigger.batch_id) == ("orders#w1", 101)
    assert operator.registry.get_job("orders#snapshot").state == JobState.SUCCEEDED
    assert operator.registry.get_job("orders#w1").state == JobState.SUBMITTED


def test_a_failed_batch_fails_the_task_with_the_jobs_error_line(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    livys(endpoint_of("c1")).log = [
        "INFO SparkContext: Running Spark version 3.5.7",
        "SPOTLAKE_ERROR: pipeline orders: first attempt",
        "SPOTLAKE_ERROR: pipeline orders (shop.orders): cannot connect to MySQL at db:3306: timed out",
        "INFO ShutdownHookManager: Shutdown hook called",
    ]
    trigger = submitted(operator)
    with pytest.raises(BatchFailed) as failed:
        operator.execute_complete({}, event(trigger, "failed", state="dead"))
    line = "pipeline orders (shop.orders): cannot connect to MySQL at db:3306: timed out"
    assert failed.value.error == line
    assert str(failed.value).startswith(f"orders#w1: batch 100 on cluster c1 ended 'dead': {line}\n")
    assert "--- batch log (tail) ---" in str(failed.value) and "Shutdown hook called" in str(failed.value)
    assert not isinstance(failed.value, AirflowFailException)  # the job's own failure: Airflow may retry
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.reason, job.moves) == (JobState.FAILED, line, 0)


def test_a_batch_that_failed_without_a_word_fails_with_livys_state(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    livys(endpoint_of("c1")).log = ["26/12/05 ERROR SparkSubmit: killed by the driver's OOM"]
    trigger = submitted(operator)
    with pytest.raises(BatchFailed) as failed:
        operator.execute_complete({}, event(trigger, "failed", state="killed"))
    assert failed.value.error == "batch 100 on cluster c1 ended 'killed'"
    assert "ended 'killed': see the batch log below" in str(failed.value) and "OOM" in str(failed.value)
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.reason) == (JobState.FAILED, "batch ended killed")


def test_a_failed_batch_whose_log_cannot_be_read_still_fails_the_task(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    livys(endpoint_of("c1")).unreachable = True
    with pytest.raises(BatchFailed, match=r"\(batch log unavailable: Livy at http://c1:8998 did not answer"):
        operator.execute_complete({}, event(trigger, "failed", state="dead"))
    assert operator.registry.get_job("orders#w1").state == JobState.FAILED


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("requeued", "cluster c1 is DEAD: spot instance reclaimed"),
        ("lost", "Livy at http://c1:8998 does not know batch 100"),
        ("unreachable", "Livy at http://c1:8998 has not answered for 45 s: ConnectionRefusedError"),
    ],
)
def test_a_batch_whose_cluster_went_away_is_resubmitted_on_the_replacement(
    operator: Op, livys: Livys, status: str, reason: str
) -> None:
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    replace(operator.registry, "c1", "c2")
    livys(endpoint_of("c1")).unreachable = status == "unreachable"
    with pytest.raises(TaskDeferred) as moved:
        operator.execute_complete({}, event(trigger, status, reason=reason))
    new = moved.value.trigger
    assert moved.value.method_name == "execute_complete"
    assert (new.endpoint, new.cluster_id, new.batch_id, new.job_key) == (endpoint_of("c2"), "c2", 100, "orders#w1")
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.cluster_id, job.batch_id, job.attempt, job.moves) == (JobState.SUBMITTED, "c2", 100, 2, 1)
    assert len(livys(endpoint_of("c2")).posted) == 1 and len(livys(endpoint_of("c1")).posted) == 1
    # the old batch is killed where its cluster still answers (a drained cluster may still run it)
    assert livys(endpoint_of("c1")).deleted == ([] if status == "unreachable" else [100])


def test_a_moved_job_with_no_replacement_yet_waits_for_one(operator: Op, livys: Livys) -> None:
    cluster = ready(operator.registry, "c1")
    trigger = submitted(operator)
    operator.registry.transition_cluster(cluster, ClusterState.DEAD, "spot instance reclaimed")
    with pytest.raises(TaskDeferred) as waiting:
        operator.execute_complete({}, event(trigger, "requeued", reason="cluster c1 is DEAD: spot instance reclaimed"))
    assert waiting.value.method_name == "resume_waiting" and waiting.value.kwargs["since"]
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.moves, job.reason) == (JobState.REQUEUED, 1, "cluster c1 is DEAD: spot instance reclaimed")


@pytest.mark.parametrize("moves", [0, 2])
def test_a_job_below_its_move_limit_is_moved_again(operator: Op, livys: Livys, moves: int) -> None:
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    operator.registry.update_job(operator.registry.get_job("orders#w1"), moves=moves)
    replace(operator.registry, "c1", "c2")
    with pytest.raises(TaskDeferred):
        operator.execute_complete({}, event(trigger, "lost", reason="Livy at http://c1:8998 does not know batch 100"))
    assert operator.registry.get_job("orders#w1").moves == moves + 1


@pytest.mark.parametrize("moves", [0, 3])
def test_a_job_the_fleet_requeued_first_counts_that_move_once(operator: Op, livys: Livys, moves: int) -> None:
    """The fleet declared the cluster DEAD and re-queued the job (one more move) before the task saw
    its event: the task resubmits it without counting the move again, and the limit still holds."""
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    job = operator.registry.update_job(operator.registry.get_job("orders#w1"), moves=moves)
    operator.registry.update_job(job, state=JobState.REQUEUED, moves=moves + 1, reason="cluster c1 DEAD: spot instance reclaimed")
    replace(operator.registry, "c1", "c2")
    if moves < operator.max_moves:
        with pytest.raises(TaskDeferred):
            operator.execute_complete({}, event(trigger, "requeued", reason="cluster c1 DEAD: spot instance reclaimed"))
        job = operator.registry.get_job("orders#w1")
        assert (job.state, job.cluster_id, job.moves) == (JobState.SUBMITTED, "c2", moves + 1)
    else:
        with pytest.raises(AirflowException, match="lost 4 times"):
            operator.execute_complete({}, event(trigger, "requeued", reason="cluster c1 DEAD: spot instance reclaimed"))
        assert operator.registry.get_job("orders#w1").state == JobState.FAILED


def test_a_job_moved_max_moves_times_fails_the_task_naming_the_limit_and_the_last_loss(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    operator.registry.update_job(operator.registry.get_job("orders#w1"), moves=operator.max_moves)
    replace(operator.registry, "c1", "c2")
    with pytest.raises(AirflowException) as failed:
        operator.execute_complete({}, event(trigger, "requeued", reason="cluster c1 is DEAD: spot instance reclaimed"))
    assert str(failed.value) == (
        "orders#w1: its cluster or capacity was lost 4 times (limit max_moves=3); "
        "last: cluster c1 is DEAD: spot instance reclaimed"
    )
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.reason) == (JobState.FAILED, "moved 3 times; cluster c1 is DEAD: spot instance reclaimed")
    assert livys(endpoint_of("c2")).posted == []  # nothing resubmitted


def test_an_event_about_a_batch_the_job_no_longer_runs_follows_the_job(operator: Op, livys: Livys) -> None:
    """Another run of the task re-submitted the job (batch 101) while this one was deferred on batch
    100: its event says nothing about the job, so the task reconnects to the batch that runs it."""
    ready(operator.registry, "c1")
    trigger = submitted(operator)
    job = operator.registry.get_job("orders#w1")
    operator.registry.update_job(job, batch_id=101)
    with pytest.raises(TaskDeferred) as followed:
        operator.execute_complete({}, event(trigger, "failed", state="dead"))
    assert (followed.value.trigger.batch_id, followed.value.trigger.endpoint) == (101, endpoint_of("c1"))
    job = operator.registry.get_job("orders#w1")
    assert (job.state, job.batch_id, job.attempt) == (JobState.SUBMITTED, 101, 1)  # not failed, not re-claimed
    assert len(livys(endpoint_of("c1")).posted) == 1


def test_a_batch_logs_one_line_at_its_start_naming_the_batch_its_cluster_and_the_attempt(
    operator: Op, livys: Livys, task_log: pytest.LogCaptureFixture
) -> None:
    ready(operator.registry, "c1")
    submitted(operator)
    ours = ("airflow.task.operators.", "spotlake.")
    started = [r.getMessage() for r in task_log.records if r.levelno == logging.INFO and r.name.startswith(ours)]
    assert started == ["submitted batch 100 of orders#w1 on cluster c1 (http://c1:8998), attempt 1"]
    # a second run of the task finds the batch running and reconnects to it
    task_log.clear()
    again = Op(task_id="t", pool_name="small")
    again.__dict__["registry"] = operator.registry
    again.livy = livys  # type: ignore[method-assign]
    submitted(again)
    started = [r.getMessage() for r in task_log.records if r.levelno == logging.INFO and r.name.startswith(ours)]
    assert started == ["reconnected to batch 100 of orders#w1 on cluster c1 (http://c1:8998), attempt 1; Livy says running"]


def test_the_error_line_at_the_end_of_a_long_batch_log_is_found_and_its_tail_shown(operator: Op, livys: Livys) -> None:
    ready(operator.registry, "c1")
    line = "pipeline orders (shop.orders): cannot connect to MySQL at db:3306: timed out"
    livys(endpoint_of("c1")).log = [f"INFO line {i}" for i in range(1500)] + [f"SPOTLAKE_ERROR: {line}", "INFO shutdown"]
    trigger = submitted(operator)
    with pytest.raises(BatchFailed) as failed:
        operator.execute_complete({}, event(trigger, "failed", state="dead"))
    assert failed.value.error == line
    tail = str(failed.value).split("--- batch log (tail) ---\n", 1)[1].splitlines()
    assert tail == livys(endpoint_of("c1")).log[-40:]
