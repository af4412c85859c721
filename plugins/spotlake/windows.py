"""Extraction windows: which rows a run reads.

A run is labelled by its data interval [start, end) (its job key is
``<pipeline>#<start label>``), but what it reads is driven by committed state: rows
whose cursor lies in ``[min(start, watermark) - lookback, end)``, where the watermark is
the end of the last window up to which every window of the pipeline is committed
(:mod:`spark_jobs.common.lake_state`). So after a pause, a scheduler outage or a failed window,
the next run covers the gap; the lookback catches rows committed late with an older
cursor value; rows read twice fold into one by primary key (newest cursor wins).

The range is fixed the first time a window is planned and stored in the registry, so a
retry, a clear or a backfill of the window reads the same range again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from spark_jobs.common.contract import window_label


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    lookback: timedelta

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} is not before its end {self.end}")

    @property
    def label(self) -> str:
        """The window's label, e.g. ``20261127T140000Z``."""
        return window_label(self.start)

    def read_from(self, watermark: datetime | None) -> datetime:
        """Where the run reads from: the earlier of its start and the committed watermark,
        less the lookback (so nothing between the watermark and this window is skipped)."""
        base = self.start if watermark is None else min(self.start, watermark)
        return base - self.lookback


def utc(moment: datetime) -> datetime:
    """``moment`` as a plain ``datetime`` in UTC. Airflow hands out pendulum ``DateTime`` objects,
    and pendulum drops a stdlib ``tzinfo`` in arithmetic (``DateTime(..., tzinfo=timezone.utc) -
    timedelta(...)`` is naive), so window bounds are converted before any arithmetic."""
    m = moment.astimezone(UTC)
    return datetime(m.year, m.month, m.day, m.hour, m.minute, m.second, m.microsecond, tzinfo=UTC)


def latest_complete(schedule: str, now: datetime) -> tuple[datetime, datetime]:
    """The last whole schedule interval that ended at or before ``now``."""
    now = now.astimezone(UTC)
    if now.second == 0 and now.microsecond == 0 and croniter.match(schedule, now):
        end = now
    else:
        end = croniter(schedule, now).get_prev(datetime)
    start = croniter(schedule, end).get_prev(datetime)
    return start.astimezone(UTC), end.astimezone(UTC)


def window_for_run(
    schedule: str,
    lookback: timedelta,
    interval_start: datetime | None,
    interval_end: datetime | None,
    now: datetime,
) -> Window:
    """The window a run owns: its data interval, or for a run without one (triggered
    by hand with no logical date, or with an empty interval) the latest complete window."""
    if interval_start is not None and interval_end is not None and interval_start < interval_end:
        return Window(utc(interval_start), utc(interval_end), lookback)
    start, end = latest_complete(schedule, now)
    return Window(utc(start), utc(end), lookback)


def job_key(pipeline: str, window: Window) -> str:
    return f"{pipeline}#{window.label}"
