"""The operations page's time series: what the last day looked like, from the registry alone.

Freshness and rows per window come from each pipeline state's ``history`` (the commits of the
last day that set its watermark, :mod:`spark_jobs.common.lake_state`), cluster counts by state
from each cluster's ``transitions``, stream lag from each stream status's ``lag_history``. So the
charts cost one batch read of the pipeline states, one query per pool and one scan of the
streams' small table, whatever the number of windows. The page's tables come from
:func:`spotlake.status.collect`, the same figures the status command prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spark_jobs.common.lake_state import HistoryPoint, LakeState, parse_history, parse_iso
from spotlake import config, pools
from spotlake.fleet import parse_time
from spotlake.freshness import read_states, stale_after
from spotlake.registry import Cluster, ClusterState, Registry
from spotlake.stream_status import StreamStatus, StreamStatusStore

DAY = timedelta(days=1)
STEP = timedelta(minutes=10)  # the charts' resolution
TOP_PIPELINES = 12  # rows per window: the busiest pipelines get a series each, the rest one "others"
CLUSTER_STATES = (
    ClusterState.LAUNCHING,
    ClusterState.READY,
    ClusterState.DRAINING,
    ClusterState.TERMINATING,
    ClusterState.DEAD,
)


@dataclass
class Series:
    """One line (or bar series) of a chart: ``y[i]`` at ``x[i]`` (ISO times); None is a gap."""

    name: str
    x: list[str] = field(default_factory=list)
    y: list[float | None] = field(default_factory=list)


@dataclass
class History:
    at: str
    freshness: list[Series]  # the committed watermark's age in minutes, per pipeline
    stale_after: dict[str, float]  # each pipeline's threshold in minutes
    rows: list[Series]  # rows written per window, per pipeline (the busiest) summed per STEP
    clusters: list[Series]  # clusters in each state, per STEP
    lag: list[Series]  # records behind Kafka, per stream and check


def grid(now: datetime, span: timedelta = DAY, step: timedelta = STEP) -> list[datetime]:
    """The chart's sample times: the end of each ``step`` (aligned to the epoch, as the states'
    ``history`` is) of the last ``span``, and ``now`` last."""
    size = step.total_seconds()
    last_end = int(now.timestamp() // size) * size
    count = int(span / step)
    times = [datetime.fromtimestamp(last_end - (count - 1 - i) * size, UTC) for i in range(count)]
    return [*times, now] if times[-1] < now else times


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def freshness_series(name: str, points: list[HistoryPoint], times: list[datetime], watermark_now: float | None) -> Series:
    """The watermark's age (minutes) at each of ``times``: how far behind the source the lake was;
    ``watermark_now``: the state's watermark (the last point). Before the first commit of the day
    the age is unknown (a gap)."""
    series = Series(name, [_iso(t) for t in times])
    step = STEP.total_seconds()
    index, watermark = 0, None
    for moment in times:
        stamp = moment.timestamp()
        while index < len(points) and points[index].committed + step <= stamp:
            watermark = max(watermark or points[index].watermark, points[index].watermark)
            index += 1
        if moment is times[-1] and watermark_now is not None:
            watermark = watermark_now
        series.y.append(None if watermark is None else round(max(0.0, stamp - watermark) / 60, 1))
    return series


def rows_series(histories: dict[str, list[HistoryPoint]], times: list[datetime], top: int = TOP_PIPELINES) -> list[Series]:
    """Rows written per ten minutes, one series for each of the ``top`` busiest pipelines and one
    "others" for the rest; each bar at its ten minutes' end."""
    totals = {name: sum(p.rows for p in points) for name, points in histories.items()}
    busiest = sorted((n for n in totals if totals[n] > 0), key=lambda n: (-totals[n], n))[:top]
    others = sorted(set(histories) - set(busiest))
    step = STEP.total_seconds()
    slots = {t.timestamp(): i for i, t in enumerate(times)}

    def binned(names: list[str], label: str) -> Series:
        sums = [0.0] * len(times)
        for name in names:
            for point in histories[name]:
                slot = slots.get(point.committed + step)
                if slot is None and point.committed + step > times[-1].timestamp() >= point.committed:
                    slot = len(times) - 1  # the ten minutes under way
                if slot is not None:
                    sums[slot] += point.rows
        return Series(label, [_iso(t) for t in times], list(sums))

    series = [binned([name], name) for name in busiest]
    if others and any(totals[n] for n in others):
        series.append(binned(others, f"others ({len(others)})"))
    return series


def cluster_changes(cluster: Cluster) -> list[tuple[float, str]]:
    """Each state the cluster entered and when (epoch seconds); from ``launched_at`` and
    ``updated_at`` for a cluster written before transitions were recorded."""
    changes = [(stamp.timestamp(), state) for state, at in cluster.state_changes() if (stamp := parse_time(at)) is not None]
    if changes:
        return changes
    launched, updated = parse_time(cluster.launched_at), parse_time(cluster.updated_at)
    found = [(launched.timestamp(), str(ClusterState.LAUNCHING))] if launched else []
    if updated is not None and cluster.state != ClusterState.LAUNCHING:
        found.append((updated.timestamp(), cluster.state))
    return found


def cluster_series(clusters: list[Cluster], times: list[datetime]) -> list[Series]:
    """How many clusters (of every pool) were in each state at each of ``times``; a TERMINATED
    cluster counts no more."""
    counts: dict[str, list[float]] = {str(state): [0.0] * len(times) for state in CLUSTER_STATES}
    for cluster in clusters:
        changes = cluster_changes(cluster)
        for i, moment in enumerate(times):
            stamp = moment.timestamp()
            current = None
            for at, state in changes:
                if at <= stamp:
                    current = state
            if current in counts:
                counts[current][i] += 1
    labels = [_iso(t) for t in times]
    return [Series(str(state), labels, list(values)) for state, values in counts.items()]


def lag_series(statuses: list[StreamStatus], since: datetime) -> list[Series]:
    """Each stream's lag (records behind Kafka's end offsets) at each supervisor check since ``since``."""
    series = []
    for status in statuses:
        readings = [(at, lag) for at, lag in status.lag_readings() if at >= since.timestamp()]
        series.append(
            Series(
                status.stream,
                [_iso(datetime.fromtimestamp(at, UTC)) for at, _ in readings],
                [float(lag) for _, lag in readings],
            )
        )
    return series


def history(
    registry: Registry,
    pools_cfg: pools.PoolsConfig,
    pipelines: config.PipelinesConfig,
    now: datetime,
) -> History:
    """The last day of every pipeline, pool and stream, sampled every :data:`STEP`."""
    times = grid(now)
    states = read_states(LakeState(registry.client, registry.prefix), [p.name for p in pipelines.pipelines], history=True)
    histories = {p.name: parse_history(states[p.name].history) if p.name in states else [] for p in pipelines.pipelines}
    watermarks = {name: parse_iso(state.watermark).timestamp() for name, state in states.items() if state.watermark is not None}
    clusters = [c for pool in pools_cfg.pools for c in registry.clusters(pool.name)]
    return History(
        at=_iso(now),
        freshness=[freshness_series(name, points, times, watermarks.get(name)) for name, points in histories.items()],
        stale_after={p.name: round(stale_after(p) / 60, 1) for p in pipelines.pipelines},
        rows=rows_series(histories, times),
        clusters=cluster_series(clusters, times),
        lag=lag_series(StreamStatusStore(registry.client, registry.prefix).all(), now - DAY),
    )
