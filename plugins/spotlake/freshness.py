"""How fresh each pipeline's lake tables are: its committed watermark, and why it is behind.

The watermark is the end of the last window up to which every window is committed
(:mod:`spark_jobs.common.lake_state`), so a window that failed, a DAG that is paused or a
scheduler that is down all show as a watermark that stops moving: the table is stale
since then, whatever later windows did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from spark_jobs.common.lake_state import PipelineState, SnapshotPhase, parse_iso
from spotlake import config
from spotlake.fleet import span


class FreshnessStatus(StrEnum):
    """How fresh a pipeline's tables are (upper case: needs a look)."""

    FRESH = "fresh"
    STALE = "STALE"  # no window committed for two schedule intervals
    FAILING = "FAILING"  # a window (or the initial snapshot) failed after the watermark last moved
    LOADING = "loading"  # the initial snapshot is under way
    NEVER = "never run"


FRESH, STALE, FAILING, LOADING, NEVER = (
    FreshnessStatus.FRESH,
    FreshnessStatus.STALE,
    FreshnessStatus.FAILING,
    FreshnessStatus.LOADING,
    FreshnessStatus.NEVER,
)


@dataclass
class Freshness:
    pipeline: str
    status: FreshnessStatus
    watermark: str  # ISO time, "" before the first commit; a STALE or FAILING table is stale since it
    age: str
    reason: str = ""
    reconciled: str = ""  # when the last reconciliation finished, and what it found
    age_s: float | None = None  # the watermark's age in seconds (None before the first commit)
    stale_after_s: float = 0.0  # the pipeline's staleness threshold (config stale_after)
    stale: bool = False  # STALE or FAILING: the lake is behind the source and someone should look
    paused: bool | None = None  # its DAG is paused (None: not known, e.g. outside Airflow)


def stale_after(pipeline: config.Pipeline) -> float:
    """Seconds after which a watermark is stale: the pipeline's ``stale_after``, by default two
    schedule intervals (one run late)."""
    if pipeline.stale_after is not None:
        return pipeline.stale_after.total_seconds()
    return 2 * pipeline.interval.total_seconds()


def freshness(
    pipeline: config.Pipeline, state: PipelineState | None, now: datetime, paused: bool | None = None
) -> Freshness:
    found = _freshness(pipeline, state, now)
    if state is not None and state.reconciled_at:
        found.reconciled = f"{span(now - parse_iso(state.reconciled_at))} ago: {state.reconcile_result or ''}"
    if state is not None and state.watermark:
        found.age_s = round((now - parse_iso(state.watermark)).total_seconds(), 1)
    found.stale_after_s = stale_after(pipeline)
    found.stale = found.status in (STALE, FAILING)
    found.paused = paused
    if paused and found.status in (FRESH, LOADING):
        found.reason = "; ".join(x for x in (f"its DAG {pipeline.dag_id} is paused: the tables go stale", found.reason) if x)
    elif paused and found.status == STALE and "paused" not in found.reason:
        found.reason = f"{found.reason}; its DAG {pipeline.dag_id} is paused"
    return found


def _freshness(pipeline: config.Pipeline, state: PipelineState | None, now: datetime) -> Freshness:
    if state is None:
        return Freshness(pipeline.name, NEVER, "", "-", f"its DAG {pipeline.dag_id} has not run (paused?)")
    watermark = state.watermark or ""
    age_s = (now - parse_iso(watermark)).total_seconds() if watermark else None
    age = span(now - parse_iso(watermark)) if watermark else "-"
    failure = ""
    if state.failure_at and (not state.advanced_at or state.failure_at > state.advanced_at):
        # a failure reported after the watermark last moved (one reported late, for a range a
        # later window has covered since, does not count)
        failure = f"{state.failure_reason} ({state.failure_job} failed at {state.failure_at})"
    if state.phase in (SnapshotPhase.PENDING, SnapshotPhase.RUNNING):
        progress = f"initial snapshot: {state.snapshot_chunks} chunks, {state.snapshot_rows} rows committed"
        return Freshness(
            pipeline.name, FAILING if failure else LOADING, watermark, age, f"{progress}; {failure}" if failure else progress
        )
    if failure:
        return Freshness(pipeline.name, FAILING, watermark, age, _with_transactions(failure, state))
    if age_s is not None and age_s > stale_after(pipeline):
        why = (
            f"windows stop before {state.held_by}, whose rows may commit with older cursor values"
            if state.held_by
            else f"no window committed for {age} (paused DAG, scheduler or pool {pipeline.pool} down?)"
        )
        return Freshness(
            pipeline.name, STALE, watermark, age, _with_transactions(f"stale since {watermark}: {why}", state, held=False)
        )
    return Freshness(pipeline.name, FRESH, watermark, age, _with_transactions("", state))


def _with_transactions(reason: str, state: PipelineState, held: bool = True) -> str:
    """``reason`` and what open source transactions do to the pipeline (read.max_open_transaction)."""
    notes = [reason] if reason else []
    if held and state.held_by:
        notes.append(f"windows stop before {state.held_by}")
    if state.unwaited:
        notes.append(
            f"not waited for (open longer than read.max_open_transaction; rows they commit with older "
            f"cursor values are found by reconciliation): {state.unwaited}"
        )
    return "; ".join(notes)
