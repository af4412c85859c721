"""What a committed window did, in figures: the one source of them.

The extraction task's end line and its lake table's Asset event carry these figures, read from
the registry's window record (:class:`~spark_jobs.common.lake_state.WindowRecord`, written by the
Spark job with its commit) and the pipeline's state (its watermark). The status command and the
operations page show the same rows written and watermark from the pipeline state's ``recent``,
which the same commit writes (:meth:`~spark_jobs.common.lake_state.LakeState.release`), so all
three agree without reading every window's record.

- ``rows_read``: MySQL's count of the range when the read began; ``rows_written``: the rows
  committed (on a busy table the two differ by the rows that changed in between);
- ``current_snapshot_id`` / ``changes_snapshot_id``: the Iceberg snapshots the window committed
  to the current-state and the changes table (None when it had nothing to write: a window that
  read no rows commits nothing to Iceberg, only the watermark moves);
- ``watermark``: the pipeline's committed watermark as the state has it now;
- ``timings``: seconds per phase of the job, summed over its chunks, in the order the job runs
  them (:data:`PHASES`).
"""

from __future__ import annotations

from typing import Any

from spark_jobs.common.lake_state import PipelineState, WindowRecord

# The job's phases in the order it runs them (spark_jobs/extraction/run.py); a phase it adds
# later is listed after them.
PHASES = ("secret_s", "catalog_s", "validate_s", "read_s", "lock_s", "schema_s", "changes_s", "current_s", "record_s")


def ordered_timings(timings: dict[str, float]) -> dict[str, float]:
    """``timings`` in the job's order of phases, unknown phases last (by name)."""
    known = [name for name in PHASES if name in timings]
    return {name: float(timings[name]) for name in [*known, *sorted(set(timings) - set(known))]}


def window_figures(record: WindowRecord, state: PipelineState | None) -> dict[str, Any]:
    """The figures of a window from its record and the pipeline's state (JSON values only)."""
    return {
        "window": record.window,
        "start": record.start,
        "end": record.end,
        "read_from": record.read_from,
        "read_until": record.read_until,
        "chunks": record.chunks,
        "rows_read": record.rows_read,
        "rows_written": record.rows_written,
        "current_snapshot_id": record.current_snapshot,
        "changes_snapshot_id": record.changes_snapshot,
        "current_rows": record.current_rows,
        "watermark": state.watermark if state is not None else None,
        "committed_at": record.committed_at,
        "timings": ordered_timings(record.timings),
    }


def timings_text(timings: dict[str, float]) -> str:
    """``read 1.20 s, lock 0.01 s, changes 0.50 s, ...`` (the phases in the job's order), or ``none``."""
    return ", ".join(f"{name.removesuffix('_s')} {seconds:.2f} s" for name, seconds in ordered_timings(timings).items()) or "none"
