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
from datetime import UTC, datetime

from spark_jobs.common.lake_state import LakeState
from spotlake import config, pools, stack, streaming
from spotlake.errors import SpotlakeError
from spotlake.fleet import parse_time, span
from spotlake.freshness import Freshness, freshness
from spotlake.registry import ClusterState, JobState, Registry
from spotlake.stream_status import StreamStatusStore

LIVE_CLUSTER_STATES = (ClusterState.LAUNCHING, ClusterState.READY, ClusterState.DRAINING, ClusterState.TERMINATING)
RECENT_GONE = 3  # gone clusters shown per pool


@dataclass
class ClusterRow:
    cluster_id: str
    state: str
    age: str
    endpoint: str
    reason: str
    active: bool
    sessions: str = "-"  # warm sessions: "<live> (<busy> busy)"


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


@dataclass
class Snapshot:
    at: str
    provider: str
    pools: list[PoolView]
    jobs: list[JobRow]
    freshness: list[Freshness]
    warnings: list[str] = field(default_factory=list)
    streams: list[StreamRow] = field(default_factory=list)


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
            )
        )
    return rows


def collect(
    registry: Registry,
    pools_cfg: pools.PoolsConfig,
    pipelines: config.PipelinesConfig,
    now: datetime,
    streams_cfg: streaming.StreamsConfig | None = None,
) -> Snapshot:
    views = []
    for pool in pools_cfg.pools:
        active, _ = registry.active_cluster_id(pool.name)
        clusters = sorted(registry.clusters(pool.name), key=lambda c: (c.generation, c.launched_at), reverse=True)
        live = [c for c in clusters if c.state in LIVE_CLUSTER_STATES]
        gone = [c for c in clusters if c.state not in LIVE_CLUSTER_STATES][:RECENT_GONE]
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
                    )
                    for c in live + gone
                ],
            )
        )
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
        for j in sorted(registry.jobs(), key=lambda j: j.job_key)
        if j.state in (JobState.SUBMITTED, JobState.REQUEUED, JobState.QUEUED)
    ]
    store = LakeState(registry.client, registry.prefix)
    fresh = [freshness(p, store.get(p.name), now) for p in pipelines.pipelines]
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
    return Snapshot(now.isoformat(timespec="seconds"), pools_cfg.provider, views, jobs, fresh, warnings, streams)


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
    out = [f"spotlake status at {snapshot.at} (provider {snapshot.provider})", "", "POOLS"]
    for pool in snapshot.pools:
        out.append(f"pool {pool.name}: {pool.settings}")
        if not pool.clusters:
            out.append("  no cluster yet: the fleet DAG launches one")
            continue
        out += _table(
            ["cluster", "state", "age", "endpoint", "sessions", "reason"],
            [
                [c.cluster_id + (" *" if c.active else ""), c.state, c.age, c.endpoint, c.sessions, c.reason[:100]]
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
    out += [
        "",
        "FRESHNESS (committed watermark: every window before it is in the lake; a STALE or FAILING table is stale since it)",
    ]
    out += _table(
        ["pipeline", "status", "watermark", "age", "reconciled", "reason"],
        [
            [f.pipeline, f.status, f.watermark or "-", f.age, f.reconciled[:120] or "-", f.reason[:240]]
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
    if snapshot.warnings:
        out += ["", "CONFIG WARNINGS"] + [f"  {w}" for w in snapshot.warnings]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.status", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--local", action="store_true", help="read the local stack's registry (the moto server `make up` started)"
    )
    args = parser.parse_args(argv)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session_env: dict[str, str] = {}
    if args.local:
        from spotlake.stack import StackLayout

        session_env = stack.aws_env(StackLayout.default())
    try:
        pools_cfg, pipelines = pools.load(), config.load()
        client = boto3.client(
            "dynamodb",
            region_name=session_env.get("AWS_DEFAULT_REGION"),
            endpoint_url=session_env.get("AWS_ENDPOINT_URL"),
            aws_access_key_id=session_env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=session_env.get("AWS_SECRET_ACCESS_KEY"),
        )
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
