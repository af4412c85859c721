"""The cost ledger: what each pool, cluster, table-window and stream-hour cost, and what AWS Glue
or on-demand instances would have cost for the same work.

Instance-hours come from the provider: the fleet records each cluster's instances (type, market,
start, end) in the registry (:meth:`spotlake.fleet.Fleet.meter`; EMR's ListInstances, locally one
instance of the pool's configured type). An instance still open ends at ``now`` while the
registry has not seen its cluster confirmed gone (it may still bill), else when it was confirmed.
Each is priced from config/prices.yaml (:mod:`spotlake.prices`): its market's EC2 price plus EMR's
charge per hour, by the second.

A piece of work (a job of the jobs table: a table-window, an initial snapshot, maintenance, a
reconcile, a stream) is charged for the time it held one of its cluster's slots (the pool's
``max_batches``): the cluster's cost over that time divided by the slots. Time on a cluster lost
before a move counts from the previous move (the jobs table keeps a job's moves, not every
attempt's start); what no job held is the pool's *unattributed* share (idle slots, launch and
drain). A stream is charged per clock hour. Beside each: the same work as an AWS Glue job run
(the DPUs of the pool's Glue job × the run's time, at least Glue's one-minute minimum, at the
DPU-hour price; a stream's hour as it runs) and on on-demand instances (every instance-hour at the
on-demand price).

Days are UTC days. :func:`read` reads the registry (each pool's clusters, and the jobs of each
cluster that ran that day, by the jobs table's index by cluster); :func:`build` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from spotlake import pools, prices
from spotlake.fleet import parse_time
from spotlake.pools import PoolConfig, PoolsConfig
from spotlake.prices import Prices
from spotlake.providers.base import decode_instances
from spotlake.registry import Cluster, Job, JobState, Registry

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
ALL_JOB_STATES = tuple(JobState)


class Kind:
    WINDOW = "window"
    SNAPSHOT = "snapshot"
    MAINTENANCE = "maintenance"
    RECONCILE = "reconcile"
    STREAM = "stream-hour"


def job_kind(job_key: str) -> tuple[str, str]:
    """(kind, subject) of a job key: ``shop_orders#20261206T1400`` a window of pipeline shop_orders,
    ``shop_orders#snapshot`` its initial snapshot, ``shop_orders#maintenance-…`` / ``#reconcile-…``,
    a key without ``#`` a stream."""
    if "#" not in job_key:
        return Kind.STREAM, job_key
    subject, label = job_key.split("#", 1)
    if label == "snapshot":
        return Kind.SNAPSHOT, subject
    for kind in (Kind.MAINTENANCE, Kind.RECONCILE):
        if label.startswith(f"{kind}-"):
            return kind, subject
    return Kind.WINDOW, subject


@dataclass
class ClusterCost:
    pool: str
    cluster_id: str
    state: str
    start: str
    end: str  # "" while it runs (or its end is not confirmed)
    hours: dict[str, float]  # instance-hours in the day by "<type> <market>"
    cost: float
    on_demand: float
    unpriced: list[str] = field(default_factory=list)  # instance types config/prices.yaml lacks
    metered: bool = True  # False: the fleet never recorded its instances


@dataclass
class WorkCost:
    pool: str
    job_key: str
    kind: str
    subject: str  # the pipeline or stream
    start: str
    end: str
    seconds: float  # slot time charged (within the day, for a stream-hour)
    cost: float
    on_demand: float
    glue: float | None  # None: config/prices.yaml names no Glue job for the pool
    clusters: list[str] = field(default_factory=list)


@dataclass
class SubjectCost:
    """A pipeline's or stream's work of one kind in the day, summed."""

    subject: str
    kind: str
    runs: int
    seconds: float
    cost: float
    on_demand: float
    glue: float | None


@dataclass
class PoolCost:
    pool: str
    day: str
    cost: float  # every instance-hour of the pool's clusters in the day
    on_demand: float
    glue: float | None  # the day's work as Glue job runs
    work: float  # the part of ``cost`` charged to work: every job's slot time within the day
    unattributed: float  # idle slots, launch and drain (below 0 only when more jobs than slots ran at once)
    budget: float | None
    over_budget: bool = False  # the day's cost is above the budget
    clusters: list[ClusterCost] = field(default_factory=list)
    subjects: list[SubjectCost] = field(default_factory=list)

    @property
    def unpriced(self) -> list[str]:
        return sorted({t for c in self.clusters for t in c.unpriced})

    @property
    def unmetered(self) -> list[str]:
        return [c.cluster_id for c in self.clusters if not c.metered]


@dataclass
class Ledger:
    day: str
    at: str
    currency: str
    prices: str  # where the prices come from and when
    pools: list[PoolCost]
    work: list[WorkCost]


def _seconds(start: datetime, end: datetime, since: datetime, until: datetime) -> float:
    """How much of [start, end) falls in [since, until), in seconds."""
    return max(0.0, (min(end, until) - max(start, since)).total_seconds())


def cluster_close(cluster: Cluster, now: datetime) -> datetime:
    """When an instance the provider reported open ends for the ledger: when the cluster was
    confirmed gone, else now (it runs, or may still)."""
    return parse_time(cluster.terminated_at) or now


def cluster_start(cluster: Cluster) -> datetime | None:
    starts = [parse_time(u.start) for u in decode_instances(cluster.instances)]
    known = [s for s in starts if s is not None]
    return min(known) if known else parse_time(cluster.launched_at)


def cluster_cost(
    cluster: Cluster, table: Prices, since: datetime, until: datetime, now: datetime
) -> tuple[float, float, dict[str, float], list[str]]:
    """(cost, on-demand cost, instance-hours by "<type> <market>", unpriced types) of ``cluster``'s
    instances within [since, until)."""
    cost = on_demand = 0.0
    hours: dict[str, float] = defaultdict(float)
    unpriced = set()
    for usage in decode_instances(cluster.instances):
        start = parse_time(usage.start)
        if start is None:
            continue
        end = parse_time(usage.end) or cluster_close(cluster, now)
        seconds = _seconds(start, end, since, until)
        if seconds <= 0:
            continue
        hours[f"{usage.instance_type} {usage.market.lower().replace('_', '-')}"] += seconds / 3600
        price = table.instance(usage.instance_type)
        if price is None:
            unpriced.add(usage.instance_type)
            continue
        cost += price.hourly(usage.market) * seconds / 3600
        on_demand += price.on_demand_hourly * seconds / 3600
    return cost, on_demand, dict(hours), sorted(unpriced)


def job_spans(job: Job, now: datetime) -> list[tuple[str, datetime, datetime]]:
    """The (cluster, start, end) the job held a slot: its current attempt, and each move's time on
    the cluster it was moved from (from the move before it; the first move's start is not kept)."""
    spans = []
    moves = job.moves_made()
    for before, move in zip(moves, moves[1:], strict=False):
        start, end = parse_time(before.get("taken_at", "")), parse_time(move.get("requeued_at", ""))
        if start and end and move.get("from"):
            spans.append((move["from"], start, end))
    start = parse_time(job.submitted_at)
    if start is not None and job.cluster_id and job.state != JobState.QUEUED:
        ended = job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.REQUEUED)
        end = parse_time(job.updated_at) if ended else now
        if end is not None and end > start:
            spans.append((job.cluster_id, start, end))
    return spans


def _job_cost(
    spans: list[tuple[str, datetime, datetime]],
    clusters: dict[str, Cluster],
    table: Prices,
    slots: int,
    since: datetime,
    until: datetime,
    now: datetime,
) -> tuple[float, float, float]:
    """(cost, on-demand cost, seconds) of ``spans`` within [since, until): each cluster's cost over
    the span divided by its slots."""
    cost = on_demand = seconds = 0.0
    for cluster_id, start, end in spans:
        begin, finish = max(start, since), min(end, until)
        if finish <= begin:
            continue
        seconds += (finish - begin).total_seconds()
        cluster = clusters.get(cluster_id)
        if cluster is None:
            continue
        spent, spent_on_demand, _, _ = cluster_cost(cluster, table, begin, finish, now)
        cost += spent / slots
        on_demand += spent_on_demand / slots
    return cost, on_demand, seconds


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def work_costs(
    pool: PoolConfig,
    jobs: list[Job],
    clusters: dict[str, Cluster],
    table: Prices,
    since: datetime,
    until: datetime,
    now: datetime,
) -> tuple[list[WorkCost], float]:
    """The pool's work rows of [since, until): each job that ended in it (SUCCEEDED or FAILED) or
    runs, whole, and each stream-hour; and the cost of every job's slot time within [since,
    until), whatever day it ended (the day's share of its pool's cost that went to work)."""
    rows = []
    in_day = 0.0
    slots = pool.max_batches
    for job in jobs:
        spans = job_spans(job, now)
        if not spans:
            continue
        kind, subject = job_kind(job.job_key)
        first, last = min(s for _, s, _ in spans), max(e for _, _, e in spans)
        in_day += _job_cost(spans, clusters, table, slots, since, until, now)[0]
        if kind != Kind.STREAM:
            if job.state == JobState.REQUEUED or not since < last <= until:
                continue  # a job is the day's in which it ended (or runs: it ends now); a re-queued one is not over
            cost, on_demand, seconds = _job_cost(spans, clusters, table, slots, first, last + timedelta(microseconds=1), now)
            current = spans[-1] if spans[-1][0] == job.cluster_id else None  # the last attempt, which Glue would run
            glue = table.glue.run_cost(pool.name, (current[2] - current[1]).total_seconds()) if current else None
            rows.append(
                WorkCost(
                    pool.name,
                    job.job_key,
                    kind,
                    subject,
                    _iso(first),
                    _iso(last),
                    seconds,
                    cost,
                    on_demand,
                    glue,
                    sorted({c for c, _, _ in spans}),
                )
            )
            continue
        hour = max(since, first).replace(minute=0, second=0, microsecond=0)
        while hour < min(until, last):
            cost, on_demand, seconds = _job_cost(spans, clusters, table, slots, hour, min(hour + HOUR, until), now)
            if seconds > 0:
                rows.append(
                    WorkCost(
                        pool.name,
                        job.job_key,
                        kind,
                        subject,
                        _iso(hour),
                        _iso(min(hour + HOUR, until, last)),
                        seconds,
                        cost,
                        on_demand,
                        table.glue.run_cost(pool.name, seconds, minimum=False),
                        sorted({c for c, s, e in spans if s < hour + HOUR and e > hour}),
                    )
                )
            hour += HOUR
    return sorted(rows, key=lambda r: (r.start, r.job_key)), in_day


def _subjects(rows: list[WorkCost]) -> list[SubjectCost]:
    grouped: dict[tuple[str, str], list[WorkCost]] = defaultdict(list)
    for row in rows:
        grouped[(row.subject, row.kind)].append(row)
    found = []
    for (subject, kind), group in grouped.items():
        glue = [r.glue for r in group]
        found.append(
            SubjectCost(
                subject,
                kind,
                len(group),
                sum(r.seconds for r in group),
                sum(r.cost for r in group),
                sum(r.on_demand for r in group),
                None if any(g is None for g in glue) else sum(g for g in glue if g is not None),
            )
        )
    return sorted(found, key=lambda s: -s.cost)


def build(
    pools_cfg: PoolsConfig,
    clusters: dict[str, list[Cluster]],
    jobs: dict[str, list[Job]],
    table: Prices,
    day: date,
    now: datetime,
) -> Ledger:
    """The ledger of ``day`` (UTC) from each pool's clusters and jobs, priced by ``table``."""
    since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    until = min(since + DAY, max(now, since))
    pool_rows, work = [], []
    for pool in pools_cfg.pools:
        by_id = {c.cluster_id: c for c in clusters.get(pool.name, [])}
        cluster_rows = []
        for cluster in by_id.values():
            start = cluster_start(cluster)
            if start is None or start >= until or cluster_close(cluster, now) <= since:
                continue  # not alive in the day
            cost, on_demand, hours, unpriced = cluster_cost(cluster, table, since, until, now)
            if cluster.instances and not hours:
                continue  # its instances ran outside the day
            cluster_rows.append(
                ClusterCost(
                    pool.name,
                    cluster.cluster_id,
                    cluster.state,
                    _iso(start),
                    _iso(ended) if (ended := parse_time(cluster.terminated_at)) else "",
                    hours,
                    cost,
                    on_demand,
                    unpriced,
                    metered=bool(cluster.instances),
                )
            )
        rows, charged = work_costs(pool, jobs.get(pool.name, []), by_id, table, since, until, now)
        work.extend(rows)
        total = sum(c.cost for c in cluster_rows)
        glue = [r.glue for r in rows] if table.glue.dpus(pool.name) is not None else [None]
        pool_rows.append(
            PoolCost(
                pool.name,
                since.date().isoformat(),
                total,
                sum(c.on_demand for c in cluster_rows),
                None if any(g is None for g in glue) else sum(g for g in glue if g is not None),
                charged,
                total - charged,
                pool.budget_per_day,
                pool.budget_per_day is not None and total > pool.budget_per_day,
                sorted(cluster_rows, key=lambda c: c.start),
                _subjects(rows),
            )
        )
    return Ledger(
        since.date().isoformat(),
        _iso(now),
        table.currency,
        f"{table.path.name}: {table.region}, taken {table.taken}",
        pool_rows,
        work,
    )


def read(
    registry: Registry,
    pools_cfg: PoolsConfig,
    table: Prices,
    day: date,
    now: datetime,
    clusters: dict[str, list[Cluster]] | None = None,
) -> Ledger:
    """:func:`build` over the registry: each pool's clusters (one Query each, unless the caller
    read them: ``clusters``), the jobs of each cluster alive in the day (a Query per state on the
    jobs table's index by cluster), and the streams the pool serves (by key: a stream moved to a
    later cluster still ran on that day's)."""
    since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    until = since + DAY
    clusters = dict(clusters or {})
    jobs = {}
    for pool in pools_cfg.pools:
        if pool.name not in clusters:
            clusters[pool.name] = registry.clusters(pool.name)
        seen: dict[str, Job] = {}
        for cluster in clusters[pool.name]:
            start = cluster_start(cluster)
            if start is None or start >= until or cluster_close(cluster, now) < since:
                continue
            for job in registry.jobs_on_cluster(pool.name, cluster.cluster_id, ALL_JOB_STATES):
                seen[job.job_key] = job
        for stream in pool.serves_streams:  # a stream that moved since: found by its key, not its cluster
            found = registry.get_job(stream) if stream not in seen else None
            if found is not None and found.pool == pool.name:
                seen[stream] = found
        jobs[pool.name] = list(seen.values())
    return build(pools_cfg, clusters, jobs, table, day, now)


def money(value: float | None, currency: str = "USD") -> str:
    if value is None:
        return "-"
    return f"{value:,.4f} {currency}" if value < 1 else f"{value:,.2f} {currency}"


def render(ledger: Ledger, windows: bool = False) -> str:
    out = [f"spotlake cost ledger for {ledger.day} (UTC) at {ledger.at}; prices {ledger.prices}"]
    cur = ledger.currency
    for pool in ledger.pools:
        budget = f"; budget {money(pool.budget, cur)}/day" + (" EXCEEDED" if pool.over_budget else "")
        out += [
            "",
            f"POOL {pool.pool}: {money(pool.cost, cur)} (on demand {money(pool.on_demand, cur)}, "
            f"as AWS Glue {money(pool.glue, cur)}){budget if pool.budget is not None else ''}",
            f"  work {money(pool.work, cur)}, unattributed (idle slots, launch, drain) {money(pool.unattributed, cur)}",
        ]
        for c in pool.clusters:
            hours = ", ".join(f"{h:.3f} h {k}" for k, h in sorted(c.hours.items())) or "not metered"
            extra = f"; no price for {', '.join(c.unpriced)}" if c.unpriced else ""
            out.append(f"  {c.cluster_id:<14} {c.state:<11} {hours}: {money(c.cost, cur)}{extra}")
        for s in pool.subjects:
            out.append(
                f"  {s.subject:<20} {s.kind:<12} {s.runs:>4} run(s) {s.seconds / 60:8.1f} slot-min  "
                f"{money(s.cost, cur)}  (Glue {money(s.glue, cur)}, on demand {money(s.on_demand, cur)})"
            )
    if windows:
        out += ["", "WORK"]
        for r in ledger.work:
            out.append(
                f"  {r.job_key:<40} {r.kind:<12} {r.start} {r.seconds:8.1f} s  {money(r.cost, cur)}"
                f"  Glue {money(r.glue, cur)}  on {', '.join(r.clusters)}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--day", help="the UTC day, YYYY-MM-DD (default today)")
    parser.add_argument("--work", action="store_true", help="list every table-window and stream-hour")
    parser.add_argument("--json", action="store_true", help="print the ledger as JSON")
    parser.add_argument("--local", action="store_true", help="read the local stack's registry")
    args = parser.parse_args(argv)
    from spotlake.errors import SpotlakeError
    from spotlake.status import registry_client

    now = datetime.now(UTC)
    try:
        day = date.fromisoformat(args.day) if args.day else now.date()
    except ValueError:
        print(f"spotlake ledger: --day {args.day!r} is not a date; write YYYY-MM-DD", file=sys.stderr)
        return 2
    try:
        found = read(Registry(registry_client(args.local)), pools.load(), prices.load(), day, now)
    except SpotlakeError as exc:
        print(f"spotlake ledger: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(found), indent=2) if args.json else render(found, windows=args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
