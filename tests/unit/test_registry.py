from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

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
