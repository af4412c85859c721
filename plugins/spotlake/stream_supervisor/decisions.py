"""The stream supervisor's decisions, as functions of what it observed (no I/O).

:meth:`~spotlake.stream_supervisor.supervisor.StreamSupervisor.assess` looks at the stream's job,
then its cluster, then its batch, as far as it has to, and asks these functions at each step:

- :func:`assess_job`: the job record alone (no job: START; re-queued or ended: RESTART; being
  submitted: START, which reconnects to that submission);
- :func:`assess_cluster`: its cluster is DEAD, TERMINATED or gone: RESTART;
- :func:`assess_batch`: Livy does not answer: WAIT; Livy lost the batch, or it ended: RESTART;
- :func:`assess_live_batch`: its cluster drains and the pool has a READY replacement: MOVE; else LIVE.

Then :func:`over_budget`, :func:`retirement` and :func:`state_after` say what acting on the
assessment means for the restart budget, the job's record and the stream's reported state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spotlake.fleet import span
from spotlake.registry import Cluster, ClusterState, Job, JobState
from spotlake.stream_status import Restart, StreamState
from spotlake.stream_supervisor.report import Lag
from spotlake.streaming import RestartBudget

TERMINAL = ("success", "dead", "killed", "error")  # Livy's states of a batch that ended
GONE = (ClusterState.DEAD, ClusterState.TERMINATED)


class Decision(StrEnum):
    """What the supervisor does with the stream (:attr:`Assessment.kind`)."""

    LIVE = "live"  # its batch runs: nothing to do
    WAIT = "wait"  # its cluster does not answer: the fleet's health checks decide
    START = "start"  # no batch yet (or one being submitted): submit, or reconnect to that submission
    RESTART = "restart"  # its batch ended, was lost, or its cluster is gone: a new attempt, from the checkpoint
    MOVE = "move"  # its cluster drains: stop the batch, start it on the replacement


class ProbeFailure(StrEnum):
    """What a :class:`BatchProbe` holds instead of Livy's state of the batch."""

    LOST = "lost"  # Livy answered that it does not know the batch
    UNREACHABLE = "unreachable"  # Livy did not answer


@dataclass(frozen=True)
class BatchProbe:
    """What Livy says of a batch: ``state`` (Livy's), or ``lost`` (unknown), or ``unreachable``."""

    state: str
    detail: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Assessment:
    """What the supervisor makes of the stream's job: ``kind`` (a :class:`Decision`), why (``cause``,
    short, recorded with a restart; ``reason``, in full), Livy's state of the batch, and whether the
    job leaves its cluster (``requeue``: it is re-queued and its moves counted, not failed)."""

    kind: str
    cause: str = ""
    reason: str = ""
    livy_state: str = ""
    requeue: bool = False


def assess_job(job: Job | None) -> Assessment | None:
    """The decision the job's record alone makes, or None: its batch must be looked at."""
    if job is None:
        return Assessment(Decision.START, "first start", "the stream has no job yet")
    if job.state == JobState.REQUEUED:
        return Assessment(Decision.RESTART, "cluster lost", job.reason or "the fleet re-queued the stream's job", requeue=True)
    if job.state in (JobState.FAILED, JobState.SUCCEEDED):
        return Assessment(Decision.RESTART, "batch ended", job.reason or f"the job is {job.state}")
    if job.state == JobState.QUEUED or job.batch_id < 0:
        return Assessment(Decision.START, "submission under way", "another run is submitting the stream")
    return None


def assess_cluster(job: Job, cluster: Cluster | None) -> Assessment | None:
    """RESTART when the job's cluster (``cluster``: as the registry has it) is gone, else None."""
    if cluster is None or cluster.state in GONE:
        what = f"{cluster.state}: {cluster.reason}" if cluster else "gone from the registry"
        return Assessment(Decision.RESTART, "cluster lost", f"cluster {job.cluster_id} is {what}", requeue=True)
    return None


def assess_batch(job: Job, cluster: Cluster, probe: BatchProbe, error_line: str = "") -> Assessment | None:
    """The decision Livy's answer about the batch makes (``error_line``: the batch's error, once it
    ended), or None: the batch is live."""
    if probe.state == ProbeFailure.UNREACHABLE:
        return Assessment(
            Decision.WAIT,
            "cluster unreachable",
            f"Livy at {job.endpoint} does not answer ({probe.detail}); cluster {job.cluster_id} is still "
            f"{cluster.state}: waiting for the fleet's health checks before moving the stream",
        )
    if probe.state == ProbeFailure.LOST:
        return Assessment(
            Decision.RESTART, "batch lost", f"Livy at {job.endpoint} no longer knows batch {job.batch_id} ({probe.detail})"
        )
    if probe.terminal:
        return Assessment(
            Decision.RESTART,
            f"batch {probe.state}",
            f"batch {job.batch_id} on {job.cluster_id} ended '{probe.state}': "
            f"{error_line or 'no SPOTLAKE_ERROR line in its log'}",
            probe.state,
        )
    return None


def assess_live_batch(job: Job, cluster: Cluster, probe: BatchProbe, replacement: Cluster | None) -> Assessment:
    """MOVE when the batch's cluster drains and the pool has a READY ``replacement``; else LIVE."""
    if cluster.state == ClusterState.DRAINING and replacement is not None and replacement.cluster_id != cluster.cluster_id:
        return Assessment(
            Decision.MOVE,
            "cluster draining",
            f"cluster {cluster.cluster_id} is draining; moving to {replacement.cluster_id}",
            probe.state,
            requeue=True,
        )
    return Assessment(Decision.LIVE, livy_state=probe.state, reason=f"batch {job.batch_id} is {probe.state}")


def over_budget(assessment: Assessment, recent: list[Restart], budget: RestartBudget) -> bool:
    """Whether acting on ``assessment`` takes a restart the budget no longer has (``recent``: the
    restarts within its window); a start is not a restart."""
    return assessment.kind in (Decision.RESTART, Decision.MOVE) and len(recent) >= budget.restarts


def backed_off_reason(assessment: Assessment, recent: list[Restart], budget: RestartBudget) -> str:
    """Why the stream is not restarted while its budget is spent (``recent``: oldest first)."""
    oldest = min(recent, key=lambda r: r.at)
    return (
        f"{len(recent)} restarts within {span(budget.per)} (restart_budget {budget.restarts} per "
        f"{span(budget.per)}): not restarting until {oldest.at} is {span(budget.per)} old; "
        f"the last: {recent[-1].cause}: {recent[-1].reason}; now: {assessment.reason}"
    )


def retirement(job: Job | None, assessment: Assessment) -> dict[str, Any] | None:
    """The changes that end the job's current attempt so that a new one can be claimed: re-queued
    (counted as a move) when it leaves its cluster, failed otherwise. None when it has no running
    attempt (no job, or not SUBMITTED with a batch)."""
    if job is None or job.state != JobState.SUBMITTED or job.batch_id < 0:
        return None
    if assessment.requeue:
        return {"state": JobState.REQUEUED, "reason": assessment.reason[:1000], "moves": job.moves + 1}
    return {"state": JobState.FAILED, "reason": assessment.reason[:1000]}


def state_after(assessment: Assessment, reconnected: bool = False) -> StreamState:
    """The stream's state once the supervisor acted on ``assessment`` (``reconnected``: its
    submission found another run's batch)."""
    if assessment.kind == Decision.LIVE or reconnected:
        return StreamState.RUNNING
    if assessment.kind == Decision.WAIT:
        return StreamState.WAITING
    return {Decision.START: StreamState.STARTED, Decision.RESTART: StreamState.RESTARTED, Decision.MOVE: StreamState.MOVED}[
        Decision(assessment.kind)
    ]


def recorded_livy_state(assessment: Assessment) -> str:
    """Livy's state of the batch as the stream's status records it: the one observed, or
    ``submitted`` when the supervisor has just submitted a batch."""
    return assessment.livy_state if assessment.kind in (Decision.LIVE, Decision.WAIT) else "submitted"


def lag(ends: dict[str, dict[int, tuple[int, int]]], committed: dict[str, dict[str, int]] | None, from_latest: bool) -> Lag:
    """Records between ``committed`` (a query's offsets; None: it has committed nothing) and Kafka's
    ``ends`` (per topic and partition: low and high offsets). ``from_latest``: the stream starts at
    the latest offsets, so before its first commit it is behind by nothing."""
    by_partition: dict[str, int] = {}
    for topic, parts in sorted(ends.items()):
        for partition, (low, high) in sorted(parts.items()):
            done = (committed or {}).get(topic, {}).get(str(partition))
            if done is None:
                done = high if from_latest and committed is None else low
            by_partition[f"{topic}/{partition}"] = max(0, high - max(int(done), low))
    return Lag(sum(by_partition.values()), by_partition)
