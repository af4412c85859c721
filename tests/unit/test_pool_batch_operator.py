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
