"""The fleet's deferrable watch (sensors/cluster_health.py): a pass, then a deferral on the pool's
watch trigger; woken, another pass; at the end of its watch, done. Over moto's DynamoDB and the
fake provider of test_fleet."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from airflow.sdk import DAG
from airflow.utils.state import TaskInstanceState
from moto import mock_aws

from sensors.cluster_health import ClusterHealthSensor
from spotlake.fleet import Fleet
from spotlake.providers.base import LaunchFailed
from spotlake.registry import ClusterState, Registry
from tests.support.fleet_fakes import FakeProvider, pool_config
from tests.support.task_logs import lines
from tests.support.task_runs import run_try
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


# ---------------------------------------------------------------- as Airflow runs it


@pytest.fixture
def in_dag(sensor: Any) -> Any:
    """The watch as a task of its fleet DAG, for Airflow's task runner."""
    watch, provider, registry = sensor
    with DAG("fleet_small", schedule=None, start_date=datetime(2026, 1, 1)):
        task = ClusterHealthSensor(task_id="watch", pool_name="small", watch_for=timedelta(minutes=5))
    task.__dict__.update(registry=registry, provider=provider, pool_config=pool_config(), fleet=Fleet(registry, provider))
    return task, provider, registry


def test_a_watch_of_a_healthy_pool_ends_in_success_not_skipped(
    in_dag: Any, monkeypatch: pytest.MonkeyPatch, task_log: pytest.LogCaptureFixture
) -> None:
    task, _, registry = in_dag
    first = run_try(task, monkeypatch)
    assert first.state == TaskInstanceState.DEFERRED and first.message.next_method == "resume"
    until = first.message.next_kwargs["until"]
    # the triggerer saw nothing to act on until the end of the watch
    task_log.clear()
    done = run_try(task, monkeypatch, next_method="resume", next_kwargs={"event": {"status": "done"}, "until": until})
    assert (done.state, done.error) == (TaskInstanceState.SUCCESS, None)
    assert sensor_lines(task_log) == [f"pool small: watched until {until}, nothing to act on since the last pass"]
    # woken at the end of its watch to act (a check failed, then recovered): one more pass, a success too
    task_log.clear()
    ended = datetime.now(UTC).isoformat()
    woken = {"event": {"status": "attention", "kind": "urgent", "reason": "cluster small-0001 failed a health check"}}
    last = run_try(task, monkeypatch, next_method="resume", next_kwargs={**woken, "until": ended})
    assert (last.state, last.error) == (TaskInstanceState.SUCCESS, None)
    assert sensor_lines(task_log) == [
        "pool small: woken: cluster small-0001 failed a health check",
        "pool small: checked small-0001 READY healthy",
        "pool small: nothing to do",
    ]
    assert [c.state for c in registry.clusters("small")] == [ClusterState.READY]  # nothing re-queued, nothing replaced


def test_each_pass_logs_the_clusters_it_checked_and_what_it_did(
    in_dag: Any, monkeypatch: pytest.MonkeyPatch, task_log: pytest.LogCaptureFixture
) -> None:
    task, _, _ = in_dag
    run_try(task, monkeypatch)
    assert sensor_lines(task_log) == [
        "pool small: cluster small-0001 launching: pool has no READY cluster",
        "pool small: cluster small-0001 ready: at http://small-0001:8998",
        "pool small: checked small-0001 READY healthy",
    ]


def test_a_pass_that_could_not_do_its_job_fails_the_try(in_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    task, provider, _ = in_dag
    provider.fail_launch = LaunchFailed("no capacity")
    failed = run_try(task, monkeypatch)
    assert failed.state == TaskInstanceState.FAILED and "could not be launched: no capacity" in str(failed.error)


def sensor_lines(task_log: pytest.LogCaptureFixture) -> list[str]:
    return lines(task_log, logging.INFO, "airflow.task.operators.sensors.cluster_health")


def test_a_poke_is_one_pass_that_is_done(sensor: Any) -> None:
    watch, _, registry = sensor
    poked = watch.poke({})
    assert poked.is_done and poked.xcom_value["events"][0]["action"] == "launching"
    assert [c.state for c in registry.clusters("small")] == [ClusterState.READY]
