"""The fleet: keep each pool supplied with one healthy READY cluster.

Pure logic over a :class:`~spotlake.registry.Registry`, a
:class:`~spotlake.providers.base.ClusterProvider` and a clock, so it is tested
without Airflow or real clusters. Its pieces, each idempotent:

- :meth:`Fleet.launch`: make LAUNCHING clusters that are up READY; launch a cluster
  when the pool has no live one.
- :meth:`Fleet.check_health`: check LAUNCHING, READY and DRAINING clusters; after
  ``failure_threshold`` consecutive failed checks (or at once when the provider says
  the cluster is gone) mark it DEAD and re-queue every job SUBMITTED on it.
- :meth:`Fleet.heal`: re-queue jobs left on dead clusters, then :meth:`launch`.
- :meth:`Fleet.rotate`: replace the READY cluster past ``max_age`` (the replacement
  takes over before the old one stops taking work), terminate DRAINING clusters when
  idle or at their drain deadline, re-queueing what is left.
- :meth:`Fleet.settle`: no cluster is left running (and billing) once the registry says it
  ended: each DEAD or TERMINATED cluster is asked about every pass, and its termination
  requested again, until the provider confirms it gone (``terminated_at``).
- :meth:`Fleet.meter`: each live cluster's instances (type, market, start, end) recorded from the
  provider every :data:`METER_EVERY`, and once more when its end is confirmed: the cost ledger's
  instance-hours (:mod:`spotlake.ledger`).
- :meth:`Fleet.sweep`: a cluster the provider runs under the project's tags (and this
  registry's prefix) that the registry does not know, or knows as ended, is terminated once
  older than the pool's ``sweep_grace``, and recorded TERMINATED so that :meth:`settle`
  follows it.

Race safety. Every state change is a conditional write; losing one is reported,
not raised. A vacancy (no live cluster, or a cluster due for rotation) is claimed
by its cluster id: ``<pool>-<generation>``, where the generation is one more than
the highest the pool has ever had. Two runs that see the same vacancy compute the
same id and only one ``put_launching`` succeeds; a run acting on a stale read
computes an id that already exists and loses. Only the winner calls the provider,
so one vacancy is launched once. A replacement becomes READY through one
transaction that also moves the old cluster to DRAINING and the pool's active
pointer to the replacement, so a pool never has two READY clusters.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError

from spotlake.pools import PoolConfig
from spotlake.providers.base import (
    ClusterHealth,
    ClusterProvider,
    Liveness,
    ProviderError,
    RunningCluster,
    TerminationReason,
    encode_instances,
)
from spotlake.registry import Cluster, ClusterState, JobState, Registry, StaleState

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CHECKED_STATES = (ClusterState.LAUNCHING, ClusterState.READY, ClusterState.DRAINING)
GONE_STATES = (ClusterState.DEAD, ClusterState.TERMINATED)
# How long a drained cluster waits before it counts as idle: its jobs are read from the jobs
# table's index by cluster, which shows a job claimed just before the takeover within moments.
INDEX_SETTLE = timedelta(seconds=30)
# How often a live cluster's instances are read from the provider for the cost ledger (EMR adds and
# loses task instances as spot capacity comes and goes); a cluster never metered is metered at once.
METER_EVERY = timedelta(minutes=10)
METERED_STATES = (ClusterState.LAUNCHING, ClusterState.READY, ClusterState.DRAINING, ClusterState.TERMINATING)


class FleetAction(StrEnum):
    """What the fleet did or saw about a cluster (:attr:`FleetEvent.action`)."""

    LAUNCHING = "launching"  # a vacancy claimed and the cluster launched
    LAUNCH_FAILED = "launch-failed"  # the provider could not launch it: DEAD
    BOOTING = "booting"  # launched, not up yet
    READY = "ready"  # up: it takes the pool's new work
    DRAINING = "draining"  # replaced: it takes no new work, stops when idle or at its drain deadline
    FAILED_CHECK = "failed-check"  # a failed health check, below failure_threshold
    RECOVERED = "recovered"  # healthy again after failed checks
    DEAD = "dead"  # declared dead: its jobs re-queued
    TERMINATED = "terminated"  # terminated (drained, or gone by spotlake's own termination)
    REQUEUED = "requeued"  # jobs left on a DEAD or TERMINATED cluster re-queued
    LOST_RACE = "lost-race"  # another fleet run changed it first
    STILL_RUNNING = "still-running"  # DEAD or TERMINATED, the provider still runs it: termination requested again
    CONFIRMED = "confirmed"  # the provider confirms a DEAD or TERMINATED cluster no longer runs
    UNTRACKED = "untracked"  # runs under the project's tags unknown to the registry: swept after sweep_grace
    SWEPT = "swept"  # such a cluster, terminated and recorded TERMINATED


class Attention(StrEnum):
    """How soon the fleet must act on a pool (:meth:`Fleet.attention`)."""

    URGENT = "urgent"  # a cluster failed a health check (or recovered), or the pool has none live
    PERIODIC = "periodic"  # a cluster launches or drains, or the READY one is due for rotation
    NONE = ""  # nothing is due


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def span(delta: timedelta) -> str:
    """``timedelta`` for people: ``6h 2m``, ``45s``."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs and not days and not hours else "",
    ]
    return " ".join(p for p in parts if p) or "0s"


@dataclass(frozen=True)
class FleetEvent:
    """One thing the fleet did or saw, for the task log and the UI."""

    cluster_id: str
    action: FleetAction
    reason: str
    jobs: tuple[str, ...] = ()

    def line(self, pool: str) -> str:
        text = f"pool {pool}: cluster {self.cluster_id} {self.action}: {self.reason}"
        if self.jobs:
            text += f"; re-queued {len(self.jobs)} job(s): {', '.join(self.jobs)}"
        return text


@dataclass(frozen=True)
class HealthCheck:
    """One health check of a cluster: the state the registry has it in, and what the provider said."""

    cluster_id: str
    state: str
    result: str  # healthy, booting: <why>, failed: <why>, gone: <why>, not checked

    @classmethod
    def of(cls, cluster: Cluster, health: ClusterHealth | None) -> HealthCheck:
        if health is None:
            result = "not checked"
        elif health.alive:
            result = "healthy"
        elif health.liveness == Liveness.BOOTING:
            result = f"booting: {health.reason}"
        else:
            result = f"{'gone' if health.definitive else 'failed'}: {health.reason}"
        return cls(cluster.cluster_id, str(cluster.state), result)


@dataclass
class FleetReport:
    """What one fleet step saw and did: the clusters it checked and how they were, which cluster it
    acted on and why, which jobs moved. Whoever runs the step logs :meth:`log_lines`."""

    pool: str
    events: list[FleetEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    checks: list[tuple[HealthCheck, ...]] = field(default_factory=list)  # one per look at the pool's clusters
    journal: list[str] = field(default_factory=list)  # every check, event and error, in order

    def add(self, cluster_id: str, action: FleetAction, reason: str, jobs: list[str] | tuple[str, ...] = ()) -> None:
        event = FleetEvent(cluster_id, action, reason, tuple(jobs))
        self.events.append(event)
        self.journal.append(event.line(self.pool))
        log.debug("%s", event.line(self.pool))

    def error(self, message: str) -> None:
        self.errors.append(message)
        self.journal.append(f"pool {self.pool}: ERROR {message}")
        log.debug("pool %s: %s", self.pool, message)

    def checked(self, checks: list[HealthCheck]) -> None:
        """One look at the pool's live clusters: each one's state and health."""
        self.checks.append(tuple(checks))
        seen = "; ".join(f"{c.cluster_id} {c.state} {c.result}" for c in checks)
        self.journal.append(f"pool {self.pool}: checked {seen or 'no cluster (none LAUNCHING, READY or DRAINING)'}")

    def clusters(self, action: FleetAction | str) -> list[str]:
        return [e.cluster_id for e in self.events if e.action == action]

    @property
    def dead(self) -> list[str]:
        return self.clusters(FleetAction.DEAD)

    @property
    def launched(self) -> list[str]:
        return self.clusters(FleetAction.LAUNCHING)

    @property
    def requeued_jobs(self) -> list[str]:
        return [job for e in self.events for job in e.jobs]

    def lines(self) -> list[str]:
        """What the step did (its events, then its errors)."""
        lines = [e.line(self.pool) for e in self.events]
        lines += [f"pool {self.pool}: ERROR {message}" for message in self.errors]
        return lines or [f"pool {self.pool}: nothing to do"]

    def log_lines(self) -> list[str]:
        """Everything the step saw and did, in order: each look at the clusters, each action, each error."""
        acted = bool(self.events or self.errors)
        return self.journal + ([] if acted else [f"pool {self.pool}: nothing to do"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "events": [
                {"cluster": e.cluster_id, "action": str(e.action), "reason": e.reason, "jobs": list(e.jobs)} for e in self.events
            ],
            "errors": list(self.errors),
            "dead": self.dead,
            "requeued_jobs": self.requeued_jobs,
            "checks": [[{"cluster": c.cluster_id, "state": c.state, "result": c.result} for c in look] for look in self.checks],
        }


@dataclass(frozen=True)
class Vacancy:
    """A cluster the pool needs, claimed through its deterministic cluster id."""

    pool: str
    generation: int
    replaces: str
    reason: str
    rotation: bool = False

    @property
    def cluster_id(self) -> str:
        return f"{self.pool}-{self.generation:04d}"


def termination_kind(cluster: Cluster) -> str:
    """Why spotlake terminates an ended cluster, from why it ended (the provider's tag)."""
    if cluster.reason.startswith("swept:"):
        return TerminationReason.UNTRACKED
    if cluster.state == ClusterState.DEAD:
        if cluster.reason.startswith("launch failed"):
            return TerminationReason.LAUNCH_FAILED
        return TerminationReason.LAUNCH_TIMEOUT if "launch_timeout" in cluster.reason else TerminationReason.UNHEALTHY
    return TerminationReason.DRAIN_DEADLINE if cluster.reason.startswith("drain deadline") else TerminationReason.ROTATION


def untracked(cluster: Cluster | None, running: RunningCluster) -> str:
    """Why a cluster the provider runs is not one the registry runs ("" when it is)."""
    if cluster is None:
        return f"cluster {running.cluster_id} ({running.provider_id}) runs under the project's tags but is not in the registry"
    if cluster.provider_id and cluster.provider_id != running.provider_id:
        return (
            f"{running.provider_id} carries cluster id {running.cluster_id}, which the registry knows as "
            f"{cluster.provider_id}: a second launch"
        )
    if cluster.state in GONE_STATES and cluster.terminated_at:
        return f"cluster {running.cluster_id} is {cluster.state} in the registry (gone since {cluster.terminated_at}) but runs"
    return ""


class Fleet:
    def __init__(self, registry: Registry, provider: ClusterProvider, clock: Clock = utc_now) -> None:
        self.registry = registry
        self.provider = provider
        self.clock = clock

    # ------------------------------------------------------------------ watch
    def attention(self, pool: PoolConfig) -> tuple[Attention, str]:
        """Whether the fleet must act on ``pool`` now, read-only (the pool's watcher asks this every
        ``health_check_interval`` in the triggerer): ``("urgent", why)`` when a cluster fails its
        health check (or recovered from failed ones) or the pool has no READY or LAUNCHING cluster;
        ``("periodic", why)`` while a cluster launches or drains or the READY one is due for rotation;
        ``("", "")`` when nothing is due. A provider that cannot be asked is asked again next time."""
        every = self.registry.clusters(pool.name)
        clusters = [c for c in every if c.state in CHECKED_STATES]
        if not any(c.state in (ClusterState.LAUNCHING, ClusterState.READY) for c in clusters):
            return Attention.URGENT, "the pool has no READY or LAUNCHING cluster"
        for cluster in clusters:
            looked = FleetReport(pool.name)
            health = self._observe(cluster, looked)
            if health is None:
                log.warning("pool %s: %s", pool.name, "; ".join(looked.errors))
                continue
            if not health.alive and not (cluster.state == ClusterState.LAUNCHING and not health.definitive):
                return Attention.URGENT, f"cluster {cluster.cluster_id} failed a health check: {health.reason}"
            if health.alive and cluster.failures:
                return Attention.URGENT, f"cluster {cluster.cluster_id} is healthy again after {cluster.failures} failed check(s)"
        for cluster in every:
            if cluster.state in GONE_STATES and not cluster.terminated_at:
                return (
                    Attention.PERIODIC,
                    f"cluster {cluster.cluster_id} is {cluster.state}; the provider has not confirmed it gone",
                )
        for cluster in clusters:
            if cluster.state == ClusterState.LAUNCHING:
                return Attention.PERIODIC, f"cluster {cluster.cluster_id} is launching"
            if cluster.state == ClusterState.DRAINING:
                return Attention.PERIODIC, f"cluster {cluster.cluster_id} is draining"
            if cluster.state == ClusterState.READY and self._age(cluster.launched_at) >= pool.max_age:
                return Attention.PERIODIC, f"cluster {cluster.cluster_id} is due for rotation (max_age {span(pool.max_age)})"
        return Attention.NONE, ""

    def tend(self, pool: PoolConfig, sleep: Callable[[float], None] | None = None) -> FleetReport:
        """One whole pass for the pool's watcher: launch (and promote), rotate and drain, check
        health; while a cluster is failing its checks, check it again every
        ``health_check_interval`` until it is DEAD or healthy (so a death is confirmed within this
        pass); then heal (re-queue and launch the replacement)."""
        import time

        report = FleetReport(pool.name)
        self.launch(pool, report)
        self.rotate(pool, report)
        self.check_health(pool, report)
        wait = sleep or time.sleep
        for _ in range(pool.failure_threshold):
            failing = [c for c in self.registry.clusters(pool.name) if c.state in CHECKED_STATES and c.failures]
            if not failing:
                break
            wait(pool.health_check_interval.total_seconds())
            self.check_health(pool, report)
        self.heal(pool, report)
        self.meter(pool)
        self.settle(pool, report)
        self.sweep(pool, report)
        return report

    # ------------------------------------------------------------------ whole
    def reconcile(self, pool: PoolConfig) -> FleetReport:
        """Every piece once: check health, heal, rotate."""
        report = FleetReport(pool.name)
        self.check_health(pool, report)
        self.heal(pool, report)
        self.rotate(pool, report)
        self.meter(pool)
        self.settle(pool, report)
        self.sweep(pool, report)
        return report

    # ----------------------------------------------------------------- launch
    def launch(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Make LAUNCHING clusters that are up READY; launch one if the pool has no live cluster."""
        report = report or FleetReport(pool.name)
        for cluster in self.registry.clusters(pool.name):
            if cluster.state == ClusterState.LAUNCHING:
                self._promote_if_up(pool, cluster, report)
        vacancy = self.vacancy(pool)
        if vacancy is not None:
            self.fill(pool, vacancy, report)
        return report

    def vacancy(self, pool: PoolConfig, rotation: bool = False) -> Vacancy | None:
        """The cluster the pool needs now, if any: none is live, or (``rotation``) the
        READY one is past ``max_age``. None while a launch is under way."""
        clusters = self.registry.clusters(pool.name)
        generation = max((c.generation for c in clusters), default=0) + 1
        if any(c.state == ClusterState.LAUNCHING for c in clusters):
            return None
        active = self.registry.ready_cluster(pool.name)
        if active is None:
            gone = sorted((c for c in clusters if c.state in GONE_STATES), key=lambda c: c.generation)
            last = f"; last cluster {gone[-1].cluster_id} {gone[-1].state}: {gone[-1].reason}" if gone else ""
            return Vacancy(pool.name, generation, gone[-1].cluster_id if gone else "", f"pool has no READY cluster{last}")
        if rotation:
            age = self._age(active.launched_at)
            if age >= pool.max_age:
                reason = f"rotation of {active.cluster_id}: {span(age)} old, max_age {span(pool.max_age)}"
                return Vacancy(pool.name, generation, active.cluster_id, reason, rotation=True)
        return None

    def fill(self, pool: PoolConfig, vacancy: Vacancy, report: FleetReport | None = None) -> Cluster | None:
        """Claim ``vacancy`` (record LAUNCHING), launch it, and make it READY once up.

        Returns the cluster, or None when another run holds the claim or the launch failed.
        """
        report = report or FleetReport(pool.name)
        cluster = Cluster(
            pool=pool.name,
            cluster_id=vacancy.cluster_id,
            provider=self.provider.name,
            state="",
            launched_at=self.clock().isoformat(timespec="milliseconds"),
            generation=vacancy.generation,
            replaces=vacancy.replaces,
        )
        try:
            self.registry.put_launching(cluster)
        except StaleState:
            report.add(cluster.cluster_id, FleetAction.LOST_RACE, "another fleet run has claimed this vacancy")
            return None
        report.add(cluster.cluster_id, FleetAction.LAUNCHING, vacancy.reason)
        try:
            launched = self.provider.launch(pool, cluster.cluster_id)
        except Exception as exc:  # recorded as DEAD first, then re-raised unless a ProviderError
            self._launch_failed(cluster, exc, report)
            if isinstance(exc, ProviderError):
                return None
            raise
        try:
            self.registry.update_cluster(cluster, provider_id=launched.provider_id, endpoint=launched.endpoint or "")
        except StaleState:
            fresh = self.registry.get_cluster(pool.name, cluster.cluster_id)
            if fresh is None or fresh.state != ClusterState.LAUNCHING:
                return fresh
            cluster = fresh
        self._promote_if_up(pool, cluster, report)
        return cluster

    def _launch_failed(self, cluster: Cluster, exc: Exception, report: FleetReport) -> None:
        reason = f"launch failed: {exc}"
        try:
            self.registry.transition_cluster(cluster, ClusterState.DEAD, reason[:1000])
        except StaleState:
            pass  # another run already moved it on
        report.add(cluster.cluster_id, FleetAction.LAUNCH_FAILED, reason)
        report.error(f"cluster {cluster.cluster_id} could not be launched: {exc}")

    def _promote_if_up(self, pool: PoolConfig, cluster: Cluster, report: FleetReport) -> None:
        health = self._observe(cluster, report)
        if health is None or not health.alive or not health.endpoint:
            if health is not None:
                report.add(cluster.cluster_id, FleetAction.BOOTING, health.reason or str(health.liveness))
            return
        self._promote(pool, cluster, health.endpoint, report)

    def _promote(self, pool: PoolConfig, cluster: Cluster, endpoint: str, report: FleetReport) -> None:
        """LAUNCHING -> READY; if the pool has a READY cluster, take over from it (it drains)."""
        active_id, _ = self.registry.active_cluster_id(pool.name)
        if active_id == cluster.cluster_id:
            report.add(cluster.cluster_id, FleetAction.LOST_RACE, "another fleet run already made it READY")
            return
        old = self.registry.get_cluster(pool.name, active_id) if active_id else None
        try:
            if old is not None and old.state == ClusterState.READY:
                self.registry.take_over(cluster, endpoint, old, drain_started_at=self.clock().isoformat(timespec="milliseconds"))
                report.add(cluster.cluster_id, FleetAction.READY, f"at {endpoint}, took over from {old.cluster_id}")
                report.add(
                    old.cluster_id,
                    FleetAction.DRAINING,
                    f"replaced by {cluster.cluster_id}; takes no new jobs, stops when idle or "
                    f"after drain_deadline {span(pool.drain_deadline)}",
                )
            else:
                self.registry.mark_ready(cluster, endpoint, replaces=active_id)
                report.add(cluster.cluster_id, FleetAction.READY, f"at {endpoint}")
        except StaleState as exc:
            report.add(cluster.cluster_id, FleetAction.LOST_RACE, f"not made READY here: {exc}")

    # ----------------------------------------------------------------- health
    def check_health(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """One health check of every LAUNCHING, READY and DRAINING cluster of the pool (reported as
        one look at them), then what the checks call for."""
        report = report or FleetReport(pool.name)
        observed = [(c, self._observe(c, report)) for c in self.registry.clusters(pool.name) if c.state in CHECKED_STATES]
        report.checked([HealthCheck.of(cluster, health) for cluster, health in observed])
        for cluster, health in observed:
            self._check(pool, cluster, health, report)
        return report

    def _check(self, pool: PoolConfig, cluster: Cluster, health: ClusterHealth | None, report: FleetReport) -> None:
        if health is None:
            return
        if health.alive:
            failed = cluster.failures
            if failed:
                try:
                    self.registry.update_cluster(cluster, failures=0, last_failure="")
                    report.add(cluster.cluster_id, FleetAction.RECOVERED, f"healthy again after {failed} failed check(s)")
                except StaleState:
                    pass
            return
        if cluster.state == ClusterState.LAUNCHING and not health.definitive:
            age = self._age(cluster.launched_at)
            if age < pool.launch_timeout:
                return  # still booting
            self._declare_dead(
                cluster,
                f"not READY {span(age)} after launch (launch_timeout {span(pool.launch_timeout)}): {health.reason}",
                report,
                terminate=TerminationReason.LAUNCH_TIMEOUT,
            )
            return
        if health.definitive:
            self._declare_dead(cluster, health.reason, report, own_termination=health.own_termination)
            return
        reason = health.reason if health.liveness == Liveness.DEAD else f"{health.liveness}: {health.reason}"
        failures = cluster.failures + 1
        if failures >= pool.failure_threshold:
            self._declare_dead(
                cluster,
                f"{failures} consecutive failed health checks; last: {reason}",
                report,
                terminate=TerminationReason.UNHEALTHY,
            )
            return
        try:
            self.registry.update_cluster(cluster, failures=failures, last_failure=reason[:1000])
        except StaleState:
            return  # another check or a state change got there first; the next check counts again
        report.add(cluster.cluster_id, FleetAction.FAILED_CHECK, f"{failures}/{pool.failure_threshold}: {reason}")

    def _observe(self, cluster: Cluster, report: FleetReport) -> ClusterHealth | None:
        """The provider's view of the cluster, or None (reported) if it could not be asked."""
        try:
            return self.provider.health(cluster)
        except ProviderError as exc:
            report.error(f"health of cluster {cluster.cluster_id} could not be checked: {exc}")
            return None

    def _declare_dead(
        self, cluster: Cluster, reason: str, report: FleetReport, *, own_termination: bool = False, terminate: str | None = None
    ) -> None:
        to = ClusterState.TERMINATED if own_termination else ClusterState.DEAD
        try:
            self.registry.transition_cluster(cluster, to, reason[:1000])
        except StaleState:
            report.add(cluster.cluster_id, FleetAction.LOST_RACE, f"changed by another fleet run before it could be {to}")
            return
        if terminate is not None:
            try:
                self.provider.terminate(cluster, terminate)
            except ProviderError as exc:
                report.error(f"cluster {cluster.cluster_id} is {to} but could not be terminated: {exc}")
        jobs = self._requeue(cluster.pool, cluster.cluster_id, f"cluster {cluster.cluster_id} {to}: {reason}")
        report.add(cluster.cluster_id, FleetAction.DEAD if to == ClusterState.DEAD else FleetAction.TERMINATED, reason, jobs)

    # ------------------------------------------------------------------- heal
    def heal(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Re-queue jobs still SUBMITTED on DEAD or TERMINATED clusters; launch a replacement."""
        report = report or FleetReport(pool.name)
        clusters = {c.cluster_id: c for c in self.registry.clusters(pool.name)}
        stranded: dict[str, list[str]] = {}
        for job in self.registry.jobs_in_pool(pool.name, (JobState.SUBMITTED,)):
            cluster = clusters.get(job.cluster_id)
            if cluster is not None and cluster.state in GONE_STATES:
                stranded.setdefault(cluster.cluster_id, []).append(job.job_key)
        for cluster_id in stranded:
            cluster = clusters[cluster_id]
            reason = f"cluster {cluster_id} {cluster.state}: {cluster.reason}"
            jobs = self._requeue(pool.name, cluster_id, reason)
            if jobs:
                report.add(cluster_id, FleetAction.REQUEUED, f"jobs left on {cluster.state} cluster", jobs)
        return self.launch(pool, report)

    def _requeue(self, pool: str, cluster_id: str, reason: str) -> list[str]:
        """Every job SUBMITTED on the cluster -> REQUEUED with one more move, each conditional on its
        version (the task that runs the job may re-queue it first: then the move is its, counted once)."""
        moved: list[str] = []
        for job in self.registry.jobs_on_cluster(pool, cluster_id):
            current = job
            for _ in range(3):
                try:
                    self.registry.update_job(current, state=JobState.REQUEUED, moves=current.moves + 1, reason=reason[:1000])
                    moved.append(current.job_key)
                    break
                except StaleState:
                    fresh = self.registry.get_job(current.job_key)
                    if fresh is None or fresh.state != JobState.SUBMITTED or fresh.cluster_id != cluster_id:
                        break  # it finished or moved on by itself
                    current = fresh
        return moved

    # ----------------------------------------------------------------- rotate
    def rotate(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Replace the READY cluster past ``max_age``; terminate drained or overdue DRAINING clusters."""
        report = report or FleetReport(pool.name)
        vacancy = self.vacancy(pool, rotation=True)
        if vacancy is not None and vacancy.rotation:
            self.fill(pool, vacancy, report)
        self.drain(pool, report)
        return report

    def drain(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Terminate DRAINING clusters with no SUBMITTED job, or past their drain deadline."""
        report = report or FleetReport(pool.name)
        for cluster in self.registry.clusters(pool.name):
            if cluster.state == ClusterState.TERMINATING:
                self._finish_termination(cluster, report)
            elif cluster.state == ClusterState.DRAINING:
                self._drain_one(pool, cluster, report)
        return report

    def _drain_one(self, pool: PoolConfig, cluster: Cluster, report: FleetReport) -> None:
        running = self.registry.jobs_on_cluster(pool.name, cluster.cluster_id)
        since = self._age(cluster.drain_started_at or cluster.updated_at)
        if not running and since < INDEX_SETTLE:
            # A job claimed on it just before the takeover may not be in the jobs index yet
            # (eventually consistent): not idle until the index has had time to show it.
            left = span(INDEX_SETTLE - since)
            report.add(cluster.cluster_id, FleetAction.DRAINING, f"no running job seen yet; idle check in {left}")
            return
        if not running:
            self._terminate(cluster, TerminationReason.ROTATION, "drained: no running jobs", report)
        elif since >= pool.drain_deadline:
            self._terminate(
                cluster,
                TerminationReason.DRAIN_DEADLINE,
                f"drain deadline: {len(running)} job(s) still running {span(since)} after it stopped taking "
                f"work (drain_deadline {span(pool.drain_deadline)})",
                report,
            )
        else:
            left = span(pool.drain_deadline - since)
            report.add(cluster.cluster_id, FleetAction.DRAINING, f"{len(running)} job(s) still running; drain deadline in {left}")

    def _terminate(self, cluster: Cluster, kind: str, reason: str, report: FleetReport) -> None:
        try:
            self.registry.transition_cluster(cluster, ClusterState.TERMINATING, reason)
        except StaleState:
            report.add(cluster.cluster_id, FleetAction.LOST_RACE, "changed by another fleet run before termination")
            return
        self._finish_termination(cluster, report, kind)

    def _finish_termination(self, cluster: Cluster, report: FleetReport, kind: str | None = None) -> None:
        reason = cluster.reason
        if kind is None:
            deadline = reason.startswith("drain deadline")
            kind = TerminationReason.DRAIN_DEADLINE if deadline else TerminationReason.ROTATION
        try:
            self.provider.terminate(cluster, kind)
        except ProviderError as exc:
            report.error(f"cluster {cluster.cluster_id} could not be terminated (retried next run): {exc}")
            return
        try:
            self.registry.transition_cluster(cluster, ClusterState.TERMINATED, reason)
        except StaleState:
            return
        if kind == TerminationReason.DRAIN_DEADLINE:
            requeue_reason = f"drain deadline: cluster {cluster.cluster_id} was terminated"
        else:
            requeue_reason = f"cluster {cluster.cluster_id} was terminated after draining"
        jobs = self._requeue(cluster.pool, cluster.cluster_id, requeue_reason)
        report.add(cluster.cluster_id, FleetAction.TERMINATED, reason, jobs)

    # ----------------------------------------------------------------- settle
    def settle(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Each DEAD or TERMINATED cluster the provider has not confirmed gone: record the
        confirmation, or request its termination again (a failed or not yet effective call), so
        no cluster the registry ended keeps running."""
        report = report or FleetReport(pool.name)
        just_ended = set(report.dead) | set(report.clusters(FleetAction.TERMINATED))  # asked next pass
        for cluster in self.registry.clusters(pool.name):
            if cluster.state in GONE_STATES and not cluster.terminated_at and cluster.cluster_id not in just_ended:
                self._settle_one(pool, cluster, report)
        return report

    def _settle_one(self, pool: PoolConfig, cluster: Cluster, report: FleetReport) -> None:
        try:
            gone = self.provider.gone(cluster)
        except ProviderError as exc:
            report.error(f"cluster {cluster.cluster_id} is {cluster.state}; whether it still runs could not be asked: {exc}")
            return
        if gone:
            confirmed = self.clock().isoformat(timespec="milliseconds")
            try:
                # The instances once more, with their ends (EMR's timelines): the ledger's last word.
                self.registry.update_cluster(cluster, terminated_at=confirmed, **self._metering(pool, cluster, confirmed))
            except StaleState:
                return
            after = f" after {cluster.terminate_attempts} repeated request(s)" if cluster.terminate_attempts else ""
            report.add(
                cluster.cluster_id, FleetAction.CONFIRMED, f"{cluster.state}: the provider confirms it no longer runs{after}"
            )
            return
        attempts = cluster.terminate_attempts + 1
        error = ""
        try:
            self.provider.terminate(cluster, termination_kind(cluster))
        except ProviderError as exc:
            error = str(exc)
        try:
            self.registry.update_cluster(cluster, terminate_attempts=attempts, terminate_error=error[:1000])
        except StaleState:
            return
        if error:
            report.error(
                f"cluster {cluster.cluster_id} is {cluster.state} but still runs; termination request {attempts} "
                f"failed (asked again next pass): {error}"
            )
        else:
            report.add(
                cluster.cluster_id,
                FleetAction.STILL_RUNNING,
                f"{cluster.state} but the provider still runs it: termination requested again ({attempts})",
            )

    # ------------------------------------------------------------------ meter
    def meter(self, pool: PoolConfig) -> None:
        """Record the instances of each live cluster of ``pool`` (launched: it has a provider id)
        not metered for :data:`METER_EVERY`. A provider that cannot tell now is asked next pass;
        a lost race leaves it to the next pass too: metering never fails the fleet's pass."""
        now = self.clock()
        for cluster in self.registry.clusters(pool.name):
            if cluster.state not in METERED_STATES or not cluster.provider_id:
                continue
            metered = parse_time(cluster.metered_at)
            if metered is not None and now - metered < METER_EVERY:
                continue
            changes = self._metering(pool, cluster, now.isoformat(timespec="milliseconds"))
            if changes:
                try:
                    self.registry.update_cluster(cluster, **changes)
                except StaleState:
                    pass

    def _metering(self, pool: PoolConfig, cluster: Cluster, at: str) -> dict[str, str]:
        """The registry changes that record ``cluster``'s instances now ({} when the provider fails)."""
        try:
            usage = self.provider.instances(pool, cluster)
        except (ProviderError, BotoCoreError) as exc:
            log.warning(
                "pool %s: the instances of cluster %s could not be read (asked again next pass): %s",
                pool.name,
                cluster.cluster_id,
                exc,
            )
            return {}
        return {"instances": encode_instances(usage), "metered_at": at}

    # ------------------------------------------------------------------ sweep
    def sweep(self, pool: PoolConfig, report: FleetReport | None = None) -> FleetReport:
        """Terminate the clusters the provider runs for ``pool`` that the registry does not run:
        unknown to it, another launch under a known id, or ended and confirmed so; each once older
        than ``sweep_grace`` (a launch records LAUNCHING before it asks the provider, so a cluster
        of the fleet's own is never unknown), then recorded TERMINATED (:meth:`settle` follows it)."""
        report = report or FleetReport(pool.name)
        try:
            found = self.provider.running(pool)
        except ProviderError as exc:
            report.error(f"the provider's clusters of pool {pool.name} could not be listed (swept next pass): {exc}")
            return report
        if not found:
            return report
        known = {c.cluster_id: c for c in self.registry.clusters(pool.name)}
        for running in found:
            if not running.cluster_id:  # the project's tags without a cluster id: recorded under the provider's id
                running = dataclasses.replace(running, cluster_id=f"{pool.name}-untagged-{running.provider_id}")
            cluster = known.get(running.cluster_id)
            why = untracked(cluster, running)
            if not why:
                continue
            if running.created_at is None:
                report.add(running.cluster_id, FleetAction.UNTRACKED, f"{why}; its age is unknown: not terminated")
                continue
            age = self.clock() - running.created_at
            if age < pool.sweep_grace:
                left = span(pool.sweep_grace - age)
                report.add(running.cluster_id, FleetAction.UNTRACKED, f"{why}; terminated in {left} if still so (sweep_grace)")
                continue
            try:
                self.provider.terminate_running(running, TerminationReason.UNTRACKED)
            except ProviderError as exc:
                report.error(f"untracked cluster {running.cluster_id} ({running.provider_id}) could not be terminated: {exc}")
                continue
            reason = f"swept: {why}; running {span(age)}"
            self._record_swept(pool, running, cluster, reason)
            report.add(running.cluster_id, FleetAction.SWEPT, f"{reason}; {running.provider_id} terminated")
            log.warning("pool %s: swept cluster %s (%s): %s", pool.name, running.cluster_id, running.provider_id, reason)
        return report

    def _record_swept(self, pool: PoolConfig, running: RunningCluster, known: Cluster | None, reason: str) -> None:
        """Make the registry follow the swept cluster until the provider confirms it gone."""
        try:
            if known is None:
                generation = running.cluster_id.rsplit("-", 1)[-1]
                self.registry.put_swept(
                    Cluster(
                        pool=pool.name,
                        cluster_id=running.cluster_id,
                        provider=self.provider.name,
                        state="",
                        provider_id=running.provider_id,
                        generation=int(generation) if generation.isdigit() else 0,
                        launched_at=running.created_at.isoformat(timespec="milliseconds") if running.created_at else "",
                    ),
                    reason[:1000],
                )
            elif known.state in GONE_STATES and known.provider_id in ("", running.provider_id):
                self.registry.update_cluster(known, terminated_at="", reason=reason[:1000])
        except StaleState:
            pass  # another pass recorded it; the next sweep sees it again if it still runs

    # ------------------------------------------------------------------ clock
    def _age(self, iso: str) -> timedelta:
        started = parse_time(iso)
        return self.clock() - started if started else timedelta(0)
