"""The stream supervisor's decisions as functions of what it observed (no registry, Livy or Kafka)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spotlake.registry import Cluster, ClusterState, Job, JobState
from spotlake.stream_status import Restart, StreamState
from spotlake.stream_supervisor import decisions
from spotlake.stream_supervisor.decisions import Assessment, BatchProbe, Decision, ProbeFailure
from spotlake.streaming import RestartBudget

RUNNING_JOB = Job(
    job_key="clicks",
    pool="large",
    state=JobState.SUBMITTED,
    attempt=2,
    cluster_id="large-0001",
    endpoint="http://a",
    batch_id=4,
    moves=1,
)
READY = Cluster(pool="large", cluster_id="large-0001", provider="local", state=ClusterState.READY)
DRAINING = Cluster(pool="large", cluster_id="large-0001", provider="local", state=ClusterState.DRAINING)
REPLACEMENT = Cluster(pool="large", cluster_id="large-0002", provider="local", state=ClusterState.READY)


def test_the_decisions_are_the_strings_the_reports_and_logs_had() -> None:
    assert [str(d) for d in Decision] == ["live", "wait", "start", "restart", "move"]
    assert Decision.RESTART == "restart" and f"{Decision.MOVE}" == "move"
    assert (ProbeFailure.LOST, ProbeFailure.UNREACHABLE) == ("lost", "unreachable")
    assert BatchProbe("lost").state == ProbeFailure.LOST


@pytest.mark.parametrize(
    ("job", "kind", "cause", "requeue"),
    [
        (None, Decision.START, "first start", False),
        (Job("clicks", "large", JobState.REQUEUED, reason="cluster large-0001 DEAD"), Decision.RESTART, "cluster lost", True),
        (Job("clicks", "large", JobState.FAILED), Decision.RESTART, "batch ended", False),
        (Job("clicks", "large", JobState.SUCCEEDED), Decision.RESTART, "batch ended", False),
        (Job("clicks", "large", JobState.QUEUED), Decision.START, "submission under way", False),
        (Job("clicks", "large", JobState.SUBMITTED, batch_id=-1), Decision.START, "submission under way", False),
    ],
)
def test_the_job_record_alone_decides(job: Job | None, kind: Decision, cause: str, requeue: bool) -> None:
    assessment = decisions.assess_job(job)
    assert assessment is not None and (assessment.kind, assessment.cause, assessment.requeue) == (kind, cause, requeue)


def test_a_submitted_job_with_a_batch_is_looked_at_further() -> None:
    assert decisions.assess_job(RUNNING_JOB) is None
    assert decisions.assess_cluster(RUNNING_JOB, READY) is None
    assert decisions.assess_batch(RUNNING_JOB, READY, BatchProbe("running")) is None


@pytest.mark.parametrize(
    "cluster",
    [
        None,
        Cluster("large", "large-0001", "local", ClusterState.DEAD, reason="spot"),
        Cluster("large", "large-0001", "local", ClusterState.TERMINATED),
    ],
)
def test_a_lost_cluster_restarts_the_stream_elsewhere(cluster: Cluster | None) -> None:
    assessment = decisions.assess_cluster(RUNNING_JOB, cluster)
    assert assessment is not None and (assessment.kind, assessment.cause, assessment.requeue) == (
        Decision.RESTART,
        "cluster lost",
        True,
    )
    assert "large-0001 is " in assessment.reason


def test_livy_s_answer_decides() -> None:
    waiting = decisions.assess_batch(RUNNING_JOB, READY, BatchProbe(ProbeFailure.UNREACHABLE, "ConnectionError"))
    assert waiting is not None and waiting.kind == Decision.WAIT and "waiting for the fleet" in waiting.reason
    lost = decisions.assess_batch(RUNNING_JOB, READY, BatchProbe(ProbeFailure.LOST, "HTTP 404"))
    assert lost is not None and (lost.kind, lost.cause, lost.requeue) == (Decision.RESTART, "batch lost", False)
    dead = decisions.assess_batch(RUNNING_JOB, READY, BatchProbe("dead"), "SPOTLAKE_ERROR: sink unreachable")
    assert dead is not None and (dead.kind, dead.cause, dead.livy_state) == (Decision.RESTART, "batch dead", "dead")
    assert "sink unreachable" in dead.reason


def test_a_live_batch_moves_off_a_draining_cluster_only_to_a_replacement() -> None:
    moved = decisions.assess_live_batch(RUNNING_JOB, DRAINING, BatchProbe("running"), REPLACEMENT)
    assert (moved.kind, moved.requeue, moved.livy_state) == (Decision.MOVE, True, "running")
    assert decisions.assess_live_batch(RUNNING_JOB, DRAINING, BatchProbe("running"), None).kind == Decision.LIVE
    assert decisions.assess_live_batch(RUNNING_JOB, DRAINING, BatchProbe("running"), DRAINING).kind == Decision.LIVE
    assert decisions.assess_live_batch(RUNNING_JOB, READY, BatchProbe("idle"), REPLACEMENT).kind == Decision.LIVE


def test_retiring_a_job_requeues_it_when_it_leaves_its_cluster_and_fails_it_otherwise() -> None:
    moved = Assessment(Decision.MOVE, "cluster draining", "moving", requeue=True)
    assert decisions.retirement(RUNNING_JOB, moved) == {"state": JobState.REQUEUED, "reason": "moving", "moves": 2}
    ended = Assessment(Decision.RESTART, "batch dead", "x" * 2000)
    assert decisions.retirement(RUNNING_JOB, ended) == {"state": JobState.FAILED, "reason": "x" * 1000}
    assert decisions.retirement(None, ended) is None
    assert decisions.retirement(Job("clicks", "large", JobState.FAILED, batch_id=3), ended) is None


def test_the_budget_counts_restarts_and_moves_not_starts() -> None:
    budget = RestartBudget(2, timedelta(hours=1))
    recent = [Restart("2026-11-27T14:00:00+00:00", "batch dead", "a"), Restart("2026-11-27T14:01:00+00:00", "batch dead", "b")]
    assert decisions.over_budget(Assessment(Decision.RESTART), recent, budget)
    assert decisions.over_budget(Assessment(Decision.MOVE), recent, budget)
    assert not decisions.over_budget(Assessment(Decision.START), recent, budget)
    assert not decisions.over_budget(Assessment(Decision.RESTART), recent[:1], budget)
    reason = decisions.backed_off_reason(Assessment(Decision.RESTART, reason="dead again"), recent, budget)
    assert reason.startswith("2 restarts within 1h (restart_budget 2 per 1h): not restarting until 2026-11-27T14:00")
    assert reason.endswith("the last: batch dead: b; now: dead again")


def test_the_stream_state_after_each_decision() -> None:
    assert decisions.state_after(Assessment(Decision.LIVE)) == StreamState.RUNNING
    assert decisions.state_after(Assessment(Decision.WAIT)) == StreamState.WAITING
    assert decisions.state_after(Assessment(Decision.START)) == StreamState.STARTED
    assert decisions.state_after(Assessment(Decision.RESTART)) == StreamState.RESTARTED
    assert decisions.state_after(Assessment(Decision.MOVE)) == StreamState.MOVED
    assert decisions.state_after(Assessment(Decision.RESTART), reconnected=True) == StreamState.RUNNING
    assert decisions.recorded_livy_state(Assessment(Decision.LIVE, livy_state="running")) == "running"
    assert decisions.recorded_livy_state(Assessment(Decision.RESTART, livy_state="dead")) == "submitted"


def test_the_lag_from_the_committed_offsets_or_where_the_stream_starts() -> None:
    ends = {"clicks": {0: (0, 100), 1: (10, 50)}}
    assert decisions.lag(ends, {"clicks": {"0": 90, "1": 50}}, from_latest=False).by_partition == {"clicks/0": 10, "clicks/1": 0}
    assert decisions.lag(ends, None, from_latest=False).total == 140  # from the low offsets
    assert decisions.lag(ends, None, from_latest=True).total == 0  # from the end
    assert decisions.lag(ends, {"clicks": {"0": 90}}, from_latest=True).by_partition == {"clicks/0": 10, "clicks/1": 40}
