"""``python -m spotlake.status``: pools, clusters, jobs and freshness at a glance.

Reads the registry (DynamoDB) and the local config files only. The DynamoDB
client comes from the environment: ``AWS_ENDPOINT_URL`` (e.g. the local moto
server), ``AWS_DEFAULT_REGION`` and the usual credentials, all honoured by boto3.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spark_jobs.common.lake_state import LakeState, parse_recent
from spotlake import config, ledger, pools, prices, stack, streaming
from spotlake.alert_store import AlertState, AlertStore, AlertTableMissing
from spotlake.errors import SpotlakeError
from spotlake.fleet import parse_time, span
from spotlake.freshness import Freshness, FreshnessStatus, freshness, read_states
from spotlake.registry import Cluster, ClusterState, Job, JobState, Registry
from spotlake.stream_status import StreamStatusStore

LIVE_CLUSTER_STATES = (ClusterState.LAUNCHING, ClusterState.READY, ClusterState.DRAINING, ClusterState.TERMINATING)
RECENT_GONE = 3  # gone clusters shown per pool
LAST_WINDOWS = 6  # the last windows shown per pipeline


@dataclass
class ClusterRow:
    cluster_id: str
    state: str
    age: str
    endpoint: str
    reason: str
    active: bool
    sessions: str = "-"  # warm sessions: "<live> (<busy> busy)"
    provider: str = ""
    launched_at: str = ""
    rotation_due: str = ""  # a READY cluster: when it is replaced ("in 3h 10m", "due")
    # A DEAD or TERMINATED cluster: whether the provider confirmed it no longer runs ("confirmed
    # <time>", or "NOT CONFIRMED: ..." while the fleet still asks); "" for a live one.
    ended: str = ""


@dataclass
class PoolView:
    name: str
    settings: str
    clusters: list[ClusterRow] = field(default_factory=list)


@dataclass
class JobRow:
    job_key: str
    state: str
    pool: str
    cluster_id: str
    batch_id: int
    attempt: int
    moves: int
    since: str
    reason: str
    statement: str = ""  # "<session>/<statement>" for a window run in a warm session


@dataclass
class MoveRow:
    """A job moved from a lost cluster to another in the last day."""

    job_key: str
    pool: str
    from_cluster: str
    to_cluster: str
    why: str
    requeued_at: str
    took_s: float  # from its re-queueing until the new cluster took it


@dataclass
class AlertRow:
    """An alert raised and not cleared (spotlake.alerts; the spotlake_alerts DAG raises and clears them)."""

    alert: str
    severity: str
    title: str
    message: str
    raised_at: str
    delivery: str


@dataclass
class WindowPoint:
    """A commit that moved a pipeline's watermark (from the state's history)."""

    committed_at: str
    watermark: str
    rows: int


@dataclass
class StreamRow:
    """What the streaming supervisor last recorded of a stream (see spotlake.stream_status)."""

    stream: str
    state: str
    cluster_id: str
    batch_id: int
    last_batch_id: int
    committed: str
    lag: int
    restarts: int
    checked: str
    reason: str
    dead_letters_last_hour: int = 0
    lag_by_partition: dict[str, int] = field(default_factory=dict)
    restart_budget: str = ""  # "<restarts> per <window>"


@dataclass
class Snapshot:
    at: str
    provider: str
    pools: list[PoolView]
    jobs: list[JobRow]
    freshness: list[Freshness]
    warnings: list[str] = field(default_factory=list)
    streams: list[StreamRow] = field(default_factory=list)
    moves: list[MoveRow] = field(default_factory=list)
    windows: dict[str, list[WindowPoint]] = field(default_factory=dict)  # per pipeline, the last ones
    alerts: list[AlertRow] = field(default_factory=list)  # raised, not cleared
    # Today's cost per pool (spotlake.ledger), in ``currency``; empty when the prices cannot be read.
    costs: list[ledger.PoolCost] = field(default_factory=list)
    currency: str = ""
    costs_unknown: bool = False  # the ledger could not be read (a warning says why)


def _age(iso: str, now: datetime) -> str:
    started = parse_time(iso)
    return span(now - started) if started else "-"


def collect_streams(registry: Registry, streams_cfg: streaming.StreamsConfig | None, now: datetime) -> list[StreamRow]:
    """One row per configured stream, and per stream the supervisor has recorded."""
    recorded = {s.stream: s for s in StreamStatusStore(registry.client, registry.prefix).all()}
    configured = {s.name: s for s in streams_cfg.streams} if streams_cfg is not None else {}
    rows = []
    for name in [*configured, *sorted(set(recorded) - set(configured))]:
        status = recorded.get(name)
        if status is None:
            rows.append(
                StreamRow(
                    name,
                    "(not supervised yet)",
                    "-",
                    -1,
                    -1,
                    "-",
                    -1,
                    0,
                    "-",
                    f"its DAG stream_{name} has not run (it is created paused)",
                    restart_budget=_budget(configured[name].restart_budget) if name in configured else "",
                )
            )
            continue
        budget = configured[name].restart_budget if name in configured else streaming.RestartBudget()
        rows.append(
            StreamRow(
                name,
                status.state,
                status.cluster_id or "-",
                status.batch_id,
                status.last_batch_id,
                _age(status.committed_at, now) if status.committed_at else "-",
                status.lag,
                len(status.recent_restarts(now, budget.per)),
                _age(status.checked_at, now),
                status.reason,
                status.dead_letters_last_hour,
                dict(status.lag_by_partition),
                _budget(budget),
            )
        )
    return rows


def _budget(budget: streaming.RestartBudget) -> str:
    return f"{budget.restarts} per {span(budget.per)}"


def collect(
    registry: Registry,
    pools_cfg: pools.PoolsConfig,
    pipelines: config.PipelinesConfig,
    now: datetime,
    streams_cfg: streaming.StreamsConfig | None = None,
    paused: dict[str, bool] | None = None,
) -> Snapshot:
    """Everything the status command, the operations page and the alerts report, read once.

    ``paused``: each DAG id's paused flag, where the caller knows it (Airflow's side)."""
    views = []
    read: dict[str, list[Cluster]] = {}
    for pool in pools_cfg.pools:
        active, _ = registry.active_cluster_id(pool.name)
        read[pool.name] = registry.clusters(pool.name)
        clusters = sorted(read[pool.name], key=lambda c: (c.generation, c.launched_at), reverse=True)
        live = [c for c in clusters if c.state in LIVE_CLUSTER_STATES]
        ended = [c for c in clusters if c.state not in LIVE_CLUSTER_STATES]
        # The last few, and every one the provider has not confirmed gone (it may still bill).
        gone = [c for i, c in enumerate(ended) if i < RECENT_GONE or not c.terminated_at]
        views.append(
            PoolView(
                name=pool.name,
                settings=(
                    f"max_age {span(pool.max_age)}, drain_deadline {span(pool.drain_deadline)}, "
                    f"checks every {span(pool.health_check_interval)}, DEAD after "
                    f"{pool.failure_threshold} failed checks"
                ),
                clusters=[
                    ClusterRow(
                        c.cluster_id,
                        c.state,
                        _age(c.launched_at, now),
                        c.endpoint or "-",
                        c.reason or (f"failing: {c.last_failure}" if c.failures else ""),
                        c.cluster_id == active,
                        _sessions(registry, c.cluster_id) if c in live else "-",
                        c.provider,
                        c.launched_at,
                        _rotation_due(c, pool, now),
                        _ended(c),
                    )
                    for c in live + gone
                ],
            )
        )
    all_jobs = registry.jobs_to_show([p.name for p in pools_cfg.pools], (now - timedelta(days=1)).isoformat())
    jobs = [
        JobRow(
            j.job_key,
            j.state,
            j.pool,
            j.cluster_id,
            j.batch_id,
            j.attempt,
            j.moves,
            _age(j.updated_at or j.submitted_at, now),
            j.reason,
            f"{j.session_id}/{j.statement_id}" if j.in_session else "",
        )
        for j in sorted(all_jobs, key=lambda j: j.job_key)
        if j.state in (JobState.SUBMITTED, JobState.REQUEUED, JobState.QUEUED)
    ]
    store = LakeState(registry.client, registry.prefix)
    states = read_states(store, [p.name for p in pipelines.pipelines])
    paused = paused or {}
    fresh = [freshness(p, states.get(p.name), now, paused.get(p.dag_id)) for p in pipelines.pipelines]
    windows = {
        name: [
            WindowPoint(_iso(point.committed), _iso(point.watermark), point.rows)
            for point in parse_recent(state.recent)[-LAST_WINDOWS:]
        ]
        for name, state in states.items()
    }
    warnings = []
    try:
        pools.check_pipelines(pools_cfg, pipelines)
    except SpotlakeError as exc:
        warnings.append(str(exc))
    if streams_cfg is None:
        try:
            streams_cfg = streaming.load()
            streaming.check_pools(pools_cfg, streams_cfg)
        except SpotlakeError as exc:
            warnings.append(str(exc))
    streams = collect_streams(registry, streams_cfg, now)
    try:
        alerts = [
            AlertRow(r.alert, r.severity, r.title, r.message, r.raised_at, r.delivery)
            for r in AlertStore(registry.client, registry.prefix).all()
            if r.state == AlertState.FIRING
        ]
    except AlertTableMissing as exc:
        alerts, warnings = [], [*warnings, str(exc)]
    costs: list[ledger.PoolCost] = []
    currency = ""
    try:
        today = ledger.read(registry, pools_cfg, prices.load(), now.date(), now, clusters=read)
        costs, currency = today.pools, today.currency
    except (SpotlakeError, ClientError, BotoCoreError, ValueError) as exc:
        warnings.append(f"cost ledger: {exc}")
    return Snapshot(
        now.isoformat(timespec="seconds"),
        pools_cfg.provider,
        views,
        jobs,
        fresh,
        warnings,
        streams,
        moves_since(all_jobs, now - timedelta(days=1)),
        windows,
        alerts,
        costs,
        currency,
        costs_unknown=not currency,
    )


def _ended(cluster: Cluster) -> str:
    """Whether the provider confirmed an ended cluster gone (see spotlake.fleet.Fleet.settle)."""
    if cluster.state in LIVE_CLUSTER_STATES:
        return ""
    if cluster.terminated_at:
        return f"confirmed {cluster.terminated_at[:19]}"
    said = f"; last error: {cluster.terminate_error[:200]}" if cluster.terminate_error else ""
    return f"NOT CONFIRMED: {cluster.terminate_attempts} repeated termination request(s){said}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _rotation_due(cluster: Cluster, pool: pools.PoolConfig, now: datetime) -> str:
    """When a READY cluster is replaced: ``max_age`` after its launch."""
    launched = parse_time(cluster.launched_at)
    if cluster.state != ClusterState.READY or launched is None:
        return ""
    left = launched + pool.max_age - now
    return "due" if left.total_seconds() <= 0 else f"in {span(left)}"


def moves_since(jobs: list[Job], since: datetime) -> list[MoveRow]:
    """Every move of a job to another cluster re-queued after ``since``, newest first."""
    rows = []
    for job in jobs:
        for move in job.moves_made():
            requeued, taken = parse_time(move.get("requeued_at", "")), parse_time(move.get("taken_at", ""))
            if requeued is None or requeued < since:
                continue
            rows.append(
                MoveRow(
                    job.job_key,
                    job.pool,
                    move.get("from", ""),
                    move.get("to", ""),
                    move.get("why", ""),
                    move.get("requeued_at", ""),
                    round((taken - requeued).total_seconds(), 1) if taken else -1.0,
                )
            )
    return sorted(rows, key=lambda m: m.requeued_at, reverse=True)


def _sessions(registry: Registry, cluster_id: str) -> str:
    slots = registry.session_slots(cluster_id)
    live = sum(1 for slot in slots if slot.session_id >= 0)
    busy = sum(1 for slot in slots if slot.lease_run)
    return f"{live} ({busy} busy)" if slots else "0"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append(indent + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return lines


def render(snapshot: Snapshot) -> str:
    out = [f"spotlake status at {snapshot.at} (provider {snapshot.provider})", ""]
    if snapshot.alerts:
        out.append(f"ALERTS: {len(snapshot.alerts)} raised")
        out += _table(
            ["alert", "severity", "raised", "title"],
            [[a.alert, a.severity, a.raised_at, a.title[:120]] for a in snapshot.alerts],
        )
        out.append("")
    out.append("POOLS")
    for pool in snapshot.pools:
        out.append(f"pool {pool.name}: {pool.settings}")
        if not pool.clusters:
            out.append("  no cluster yet: the fleet DAG launches one")
            continue
        out += _table(
            ["cluster", "state", "age", "endpoint", "sessions", "gone at provider", "reason"],
            [
                [
                    c.cluster_id + (" *" if c.active else ""),
                    c.state,
                    c.age,
                    c.endpoint,
                    c.sessions,
                    c.ended or "-",
                    c.reason[:100],
                ]
                for c in pool.clusters
            ],
        )
    out.append("  (* takes the pool's new jobs)")
    running = [j for j in snapshot.jobs if j.state == JobState.SUBMITTED]
    waiting = [j for j in snapshot.jobs if j.state != JobState.SUBMITTED]
    out += ["", f"JOBS: {len(running)} running, {len(waiting)} re-queued or queued"]
    if snapshot.jobs:
        out += _table(
            ["job", "state", "pool", "cluster", "batch or session/statement", "attempt", "moves", "since", "reason"],
            [
                [
                    j.job_key,
                    j.state,
                    j.pool,
                    j.cluster_id or "-",
                    j.statement or str(j.batch_id),
                    str(j.attempt),
                    str(j.moves),
                    j.since,
                    j.reason[:80],
                ]
                for j in running + waiting
            ],
        )
    if snapshot.moves:
        out += ["", f"MOVES in the last 24 h: {len(snapshot.moves)}"]
        out += _table(
            ["job", "pool", "from", "to", "re-queued", "took", "why"],
            [
                [m.job_key, m.pool, m.from_cluster, m.to_cluster, m.requeued_at, f"{m.took_s:.0f}s", m.why[:80]]
                for m in snapshot.moves[:20]
            ],
        )
    out += [
        "",
        "FRESHNESS (committed watermark: every window before it is in the lake; a STALE or FAILING table is stale since it)",
    ]
    out += _table(
        ["pipeline", "status", "watermark", "age", "stale after", "last windows (rows)", "reconciled", "reason"],
        [
            [
                f.pipeline,
                f"{f.status} (stale)" if f.stale and f.status != FreshnessStatus.STALE else f.status,
                f.watermark or "-",
                f.age,
                span(timedelta(seconds=f.stale_after_s)),
                " ".join(str(w.rows) for w in snapshot.windows.get(f.pipeline, [])[-5:]) or "-",
                f.reconciled[:120] or "-",
                f.reason[:240],
            ]
            for f in snapshot.freshness
        ],
    )
    out += [
        "",
        "STREAMS (last supervisor run; lag in records behind Kafka's end offsets, of every output: one query writes them all)",
    ]
    if snapshot.streams:
        out += _table(
            [
                "stream",
                "state",
                "cluster",
                "batch",
                "last micro-batch",
                "committed",
                "lag",
                "restarts/window",
                "checked",
                "reason",
            ],
            [
                [
                    s.stream,
                    s.state,
                    s.cluster_id,
                    str(s.batch_id),
                    str(s.last_batch_id),
                    s.committed,
                    str(s.lag) if s.lag >= 0 else "-",
                    str(s.restarts),
                    s.checked,
                    s.reason[:80],
                ]
                for s in snapshot.streams
            ],
        )
    else:
        out.append("  none configured")
    out += ["", f"COST TODAY (UTC, {snapshot.currency or 'no prices'}; python -m spotlake.ledger --work for each window)"]
    if snapshot.costs:
        out += _table(
            ["pool", "spent", "budget/day", "on demand", "as AWS Glue", "work", "unattributed", "clusters"],
            [
                [
                    c.pool,
                    ledger.money(c.cost, snapshot.currency) + (" OVER BUDGET" if c.over_budget else ""),
                    ledger.money(c.budget, snapshot.currency),
                    ledger.money(c.on_demand, snapshot.currency),
                    ledger.money(c.glue, snapshot.currency),
                    ledger.money(c.work, snapshot.currency),
                    ledger.money(c.unattributed, snapshot.currency),
                    "; ".join(
                        f"{k.cluster_id} " + (", ".join(f"{h:.2f} h {t}" for t, h in sorted(k.hours.items())) or "not metered")
                        for k in c.clusters
                    )
                    + (f"; NO PRICE for {', '.join(c.unpriced)} (left out)" if c.unpriced else "")
                    or "-",
                ]
                for c in snapshot.costs
            ],
        )
    else:
        out.append("  not known (see CONFIG WARNINGS)")
    if snapshot.warnings:
        out += ["", "CONFIG WARNINGS"] + [f"  {w}" for w in snapshot.warnings]
    return "\n".join(out)


def registry_client(local: bool) -> Any:
    """A DynamoDB client for the registry: AWS's (the environment's credentials and region), or with
    ``local`` the local stack's moto server that `make up` started."""
    import boto3

    env: dict[str, str] = {}
    if local:
        from spotlake.stack import StackLayout

        env = stack.aws_env(StackLayout.default())
    return boto3.client(
        "dynamodb",
        region_name=env.get("AWS_DEFAULT_REGION"),
        endpoint_url=env.get("AWS_ENDPOINT_URL"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.status", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--local", action="store_true", help="read the local stack's registry (the moto server `make up` started)"
    )
    args = parser.parse_args(argv)

    try:
        pools_cfg, pipelines = pools.load(), config.load()
        client = registry_client(args.local)
        snapshot = collect(Registry(client), pools_cfg, pipelines, datetime.now(UTC))
    except SpotlakeError as exc:
        print(f"spotlake status: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(
            f"spotlake status: cannot read the registry ({exc}). Fix: on the local stack add --local (`make up` "
            "starts the moto server and creates the tables); against AWS, check the credentials and "
            "AWS_DEFAULT_REGION",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(asdict(snapshot), indent=2) if args.json else render(snapshot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
