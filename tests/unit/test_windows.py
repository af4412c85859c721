from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest

from spotlake.windows import Window, job_key, latest_complete, window_for_run

T = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def test_run_owns_its_data_interval_and_reads_back_one_lookback() -> None:
    w = window_for_run("*/5 * * * *", timedelta(minutes=5), T, T + timedelta(minutes=5), T + timedelta(hours=1))
    assert (w.start, w.end, w.read_from(T)) == (T, T + timedelta(minutes=5), T - timedelta(minutes=5))
    assert w.label == "20261127T140000Z"
    assert job_key("orders", w) == "orders#20261127T140000Z"


def test_a_run_after_a_gap_reads_from_the_committed_watermark() -> None:
    w = Window(T, T + timedelta(minutes=5), timedelta(minutes=5))
    paused_since = T - timedelta(minutes=15)  # three intervals never ran, or failed
    assert w.read_from(paused_since) == paused_since - timedelta(minutes=5)
    # A window before the watermark (a backfill, a clear) reads its own interval again.
    assert w.read_from(T + timedelta(hours=1)) == T - timedelta(minutes=5)


@pytest.mark.parametrize("interval", [(None, None), (T, T)])
def test_manual_run_without_interval_takes_latest_complete_window(interval: tuple) -> None:
    now = T + timedelta(minutes=7, seconds=3)
    w = window_for_run("*/5 * * * *", timedelta(0), *interval, now)
    assert (w.start, w.end) == (T, T + timedelta(minutes=5))


def test_latest_complete_on_a_boundary_is_the_interval_ending_there() -> None:
    assert latest_complete("* * * * *", T) == (T - timedelta(minutes=1), T)


def test_window_rejects_naive_or_empty_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), datetime(2026, 1, 2), timedelta(0))
    with pytest.raises(ValueError, match="not before"):
        Window(T, T, timedelta(0))


def test_bounds_from_airflow_stay_time_zone_aware_through_the_arithmetic() -> None:
    """Airflow's data intervals are pendulum DateTimes, which lose a stdlib tzinfo when a
    timedelta is subtracted; the window's bounds are plain UTC datetimes."""
    start = pendulum.datetime(2026, 12, 5, 7, 45, tz="UTC")
    w = window_for_run("*/5 * * * *", timedelta(minutes=5), start, start.add(minutes=5), T)
    read_from = w.read_from(datetime(2026, 12, 5, 7, 46, tzinfo=UTC))
    assert read_from == datetime(2026, 12, 5, 7, 40, tzinfo=UTC) and read_from.tzinfo is not None
    assert type(w.start) is datetime and type(read_from) is datetime
