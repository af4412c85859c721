"""A registry filled as an operator would find it at 3 a.m.: clusters in every state, a moved job,
pipelines fresh, stale, paused, failing, loading and never run, a stream running and one backed off.

Used by the operations page's tests and its benchmark (``bench/operations_bench.py``), which
scales it to hundreds of pipelines with :func:`pipelines_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from spark_jobs.common.lake_state import HistoryPoint, LakeState, iso, with_history, with_recent
from spotlake import config
from spotlake.alert_store import AlertRecord, AlertState, AlertStore
from spotlake.providers.base import InstanceUsage, encode_instances
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from spotlake.stream_status import Restart, StreamState, StreamStatus, StreamStatusStore


def next_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)


# The page's "now" for the last fill: the next whole minute when it began. The registry stamps
# state changes with the real clock, so they fall in the last minute before it, as on a live stack.
NOW = next_minute()


@dataclass(frozen=True)
class Expected:
    """What the fixture's page must show."""

    fresh: str = "shop_orders"
    paused_stale: str = "shop_customers"  # its DAG paused 40 minutes ago: STALE and PAUSED
    failing: str = "shop_order_items"  # its last window failed
    never: str = "p0003"  # no state at all (only in the scaled config)
    moved_job: str = "shop_orders#20261127T1350"  # (its label is only a name here)


def pipelines_config(path: Path, extra: int = 0) -> config.PipelinesConfig:
    """The project's pipelines plus ``extra`` more (``p0001``...) on the same source table, written
    to ``path`` and parsed."""
    raw = yaml.safe_load(config.config_path().read_text())
    for i in range(1, extra + 1):
        raw["pipelines"].append(
            {
                "name": f"p{i:04d}",
                "source": "shop",
                "database": "shop",
                "table": "orders",
                "primary_key": "order_id",
                "cursor": "updated_at",
                **({"stale_after": "30m"} if i % 2 else {}),
            }
        )
    path.write_text(yaml.safe_dump(raw))
    return config.load(path)


def _cluster(registry: Registry, pool: str, number: int, launched: datetime, *states: tuple[ClusterState, str]) -> Cluster:
    cluster = Cluster(
        pool=pool, cluster_id=f"{pool}-{number:04d}", provider="local", state="", generation=number, launched_at=iso(launched)
    )
    registry.put_launching(cluster)
    for state, reason in states:
        if state == ClusterState.READY:
            replaces, _ = registry.active_cluster_id(pool)
            if replaces:
                old = registry.get_cluster(pool, replaces)
                assert old is not None
                cluster = registry.take_over(cluster, f"http://127.0.0.1:{18000 + number}", old, iso(NOW))
            else:
                cluster = registry.mark_ready(cluster, f"http://127.0.0.1:{18000 + number}")
        else:
            cluster = registry.transition_cluster(cluster, state, reason)
    return cluster


def _history(pipeline: str, until: datetime, every: timedelta, rows: int) -> tuple[str, str]:
    """A day of commits every ``every`` up to ``until``, each moving the watermark to its time:
    the state's ``history`` and ``recent``."""
    history, recent = "", ""
    moment = NOW - timedelta(days=1)
    while moment <= until:
        point = HistoryPoint(moment.timestamp(), moment.timestamp(), rows + len(pipeline))
        history, recent = with_history(history, point), with_recent(recent, point)
        moment += every
    return history, recent


def _state(store: LakeState, pipeline: str, watermark: datetime, history: tuple[str, str]) -> None:
    store.ensure(pipeline, False, watermark)
    store.client.update_item(
        TableName=store.table,
        Key={"pipeline": {"S": pipeline}, "window": {"S": "#state"}},
        UpdateExpression="SET watermark = :w, advanced_at = :a, #s = :s, #h = :h, recent = :r",
        ExpressionAttributeNames={"#h": "history", "#s": "snapshot"},
        ExpressionAttributeValues={
            ":w": {"S": iso(watermark)},
            ":a": {"S": iso(watermark + timedelta(minutes=1))},
            ":s": {"S": "SKIPPED"},
            ":h": {"S": history[0]},
            ":r": {"S": history[1]},
        },
    )


def fill(registry: Registry, pipelines: config.PipelinesConfig, clusters_per_pool: int = 3) -> Expected:
    """Write the fixture into ``registry`` (its tables exist), as of a new :data:`NOW`."""
    global NOW
    NOW = next_minute()
    expected = Expected()
    # small: a dead cluster, its replacement READY, a third launching; large: one draining, one READY,
    # one terminating, one terminated.
    _cluster(
        registry, "small", 1, NOW - timedelta(hours=5), (ClusterState.READY, ""), (ClusterState.DEAD, "spot capacity reclaimed")
    )
    small = _cluster(registry, "small", 2, NOW - timedelta(minutes=50), (ClusterState.READY, ""))
    # metered as the fleet does (the cost ledger): one m5.xlarge on demand since its launch
    small = registry.update_cluster(
        small,
        instances=encode_instances([InstanceUsage("m5.xlarge", "ON_DEMAND", "MASTER", iso(NOW - timedelta(minutes=50)))]),
        metered_at=iso(NOW),
    )
    for n in range(3, clusters_per_pool + 1):
        _cluster(registry, "small", n, NOW - timedelta(minutes=1))
    _cluster(
        registry,
        "large",
        1,
        NOW - timedelta(hours=30),
        (ClusterState.READY, ""),
        (ClusterState.TERMINATING, "rotated"),
        (ClusterState.TERMINATED, "rotated"),
    )
    _cluster(
        registry,
        "large",
        2,
        NOW - timedelta(hours=13),
        (ClusterState.READY, ""),
        (ClusterState.DRAINING, "replaced by large-0003"),
    )
    _cluster(registry, "large", 3, NOW - timedelta(minutes=20), (ClusterState.TERMINATING, "launch failed"))
    # a job moved from the dead cluster to its replacement
    dead = registry.get_cluster("small", "small-0001")
    assert dead is not None
    job = registry.claim_job(expected.moved_job, "small", dead, "r1", None)
    job = registry.update_job(job, state=JobState.REQUEUED, reason="cluster small-0001 DEAD: spot capacity reclaimed")
    registry.claim_job(expected.moved_job, "small", small, "r1", job)
    store = LakeState(registry.client, registry.prefix)
    five = timedelta(minutes=5)
    _state(store, expected.fresh, NOW - five, _history(expected.fresh, NOW - five, five, 120))
    _state(
        store,
        expected.paused_stale,
        NOW - timedelta(minutes=40),
        _history(expected.paused_stale, NOW - timedelta(minutes=40), five, 40),
    )
    _state(store, expected.failing, NOW - timedelta(minutes=25), _history(expected.failing, NOW - timedelta(minutes=25), five, 7))
    store.record_failure(expected.failing, f"{expected.failing}#20261127T1350", "window failed: column total out of range")
    for i, pipeline in enumerate(p.name for p in pipelines.pipelines):
        if pipeline.startswith("p") and pipeline != expected.never:
            _state(store, pipeline, NOW - five * (i % 5 + 1), _history(pipeline, NOW - five * (i % 5 + 1), five, i))
    statuses = StreamStatusStore(registry.client, registry.prefix)
    running = StreamStatus(stream="clicks", state=StreamState.RUNNING, pool="small", cluster_id="small-0002", last_batch_id=812)
    running.committed_at, running.lag, running.lag_by_partition = (
        iso(NOW - timedelta(seconds=20)),
        340,
        {"clicks-0": 200, "clicks-1": 140},
    )
    running.dead_letters_last_hour = 3
    for minutes in range(60, 0, -1):
        running.record_lag(NOW - timedelta(minutes=minutes), 100 + minutes * 5)
    statuses.put(running)
    backed_off = StreamStatus(
        stream="orders_stream", state=StreamState.BACKED_OFF, reason="restart budget spent: 3 restarts in 1h"
    )
    backed_off.restarts = [Restart(iso(NOW - timedelta(minutes=m)), "failed") for m in (10, 20, 30)]
    statuses.put(backed_off)
    AlertStore(registry.client, registry.prefix).put(
        AlertRecord(
            alert="pool:large:no_ready",
            kind="no_ready",
            subject="large",
            state=AlertState.FIRING,
            severity="critical",
            title="pool large has no READY cluster",
            message="its clusters: large-0002 DRAINING, large-0003 TERMINATING (launch failed)",
            since=iso(NOW - timedelta(minutes=20)),
            raised_at=iso(NOW - timedelta(minutes=5)),
        ),
        iso(NOW),
    )
    return expected


def paused(pipelines: config.PipelinesConfig) -> dict[str, bool]:
    """The DAGs' paused flags of the fixture: the paused-stale pipeline's DAG is paused."""
    return {p.dag_id: p.name == Expected().paused_stale for p in pipelines.pipelines}
