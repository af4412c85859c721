from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from spotlake.errors import SpotlakeError
from spotlake.registry import (
    Cluster,
    ClusterState,
    JobState,
    Registry,
    StaleState,
)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        reg.create_tables()  # idempotent
        yield reg


def launch(registry: Registry, pool: str, cluster_id: str, endpoint: str = "http://e", replaces: str = "") -> Cluster:
    cluster = Cluster(pool=pool, cluster_id=cluster_id, provider="local", state="")
    registry.put_launching(cluster)
    return registry.mark_ready(cluster, endpoint, replaces=replaces)


def test_cluster_lifecycle_and_one_active_per_pool(registry: Registry) -> None:
    a = launch(registry, "small", "a")
    assert registry.ready_cluster("small").cluster_id == "a"
    b = Cluster(pool="small", cluster_id="b", provider="local", state="")
    registry.put_launching(b)
    with pytest.raises(StaleState):
        registry.mark_ready(b, "http://b")  # the pool already has an active cluster
    registry.mark_ready(b, "http://b", replaces="a")
    assert registry.ready_cluster("small").cluster_id == "b"
    # a is still READY in its own row but no longer takes new work; it drains
    registry.transition_cluster(a, ClusterState.DRAINING, "rotation")
    assert registry.ready_cluster("small").cluster_id == "b"
    assert {c.cluster_id: c.state for c in registry.clusters("small")} == {"a": "DRAINING", "b": "READY"}


def test_dead_active_cluster_clears_the_pool(registry: Registry) -> None:
    a = launch(registry, "small", "a")
    registry.transition_cluster(a, ClusterState.DEAD, "spot interruption")
    assert registry.ready_cluster("small") is None
    assert registry.get_cluster("small", "a").reason == "spot interruption"
    launch(registry, "small", "c")  # a vacancy again: no `replaces`
    assert registry.ready_cluster("small").cluster_id == "c"


def test_stale_cluster_transition_loses(registry: Registry) -> None:
    a = launch(registry, "small", "a")
    stale = registry.get_cluster("small", "a")
    registry.transition_cluster(a, ClusterState.DEAD, "x")
    with pytest.raises(StaleState):
        registry.transition_cluster(stale, ClusterState.DRAINING, "y")


def test_duplicate_launch_id_rejected(registry: Registry) -> None:
    launch(registry, "small", "a")
    with pytest.raises(StaleState):
        registry.put_launching(Cluster(pool="small", cluster_id="a", provider="local", state=""))


def test_racing_launches_leave_one_ready(registry: Registry) -> None:
    # Eight fleet runs each launched a cluster for the same vacancy and read the pool as
    # empty; they now all try to make theirs the active one. The conditions decide (moto
    # applies writes one at a time, as DynamoDB does per item; threads would race inside
    # moto itself, which is not what is under test).
    for i in range(8):
        registry.put_launching(Cluster(pool="large", cluster_id=f"c{i}", provider="local", state=""))
    clusters = [registry.get_cluster("large", f"c{i}") for i in range(8)]
    wins: list[str] = []
    for cluster in clusters:
        try:
            registry.mark_ready(cluster, f"http://{cluster.cluster_id}")
            wins.append(cluster.cluster_id)
        except StaleState:
            pass
    ready = [c for c in registry.clusters("large") if c.state == ClusterState.READY]
    assert wins == ["c0"] and [c.cluster_id for c in ready] == wins
    assert registry.ready_cluster("large").cluster_id == "c0"


def test_job_claim_is_conditional(registry: Registry) -> None:
    a = launch(registry, "small", "a")
    job = registry.claim_job("orders#w1", "small", a, "run1", expected=None)
    assert (job.state, job.attempt, job.batch_id) == (JobState.SUBMITTED, 1, -1)
    with pytest.raises(StaleState):
        registry.claim_job("orders#w1", "small", a, "run2", expected=None)
    job = registry.update_job(job, batch_id=7)
    stale = registry.get_job("orders#w1")
    registry.update_job(job, state=JobState.SUCCEEDED)
    with pytest.raises(StaleState):
        registry.update_job(stale, state=JobState.FAILED)
    again = registry.claim_job("orders#w1", "small", a, "run3", expected=registry.get_job("orders#w1"))
    assert (again.attempt, again.run_id, again.batch_id) == (2, "run3", -1)


def dynamodb_calls(registry: Registry) -> list[str]:
    """Every DynamoDB operation the registry's client makes from now on, by name."""
    calls: list[str] = []
    registry.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    return calls


def test_a_finished_job_expires_after_the_retention_and_a_job_claimed_again_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with mock_aws():
        monkeypatch.setenv("SPOTLAKE_JOB_RETENTION_DAYS", "2")
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        registry.create_tables()
        a = launch(registry, "small", "a")
        job = registry.claim_job("orders#w1", "small", a, "run1", expected=None)
        assert registry.get_job("orders#w1").expires_at is None
        running = registry.update_job(job, batch_id=7)
        assert running.expires_at is None
        before = int(time.time())
        registry.update_job(running, state=JobState.FAILED, reason="boom")
        stored = registry.get_job("orders#w1")
        assert before + 2 * 86400 <= stored.expires_at <= time.time() + 2 * 86400
        again = registry.claim_job("orders#w1", "small", a, "run2", expected=stored)  # a cleared task
        assert again.expires_at is None and registry.get_job("orders#w1").expires_at is None
        # Its second attempt ends: kept, since a claim after a deletion would start again at attempt 1
        # and the lake's rows of attempt 2 would refuse it.
        registry.update_job(again, state=JobState.SUCCEEDED)
        assert registry.get_job("orders#w1").expires_at is None


@pytest.mark.parametrize("value", ["0", "-3", "two weeks"])
def test_a_retention_that_is_not_a_positive_number_of_days_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SPOTLAKE_JOB_RETENTION_DAYS", value)
    with pytest.raises(SpotlakeError, match=rf"SPOTLAKE_JOB_RETENTION_DAYS='{value}' is not a number of days above 0; set it"):
        Registry(None, "t")


def test_jobs_are_found_by_cluster_pool_and_recent_move_through_queries_never_a_scan(registry: Registry) -> None:
    a, b = launch(registry, "small", "a"), launch(registry, "large", "b")
    for n in range(40):  # finished jobs: what a Scan would have to read through
        done = registry.claim_job(f"old#{n}", "small", a, "r", expected=None)
        registry.update_job(done, state=JobState.SUCCEEDED)
    on_a = registry.claim_job("orders#w1", "small", a, "r", expected=None)
    registry.claim_job("stream", "large", b, "r", expected=None)
    moved = registry.update_job(on_a, state=JobState.REQUEUED, moves=1, reason="cluster a DEAD")
    c = launch(registry, "small", "c", replaces="a")
    moved = registry.claim_job("orders#w1", "small", c, "r2", expected=moved)
    assert moved.moved_day == moved.last_moved_at[:10]
    registry.update_job(moved, state=JobState.SUCCEEDED)

    calls = dynamodb_calls(registry)
    assert [j.job_key for j in registry.jobs_on_cluster("large", "b")] == ["stream"]
    assert registry.jobs_on_cluster("small", "b") == []  # another pool's cluster
    assert [j.job_key for j in registry.jobs_in_pool("small", (JobState.SUCCEEDED,))].count("orders#w1") == 1
    assert len(registry.jobs_in_pool("small", (JobState.SUCCEEDED, JobState.FAILED))) == 41
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    shown = {j.job_key: j.state for j in registry.jobs_to_show(["small", "large"], yesterday)}
    assert shown == {"stream": JobState.SUBMITTED, "orders#w1": JobState.SUCCEEDED}  # running, and moved lately
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert {j.job_key for j in registry.jobs_to_show(["small", "large"], later)} == {"stream"}
    assert set(calls) == {"Query"}
