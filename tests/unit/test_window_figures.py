"""A committed window's figures, as its task's end line, its Asset event and the status report them."""

from __future__ import annotations

import json

from spark_jobs.common.lake_state import PipelineState, WindowRecord
from spotlake.window_figures import timings_text, window_figures

RECORD = WindowRecord(
    pipeline="orders",
    window="20261205T140000Z",
    job_key="orders#20261205T140000Z",
    start="2026-12-05T14:00:00.000000+00:00",
    end="2026-12-05T14:05:00.000000+00:00",
    read_from="2026-12-05T13:55:00.000000+00:00",
    planned_at="2026-12-05T14:05:01.000000+00:00",
    state="COMMITTED",
    chunks=1,
    rows_read=12,
    rows_written=11,
    run_id="r1",
    attempt=1,
    changes_snapshot=42,
    current_snapshot=41,
    current_rows=3000,
    committed_at="2026-12-05T14:05:09.000000+00:00",
    # as DynamoDB may hand a map back: in any order
    timings={"record_s": 0.05, "read_s": 1.2, "later_s": 0.3, "secret_s": 0.1, "current_s": 0.4, "changes_s": 0.5},
)


def test_a_windows_figures_are_its_records_and_the_pipelines_watermark() -> None:
    figures = window_figures(RECORD, PipelineState(pipeline="orders", watermark="2026-12-05T14:05:00.000000+00:00"))
    assert figures == {
        "window": "20261205T140000Z",
        "start": "2026-12-05T14:00:00.000000+00:00",
        "end": "2026-12-05T14:05:00.000000+00:00",
        "read_from": "2026-12-05T13:55:00.000000+00:00",
        "read_until": None,
        "chunks": 1,
        "rows_read": 12,
        "rows_written": 11,
        "current_snapshot_id": 41,
        "changes_snapshot_id": 42,
        "current_rows": 3000,
        "watermark": "2026-12-05T14:05:00.000000+00:00",
        "committed_at": "2026-12-05T14:05:09.000000+00:00",
        "timings": {"secret_s": 0.1, "read_s": 1.2, "changes_s": 0.5, "current_s": 0.4, "record_s": 0.05, "later_s": 0.3},
    }
    assert list(figures["timings"]) == ["secret_s", "read_s", "changes_s", "current_s", "record_s", "later_s"]
    assert json.loads(json.dumps(figures)) == figures  # an Asset event's extra holds JSON values only
    assert window_figures(RECORD, None)["watermark"] is None


def test_timings_read_in_the_jobs_order_of_phases() -> None:
    assert timings_text(RECORD.timings) == (
        "secret 0.10 s, read 1.20 s, changes 0.50 s, current 0.40 s, record 0.05 s, later 0.30 s"
    )
    assert timings_text({}) == "none"
