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
