"""The batch operator waits for a READY cluster by deferring, for a bounded time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from moto import mock_aws

from operators.livy_batch import PoolBatchOperator
from spotlake.jobs import BatchRequest
from spotlake.registry import Registry


class Op(PoolBatchOperator):
    def build_request(self, context: Any) -> BatchRequest:
        return BatchRequest(job_key="orders#w1", pool=self.pool_name, file="/jobs/extract.py")

    def build_args(self, context: Any, run_id: str) -> list[str]:
        return []


@pytest.fixture
def operator() -> Iterator[Op]:
    with mock_aws():
        op = Op(task_id="t", pool_name="small", wait_for_cluster=timedelta(minutes=15))
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


def test_the_jobs_report_is_read_when_the_log_has_no_lines(operator: Op, tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Cluster mode: the driver's lines go to YARN, not to Livy's batch log; the report has them."""
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from spotlake.jobs import report_uri

    monkeypatch.setenv("SPOTLAKE_ARTIFACTS", str(tmp_path))
    event = failed_batch(operator, ["26/12/05 INFO Client: Application report for application_1 (state: FAILED)"])
    report = tmp_path / "reports" / "run-1.json"
    assert report_uri(str(tmp_path), "run-1") == str(report)
    report.parent.mkdir()
    report.write_text(json.dumps({"status": "failed", "error": "column 'amount': [CAST_OVERFLOW]",
                                  "data_error": True}))
    with pytest.raises(AirflowFailException, match=r"CAST_OVERFLOW"):
        operator.execute_complete({}, event)
    report.write_text(json.dumps({"status": "succeeded", "result": {"rows": 3}}))
    assert operator._batch_result(operator.registry.get_job("orders#w1")) == {"rows": 3}


@pytest.mark.parametrize(("error", "log", "lost"), [
    # the job failed on executors YARN took away: capacity
    ("SparkException: Job aborted: ExecutorLostFailure (executor 2 exited caused by one of the running tasks)",
     "WARN YarnAllocator: Container marked as failed: c3 on host h. Exit status: -100. Diagnostics: Container "
     "released on a *lost* node.", True),
    # the driver died without a word (its application master's node went away): capacity
    ("", "Application application_1 failed 1 times due to AM Container exited with exitCode: -100", True),
    # a memory kill is the job's own failure
    ("ExecutorLostFailure (executor 2 exited) Reason: Container killed by YARN for exceeding physical memory limits",
     "Exit status: -100", False),
    ("ExecutorLostFailure (executor 1 exited)", "Container marked as failed. Exit status: 137", False),
    # a spot reclaim Spark recovered from, then a real error: the job's own
    ("pipeline orders: Secrets Manager AccessDeniedException", "Exit status: -100 ... *lost* node", False),
    # a name that merely contains a word of YARN's
    ("pipeline asset_decommissions: cannot connect to MySQL", "INFO decommission of nothing", False),
])
def test_only_capacity_yarn_took_away_counts_as_lost(error: str, log: str, lost: bool) -> None:
    from operators.livy_batch import lost_capacity

    assert (lost_capacity(error, log) is not None) is lost
