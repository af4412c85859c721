"""Freshness from the committed watermark: fresh, stale, failing, loading, never run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from spark_jobs.common.lake_state import PipelineState
from spotlake import config
from spotlake.freshness import FAILING, FRESH, LOADING, NEVER, STALE, freshness

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PIPELINE = config.parse(
    {
        "sources": {"shop": {"secret_id": "s"}},
        "pipelines": [
            {
                "name": "orders",
                "source": "shop",
                "database": "shop",
                "table": "orders",
                "primary_key": "id",
                "cursor": "updated_at",
            }
        ],
    },
    Path("config/pipelines.yaml"),
).get("orders")


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="microseconds")


def state(**fields: object) -> PipelineState:
    return PipelineState(pipeline="orders", **{"snapshot": "DONE", **fields})


def test_a_watermark_within_two_intervals_is_fresh_and_older_is_stale_since_it() -> None:
    assert freshness(PIPELINE, state(watermark=at(7), advanced_at=at(6)), NOW).status == FRESH
    stale = freshness(PIPELINE, state(watermark=at(11), advanced_at=at(10)), NOW)
    assert stale.status == STALE and stale.reason.startswith(f"stale since {at(11)}: no window committed for 11m")


def test_a_failure_after_the_watermark_last_moved_makes_the_table_failing_since_it() -> None:
    failing = freshness(
        PIPELINE,
        state(watermark=at(3), advanced_at=at(2), failure_job="orders#w", failure_at=at(1), failure_reason="secret gone"),
        NOW,
    )
    assert failing.status == FAILING and failing.reason == f"secret gone (orders#w failed at {at(1)})"
    assert failing.watermark == at(3)  # stale since then
    # reported late, for a range a later commit has covered since: not a failure any more
    late = freshness(
        PIPELINE,
        state(watermark=at(3), advanced_at=at(1), failure_job="orders#w", failure_at=at(2), failure_reason="secret gone"),
        NOW,
    )
    assert late.status == FRESH


def test_an_initial_snapshot_in_progress_and_a_pipeline_never_run() -> None:
    loading = freshness(PIPELINE, state(snapshot="RUNNING", snapshot_chunks=3, snapshot_rows=1500), NOW)
    assert (loading.status, loading.reason) == (LOADING, "initial snapshot: 3 chunks, 1500 rows committed")
    never = freshness(PIPELINE, None, NOW)
    assert never.status == NEVER and "extract_orders has not run" in never.reason


def test_an_open_transaction_that_holds_windows_back_is_named() -> None:
    trx = "transaction 17 (connection 42) open since 2026-12-05T11:40:00+00:00 (1200 s)"
    held = freshness(PIPELINE, state(watermark=at(20), advanced_at=at(1), held_by=trx), NOW)
    assert (
        held.status == STALE
        and held.reason == f"stale since {at(20)}: windows stop before {trx}, whose rows may commit with older cursor values"
    )
    assert freshness(PIPELINE, state(watermark=at(3), advanced_at=at(1), held_by=trx), NOW).reason == (
        f"windows stop before {trx}"
    )
    ignored = freshness(PIPELINE, state(watermark=at(3), advanced_at=at(1), unwaited=trx), NOW)
    assert ignored.status == FRESH and "not waited for" in ignored.reason and trx in ignored.reason


def test_the_last_reconciliation_is_shown_with_what_it_found() -> None:
    found = freshness(
        PIPELINE,
        state(
            watermark=at(3),
            advanced_at=at(3),
            reconciled_at=at(12),
            reconcile_result="2000 rows checked, 3 of 40 chunks repaired",
        ),
        NOW,
    )
    assert found.reconciled == "12m ago: 2000 rows checked, 3 of 40 chunks repaired"
    assert freshness(PIPELINE, state(watermark=at(3), advanced_at=at(3)), NOW).reconciled == ""
