"""How fresh each pipeline's lake tables are: its committed watermark, and why it is behind.

The watermark is the end of the last window up to which every window is committed
(:mod:`spark_jobs.common.lake_state`), so a window that failed, a DAG that is paused or a
scheduler that is down all show as a watermark that stops moving: the table is stale
since then, whatever later windows did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from spark_jobs.common.lake_state import LakeState, LakeStateError, PipelineState, SnapshotPhase, load_state, parse_iso
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


# What the status command and the operations page show of a pipeline state (spotlake.freshness):
# the rest (the lock, the snapshot's resume key) is the Spark job's business.
SHOWN_FIELDS = (
    "pipeline",
    "snapshot",
    "watermark",
    "snapshot_chunks",
    "snapshot_rows",
    "failure_job",
    "failure_at",
    "failure_reason",
    "advanced_at",
    "held_by",
    "unwaited",
    "reconciled_at",
    "reconcile_result",
    "recent",
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
    dag_id: str = ""


def stale_after(pipeline: config.Pipeline) -> float:
    """Seconds after which a watermark is stale: the pipeline's ``stale_after``, by default two
    schedule intervals (one run late)."""
    if pipeline.stale_after is not None:
        return pipeline.stale_after.total_seconds()
    return 2 * pipeline.interval.total_seconds()


def freshness(pipeline: config.Pipeline, state: PipelineState | None, now: datetime, paused: bool | None = None) -> Freshness:
    found = _freshness(pipeline, state, now)
    if state is not None and state.reconciled_at:
        found.reconciled = f"{span(now - parse_iso(state.reconciled_at))} ago: {state.reconcile_result or ''}"
    if state is not None and state.watermark:
        found.age_s = round((now - parse_iso(state.watermark)).total_seconds(), 1)
    found.stale_after_s = stale_after(pipeline)
    found.stale = found.status in (STALE, FAILING)
    found.paused = paused
    found.dag_id = pipeline.dag_id
    if paused:
        note = f"its DAG {pipeline.dag_id} is paused" + ("" if found.stale else ": the tables go stale unless it is unpaused")
        found.reason = "; ".join(x for x in (note, found.reason) if x)
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


def read_states(store: LakeState, pipelines: list[str], history: bool = False) -> dict[str, PipelineState]:
    """The state of each of ``pipelines`` that has one, in batches of 100 (what the status command
    and the operations page read: one request per hundred pipelines, not one each), with only the
    attributes they show; the day's ``history`` only if asked for (the charts)."""
    found: dict[str, PipelineState] = {}
    names = list(dict.fromkeys(pipelines))
    wanted = [*SHOWN_FIELDS, "history"] if history else list(SHOWN_FIELDS)
    projection = {
        "ProjectionExpression": ", ".join(f"#a{i}" for i in range(len(wanted))),
        "ExpressionAttributeNames": {f"#a{i}": name for i, name in enumerate(wanted)},
    }
    for start in range(0, len(names), 100):
        request: dict[str, Any] = {
            store.table: {
                "Keys": [store.state_key(n) for n in names[start : start + 100]],
                "ConsistentRead": True,
                **projection,
            }
        }
        for _ in range(20):
            page = store.client.batch_get_item(RequestItems=request)
            for item in page.get("Responses", {}).get(store.table, []):
                state = load_state(item)
                found[state.pipeline] = state
            request = page.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05)
        else:
            raise LakeStateError(f"DynamoDB left keys of {store.table} unprocessed 20 times; retry later")
    return found
