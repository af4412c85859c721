"""The fleet's deferrable watch (sensors/cluster_health.py): a pass, then a deferral on the pool's
watch trigger; woken, another pass; at the end of its watch, done. Over moto's DynamoDB and the
fake provider of test_fleet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from moto import mock_aws

from sensors.cluster_health import ClusterHealthSensor
from spotlake.fleet import Fleet
from spotlake.providers.base import LaunchFailed
from spotlake.registry import ClusterState, Registry
from tests.support.fleet_fakes import FakeProvider, pool_config
from triggers.fleet import PoolWatchTrigger


@pytest.fixture
def sensor() -> Iterator[tuple[ClusterHealthSensor, FakeProvider, Registry]]:
    with mock_aws():
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        registry.create_tables()
        provider = FakeProvider()
        watch = ClusterHealthSensor(task_id="watch", pool_name="small", watch_for=timedelta(minutes=5))
        watch.__dict__.update(registry=registry, provider=provider, pool_config=pool_config(), fleet=Fleet(registry, provider))
        yield watch, provider, registry


def test_a_pass_then_a_deferral_until_the_end_of_the_watch(sensor: Any) -> None:
    watch, provider, registry = sensor
    start = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as deferred:
        watch.execute({"logical_date": start})
    assert [c.state for c in registry.clusters("small")] == [ClusterState.READY]  # the pass launched one
    trigger = deferred.value.trigger
    assert isinstance(trigger, PoolWatchTrigger) and trigger.interval == 15.0
    assert deferred.value.method_name == "resume"
    until = deferred.value.kwargs["until"]
    assert datetime.fromisoformat(until) == start + timedelta(minutes=5)
    # Woken because a check failed: another pass (the cluster is confirmed DEAD and replaced), then
    # the same watch goes on.
    (first,) = [c.cluster_id for c in registry.clusters("small")]
    provider.fail(first)
    # The real pass, without sleeping the health-check interval between its checks.
    watch.fleet.tend = lambda pool, sleep=None: Fleet.tend(watch.fleet, pool, sleep=lambda s: None)
    with pytest.raises(TaskDeferred) as again:
        watch.resume({}, {"status": "attention", "kind": "urgent", "reason": f"cluster {first} failed"}, until)
    assert again.value.kwargs["until"] == until
    assert {c.cluster_id: c.state for c in registry.clusters("small")}[first] == ClusterState.DEAD
    assert [c.state for c in registry.clusters("small") if c.cluster_id != first] == [ClusterState.READY]
    assert watch.resume({}, {"status": "done"}, until) == {"pool": "small", "watched_until": until}


def test_a_pass_that_could_not_do_its_job_fails_the_task(sensor: Any) -> None:
    watch, provider, _ = sensor
    provider.fail_launch = LaunchFailed("no capacity")
    with pytest.raises(AirflowException, match="could not be launched: no capacity"):
        watch.execute({"logical_date": datetime.now(UTC)})


def test_maintenance_of_a_pipeline_with_nothing_committed_submits_no_batch(sensor: Any) -> None:
    from operators.maintenance import LakeMaintenanceOperator

    _, _, registry = sensor
    operator = LakeMaintenanceOperator(task_id="maintain_p", pipeline_name="p", pool_name="small")
    operator.__dict__["registry"] = registry
    operator.__dict__["s3"] = None  # publishing the job code would need it: it must not happen
    assert operator.execute({}) == {"skipped": "nothing has been committed to its lake tables yet"}
