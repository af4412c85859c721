"""Alerts: which conditions of the lake's health hold now, and the one event each raises and clears.

Four conditions, each read from the status snapshot (:func:`spotlake.status.collect`, the one
source of the figures: the same as ``python -m spotlake.status`` shows):

- ``pipeline:<name>:stale``: the pipeline's freshness (:mod:`spotlake.freshness`) is ``STALE``
  (its watermark is older than its staleness threshold) or ``FAILING`` (a window, or the initial
  snapshot, failed since the watermark last moved: the tables stay stale since the watermark
  whatever later windows do). A pipeline that has ``never run`` raises nothing: a new pipeline's
  DAG is created paused and nothing is owed until it is unpaused; one that is ``loading`` (its
  initial snapshot under way) raises nothing either, unless the snapshot fails (``FAILING``).
- ``pool:<name>:no_ready``: the pool has no READY cluster, so nothing of its work starts.
- ``stream:<name>:restart_budget``: the stream's supervisor backed off (``BACKED_OFF``): its
  restart budget is spent and the stream is not running.
- ``pool:<name>:budget``: the pool's spend today (UTC; :mod:`spotlake.ledger`) is above its
  ``budget_per_day``; it clears when the next day starts (or the budget is raised).

:func:`evaluate` is pure: the conditions that hold in a snapshot. :func:`reconcile_alerts` compares
them with the alerts' record (:mod:`spotlake.alert_store`) and makes each change by a conditional
write, so a condition raises one event when it starts holding (once it has held for its ``after``)
and clears once when it stops, however many alert tasks run at once: a caller gets only the
transitions it won. The write that wins a transition also claims its delivery; after sending,
:func:`record_delivery` records the notifiers that failed, and :func:`claim_undelivered` gives the
next run what is still owed: the failed notifiers' transitions, and any claim older than
:data:`CLAIM_LEASE` (its task died while sending).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from spotlake.alert_store import AlertRecord, AlertState, AlertStore, Delivery
from spotlake.config import extraction_dag_id
from spotlake.fleet import parse_time, span
from spotlake.freshness import Freshness, FreshnessStatus
from spotlake.ledger import PoolCost, money
from spotlake.pools import fleet_dag_id
from spotlake.registry import ClusterState, StaleState
from spotlake.status import PoolView, Snapshot, StreamRow
from spotlake.stream_status import StreamState
from spotlake.streaming import supervisor_dag_id

# A delivery claimed longer ago than this is taken over by the next alerts task: the task that
# claimed it died while sending (the alerts task's execution_timeout is well below it).
CLAIM_LEASE = timedelta(minutes=15)


class AlertKind(StrEnum):
    """What an alert is about; its key is ``<scope>:<subject>:<kind>``."""

    STALE = "stale"  # a pipeline's tables are stale beyond its threshold, or a window failed
    NO_READY = "no_ready"  # a pool has no READY cluster
    RESTART_BUDGET = "restart_budget"  # a stream spent its restart budget
    BUDGET = "budget"  # a pool spent more today than its budget_per_day

    @property
    def scope(self) -> str:
        return {
            AlertKind.STALE: "pipeline",
            AlertKind.NO_READY: "pool",
            AlertKind.RESTART_BUDGET: "stream",
            AlertKind.BUDGET: "pool",
        }[self]


class Severity(StrEnum):
    WARNING = "warning"  # behind, will likely catch up once the cause goes
    CRITICAL = "critical"  # failing or stopped: it needs someone


class Event(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


def alert_key(kind: AlertKind, subject: str) -> str:
    """``pipeline:shop_orders:stale``, ``pool:small:no_ready``, ``stream:clicks:restart_budget``."""
    return f"{kind.scope}:{subject}:{kind.value}"


@dataclass(frozen=True)
class Condition:
    """A condition that holds now: what is wrong (``title``) and what to do (``message``)."""

    kind: AlertKind
    subject: str  # the pipeline, pool or stream
    severity: Severity
    title: str
    message: str
    after: timedelta = timedelta(0)  # raised once it has held this long

    @property
    def key(self) -> str:
        return alert_key(self.kind, self.subject)


class KindSettings(Protocol):
    """A kind's settings (``config/alerts.yaml``'s ``conditions``: spotlake.alert_config.ConditionConfig)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def after(self) -> timedelta: ...


# ------------------------------------------------------------------ what holds


def evaluate(snapshot: Snapshot, settings: Mapping[AlertKind, KindSettings] | None = None) -> list[Condition]:
    """The conditions that hold in ``snapshot``, by key: of every kind, or of the kinds ``settings``
    enables, each with its kind's ``after``."""
    found = [
        *stale_pipelines(snapshot.freshness),
        *pools_without_ready(snapshot.pools),
        *streams_over_budget(snapshot.streams),
        *pools_over_budget(snapshot.costs, snapshot.currency),
    ]
    conditions = []
    for condition in found:
        setting = (settings or {}).get(condition.kind)
        if setting is None:
            conditions.append(condition)
        elif setting.enabled:
            conditions.append(replace(condition, after=setting.after))
    return sorted(conditions, key=lambda c: c.key)


def stale_pipelines(rows: Iterable[Freshness]) -> list[Condition]:
    """A condition per pipeline whose freshness is STALE or FAILING."""
    found = []
    for row in rows:
        dag = extraction_dag_id(row.pipeline)
        if row.status == FreshnessStatus.FAILING:
            stale = (
                f"Its lake tables are stale since {row.watermark} ({row.age} behind)"
                if row.watermark
                else "Its initial load has not finished"
            )
            found.append(
                Condition(
                    AlertKind.STALE,
                    row.pipeline,
                    Severity.CRITICAL,
                    f"pipeline {row.pipeline} is failing",
                    f"{stale}: {row.reason}. Fix what the error names; the next run of DAG {dag} (or a clear of "
                    "the failed run) then reads the whole gap, nothing is re-run by hand (docs/operations.md, "
                    "'A window fails').",
                )
            )
        elif row.status == FreshnessStatus.STALE:
            found.append(
                Condition(
                    AlertKind.STALE,
                    row.pipeline,
                    Severity.WARNING,
                    f"pipeline {row.pipeline} is stale",
                    f"Its lake tables are {row.age} behind; {row.reason}. Check that DAG {dag} is unpaused and its "
                    "runs start and succeed, that the scheduler runs, and that the pipeline's pool has a READY "
                    "cluster (python -m spotlake.status).",
                )
            )
    return found


def pools_without_ready(pools: Iterable[PoolView]) -> list[Condition]:
    """A condition per pool without a READY cluster."""
    found = []
    for pool in pools:
        if any(cluster.state == ClusterState.READY for cluster in pool.clusters):
            continue
        if pool.clusters:
            seen = "Its clusters: " + "; ".join(
                f"{c.cluster_id} {c.state} ({c.age} since launch{': ' + c.reason if c.reason else ''})" for c in pool.clusters
            )
        else:
            seen = "It has no cluster"
        found.append(
            Condition(
                AlertKind.NO_READY,
                pool.name,
                Severity.CRITICAL,
                f"pool {pool.name} has no READY cluster",
                f"Nothing of its work starts (windows, initial snapshots, maintenance, streams) until one is READY. "
                f"{seen}. DAG {fleet_dag_id(pool.name)} launches and replaces the pool's clusters: check that it is "
                "unpaused and read its watch task's log (docs/operations.md, 'A spot cluster dies').",
            )
        )
    return found


def streams_over_budget(rows: Iterable[StreamRow]) -> list[Condition]:
    """A condition per stream whose supervisor backed off (its restart budget spent)."""
    return [
        Condition(
            AlertKind.RESTART_BUDGET,
            row.stream,
            Severity.CRITICAL,
            f"stream {row.stream} spent its restart budget",
            f"The stream is not running: its supervisor restarts it no more until older restarts age out "
            f"({row.reason}). Find the cause in the log of DAG {supervisor_dag_id(row.stream)} and the batch's "
            "error, and fix it; the supervisor starts the stream again by itself (docs/streaming.md).",
        )
        for row in rows
        if row.state == StreamState.BACKED_OFF
    ]


def pools_over_budget(costs: Iterable[PoolCost], currency: str) -> list[Condition]:
    """A condition per pool whose spend today is above its ``budget_per_day``."""
    found = []
    for cost in costs:
        if not cost.over_budget or cost.budget is None:
            continue
        biggest = max(cost.clusters, key=lambda c: c.cost, default=None)
        top = f" Most of it: cluster {biggest.cluster_id} ({money(biggest.cost, currency)})." if biggest else ""
        if cost.unpriced:
            top += f" Not counted (no price in config/prices.yaml): {', '.join(cost.unpriced)}."
        found.append(
            Condition(
                AlertKind.BUDGET,
                cost.pool,
                Severity.WARNING,
                f"pool {cost.pool} is over its daily budget",
                f"It spent {money(cost.cost, currency)} today (UTC), over its budget_per_day of "
                f"{money(cost.budget, currency)}; {money(cost.unattributed, currency)} of it held no work (idle slots, "
                f"launch, drain).{top} Check for a cluster left running or a pool larger than its work needs "
                "(python -m spotlake.ledger --work), or raise budget_per_day in config/pools.yaml "
                "(docs/operations.md, 'Cost').",
            )
        )
    return found


# ------------------------------------------------------------------ raise once, clear once


@dataclass(frozen=True)
class Transition:
    """A raise or a clear one caller won (or a retry of its delivery), to send to the notifiers."""

    event: Event
    record: AlertRecord  # the alert as written by the win (or the claim)
    notifiers: tuple[str, ...] | None = None  # None: every notifier of the kind; else only these (a retry)

    @property
    def headline(self) -> str:
        if self.event == Event.CLEARED:
            return f"resolved: {self.record.title}"
        return f"{self.record.severity.upper()}: {self.record.title}"

    @property
    def at(self) -> str:
        return self.record.cleared_at if self.event == Event.CLEARED else self.record.raised_at

    @property
    def message(self) -> str:
        """What was wrong and what to do (a raise); when it was raised and for how long (a clear)."""
        if self.event == Event.RAISED:
            return self.record.message
        raised, cleared = parse_time(self.record.raised_at), parse_time(self.record.cleared_at)
        held = f" after {span(cleared - raised)}" if raised and cleared else ""
        return f"Raised at {self.record.raised_at}, cleared at {self.record.cleared_at}{held}. It was: {self.record.message}"

    @property
    def text(self) -> str:
        """The whole notification as plain text."""
        return f"{self.headline}\n{self.message}\n(alert {self.record.alert}, {self.event.value} at {self.at})"

    def to_context(self) -> dict[str, Any]:
        """The ``alert`` a notifier's templates see."""
        return {
            "key": self.record.alert,
            "kind": self.record.kind,
            "subject": self.record.subject,
            "event": self.event.value,
            "severity": self.record.severity,
            "title": self.record.title,
            "headline": self.headline,
            "message": self.message,
            "text": self.text,
            "at": self.at,
            "raised_at": self.record.raised_at,
            "cleared_at": self.record.cleared_at,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _try_put(store: AlertStore, record: AlertRecord, now: datetime) -> AlertRecord | None:
    """``record`` written, or None when another task changed the alert first (it decided)."""
    try:
        return store.put(record, _iso(now))
    except StaleState:
        return None


def _claimed(record: AlertRecord, now: datetime, retry: list[str] | None = None) -> AlertRecord:
    """``record`` with its delivery claimed by the caller at ``now`` (to ``retry``; [] is every notifier)."""
    return replace(record, delivery=Delivery.SENDING, claimed_at=_iso(now), retry=retry or [], last_error="", attempts=1)


def reconcile_alerts(
    store: AlertStore, firing: Iterable[Condition], now: datetime, kinds: Collection[AlertKind] | None = None
) -> tuple[list[Transition], list[Transition]]:
    """Bring the alerts' record in line with ``firing`` (the conditions holding at ``now``):
    raise the conditions that started holding (once held their ``after``), clear the alerts
    whose condition no longer holds. Alerts of kinds outside ``kinds`` (None: every kind; e.g. a
    disabled kind) are left as they are. Each change is a conditional write: the transitions
    returned, (raised, cleared), are the ones this caller won, each claimed for delivery."""
    records = {r.alert: r for r in store.all()}
    raised: list[Transition] = []
    cleared: list[Transition] = []
    holding = {}
    for condition in firing:
        holding[condition.key] = condition
        transition = _raise(store, condition, records.get(condition.key), now)
        if transition is not None:
            raised.append(transition)
    for record in records.values():
        if record.alert in holding or (kinds is not None and record.kind not in kinds):
            continue
        transition = _clear(store, record, now)
        if transition is not None:
            cleared.append(transition)
    return raised, cleared


def _raise(store: AlertStore, condition: Condition, record: AlertRecord | None, now: datetime) -> Transition | None:
    if record is not None and record.state == AlertState.FIRING:
        return None  # raised before: one event per condition
    if record is None or record.state == AlertState.CLEARED:
        base = record or AlertRecord(condition.key, condition.kind.value, condition.subject, AlertState.PENDING)
        since = now  # the condition starts holding (again)
    else:
        base, since = record, parse_time(record.since) or now  # pending: held since it was first seen
    due = now - since >= condition.after
    if record is not None and record.state == AlertState.PENDING and not due:
        return None  # still pending: nothing to write
    pending = replace(
        base,
        kind=condition.kind.value,
        subject=condition.subject,
        state=AlertState.PENDING,
        severity=condition.severity.value,
        title=condition.title,
        message=condition.message,
        since=_iso(since),
        raised_at="",
        cleared_at="",
        delivery=Delivery.DONE,
        retry=[],
        claimed_at="",
        attempts=0,
        last_error="",
    )
    if not due:
        _try_put(store, pending, now)
        return None
    written = _try_put(store, _claimed(replace(pending, state=AlertState.FIRING, raised_at=_iso(now)), now), now)
    return Transition(Event.RAISED, written) if written is not None else None


def _clear(store: AlertStore, record: AlertRecord, now: datetime) -> Transition | None:
    if record.state == AlertState.PENDING:
        # it stopped holding before it was raised: nothing was said, nothing to clear
        _try_put(store, replace(record, state=AlertState.CLEARED, cleared_at=_iso(now)), now)
        return None
    if record.state != AlertState.FIRING:
        return None
    # A clear supersedes a raise some notifier still owes: the clear names what was wrong.
    written = _try_put(store, _claimed(replace(record, state=AlertState.CLEARED, cleared_at=_iso(now)), now), now)
    return Transition(Event.CLEARED, written) if written is not None else None


# ------------------------------------------------------------------ delivery


def claim_undelivered(store: AlertStore, now: datetime, lease: timedelta = CLAIM_LEASE) -> list[Transition]:
    """The transitions whose delivery is still owed, claimed by this caller (a conditional write
    each): those some notifier failed (to those notifiers only), and those claimed longer than
    ``lease`` ago by a task that did not record the outcome (to the same notifiers as then)."""
    owed = []
    for record in store.all():
        if not _owed(record, now, lease):
            continue
        claim = replace(_claimed(record, now, list(record.retry)), attempts=record.attempts + 1)
        written = _try_put(store, claim, now)
        if written is not None:
            event = Event.RAISED if record.state == AlertState.FIRING else Event.CLEARED
            owed.append(Transition(event, written, tuple(written.retry) or None))
    return owed


def _owed(record: AlertRecord, now: datetime, lease: timedelta) -> bool:
    """Whether the alert's last transition is owed to a notifier: one failed it, or the task that
    claimed it longer than ``lease`` ago did not record how it went."""
    if record.delivery == Delivery.RETRY:
        return True
    claimed = parse_time(record.claimed_at)
    return record.delivery == Delivery.SENDING and claimed is not None and now - claimed >= lease


def record_delivery(store: AlertStore, transition: Transition, failures: Mapping[str, str], now: datetime) -> bool:
    """Record how the delivery of ``transition`` went: done, or to be retried by the notifiers of
    ``failures`` (name -> error). False when the alert changed meanwhile (a newer transition, whose
    own delivery supersedes this one)."""
    record = transition.record
    outcome = replace(
        record,
        delivery=Delivery.RETRY if failures else Delivery.DONE,
        retry=sorted(failures),
        last_error="; ".join(f"{name}: {error}" for name, error in sorted(failures.items())),
    )
    return _try_put(store, outcome, now) is not None
