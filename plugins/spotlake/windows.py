"""Extraction windows.

A run owns the half-open window [start, end) of its data interval and reads rows
whose cursor lies in [start - lookback, end): the lookback catches rows committed
late with an older cursor value; rows read twice are de-duplicated by primary
key downstream (newest cursor wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    lookback: timedelta
    full_history: bool = False

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} is not before its end {self.end}")

    @property
    def read_from(self) -> datetime:
        """Rows with a cursor from here on are read; all history for an initial load."""
        return EPOCH if self.full_history else self.start - self.lookback

    def as_initial_load(self) -> Window:
        return Window(self.start, self.end, self.lookback, full_history=True)

    @property
    def label(self) -> str:
        """The window's partition label, e.g. ``20261127T140000Z``."""
        return self.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    def to_job(self) -> dict[str, str]:
        return {
            "start": self.start.astimezone(UTC).isoformat(),
            "end": self.end.astimezone(UTC).isoformat(),
            "read_from": self.read_from.astimezone(UTC).isoformat(),
        }


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
        return Window(interval_start.astimezone(UTC), interval_end.astimezone(UTC), lookback)
    start, end = latest_complete(schedule, now)
    return Window(start, end, lookback)


def job_key(pipeline: str, window: Window) -> str:
    return f"{pipeline}#{window.label}"
