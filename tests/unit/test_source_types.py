"""How source columns are read, where a window's bounds fall on a DATETIME cursor's wall clock,
how far open transactions let a window read, and how an integer key is split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from spark_jobs.common.errors import ExtractionError
from spark_jobs.extraction.mysql_source import (
    OpenTransaction,
    SourceTable,
    TimeLine,
    check_table,
    key_predicates,
    parse_zone,
    read_limit,
)
from spark_jobs.extraction.source_types import SourceColumn, column_read, select_list
from tests.support.job_documents import job_with


@pytest.mark.parametrize(
    ("column", "select", "lake"),
    [
        (SourceColumn("id", "bigint", column_type="bigint(20) unsigned"), "`id`", "decimal(20,0)"),
        (SourceColumn("n", "bigint", column_type="bigint(20)"), "`n`", "long"),
        (SourceColumn("flag", "bit", column_type="bit(1)", precision=1), "`flag`", "boolean"),
        (SourceColumn("bits", "bit", column_type="bit(10)", precision=10), "CAST(`bits` AS SIGNED)", "long"),
        (SourceColumn("b64", "bit", column_type="bit(64)", precision=64), "CAST(`b64` AS UNSIGNED)", "decimal(20,0)"),
        (SourceColumn("d38", "decimal", column_type="decimal(38,10)", precision=38, scale=10), "`d38`", "decimal"),
        (SourceColumn("d65", "decimal", column_type="decimal(65,30)", precision=65, scale=30), "CAST(`d65` AS CHAR)", "string"),
        (
            SourceColumn("t", "time", column_type="time(6)"),
            "CAST(TIMESTAMPDIFF(MICROSECOND, TIME '00:00:00', `t`) AS SIGNED)",
            "long",
        ),
        (SourceColumn("at", "datetime"), "DATE_FORMAT(`at`, '%Y-%m-%d %H:%i:%s.%f')", "timestamp"),
        (SourceColumn("day", "date"), "DATE_FORMAT(`day`, '%Y-%m-%d')", "date"),
        (SourceColumn("y", "year"), "`y`", "int"),
        (SourceColumn("g", "point"), "ST_AsText(`g`)", "string"),
        (SourceColumn("j", "json"), "`j`", "string"),
        (SourceColumn("v", "vector"), "CAST(`v` AS CHAR)", "string"),
    ],
)
def test_every_type_has_a_read_and_a_lake_type(column: SourceColumn, select: str, lake: str) -> None:
    read = column_read(column)
    assert (read.select, read.lake_type) == (select, lake)


def test_select_list_keeps_each_columns_name() -> None:
    columns = [SourceColumn("select", "int"), SourceColumn("a`b", "datetime")]
    assert select_list(columns) == "`select`, DATE_FORMAT(`a``b`, '%Y-%m-%d %H:%i:%s.%f') AS `a``b`"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_timestamp_cursor_bounds_are_utc_whatever_the_zone() -> None:
    line = TimeLine("timestamp", "-05:00", timezone(timedelta(hours=-5)))
    assert line.cursor_bounds(utc("2026-03-08T06:55:00"), utc("2026-03-08T07:00:00")) == (
        "2026-03-08 06:55:00.000000",
        "2026-03-08 07:00:00.000000",
    )


def test_datetime_cursor_bounds_are_the_sources_wall_clock() -> None:
    line = TimeLine("datetime", "+05:30", parse_zone("+05:30"))
    assert line.cursor_bounds(utc("2026-11-27T14:00:00"), utc("2026-11-27T14:05:00")) == (
        "2026-11-27 19:30:00.000000",
        "2026-11-27 19:35:00.000000",
    )


def test_datetime_cursor_bounds_cover_both_sides_of_a_daylight_saving_change() -> None:
    line = TimeLine("datetime", "America/New_York", ZoneInfo("America/New_York"))
    # Autumn: 01:00-02:00 happens twice (EDT, then EST). A window across the change reads the
    # whole repeated hour; a window inside the second 01:xx reads it again.
    low, high = utc("2026-11-01T05:58:00"), utc("2026-11-01T06:03:00")  # 01:58 EDT .. 01:03 EST
    assert line.cursor_bounds(low, high) == ("2026-11-01 00:58:00.000000", "2026-11-01 02:03:00.000000")
    assert line.cursor_bounds(utc("2026-11-01T06:30:00"), utc("2026-11-01T06:35:00")) == (
        "2026-11-01 01:30:00.000000",
        "2026-11-01 01:35:00.000000",
    )
    # Spring: 02:00-03:00 never happens; the window's bounds skip it.
    assert line.cursor_bounds(utc("2026-03-08T06:58:00"), utc("2026-03-08T07:03:00")) == (
        "2026-03-08 01:58:00.000000",
        "2026-03-08 03:03:00.000000",
    )


def test_every_instant_of_a_window_falls_inside_its_wall_clock_bounds() -> None:
    line = TimeLine("datetime", "Europe/Berlin", ZoneInfo("Europe/Berlin"))
    start = utc("2026-10-24T22:00:00")
    for step in range(0, 48 * 12):
        low = start + timedelta(minutes=5 * step)
        high = low + timedelta(minutes=5)
        lower, upper = line.cursor_bounds(low, high)
        for second in range(0, 300, 7):
            wall = line.wall(low + timedelta(seconds=second)).strftime("%Y-%m-%d %H:%M:%S.%f")
            assert lower <= wall < upper


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("+05:30", timedelta(hours=5, minutes=30)),
        ("-05:00", timedelta(hours=-5)),
        ("UTC", timedelta(0)),
    ],
)
def test_zones_as_mysql_writes_them(name: str, offset: timedelta) -> None:
    zone = parse_zone(name)
    assert zone is not None and zone.utcoffset(None) == offset


def test_abbreviations_are_not_zones() -> None:
    # "EST"/"CET" as @@system_time_zone say nothing of daylight saving; the job asks for read.time_zone.
    assert parse_zone("CET") is None and parse_zone("EST") is None and parse_zone("Nowhere/Land") is None


def test_a_date_cursor_is_refused_with_the_fix() -> None:
    table = SourceTable(columns=("id", "day"), types={"id": "int", "day": "date"}, index_leaders=frozenset({"id", "day"}))
    with pytest.raises(ExtractionError, match="cursor column 'day' is DATE.*DATETIME or TIMESTAMP"):
        check_table(job_with(primary_key=["id"], cursor="day", soft_delete=None), table)


def trx(age_s: float, started: str) -> OpenTransaction:
    return OpenTransaction("17", "42", utc(started), age_s, "UPDATE t SET x = 1")


def test_the_oldest_open_transaction_holds_windows_back_until_it_is_too_old() -> None:
    assert read_limit([], 2, 1800).until is None
    limit = read_limit([trx(600, "2026-11-27T14:00:00"), trx(30, "2026-11-27T14:09:30")], 2, 1800)
    assert limit.until == utc("2026-11-27T13:59:58") and limit.holding is not None and limit.ignored == ()
    limit = read_limit([trx(3600, "2026-11-27T13:10:00"), trx(30, "2026-11-27T14:09:30")], 2, 1800)
    assert limit.until == utc("2026-11-27T14:09:28")
    assert [t.age_s for t in limit.ignored] == [3600]
    assert "transaction 17 (connection 42) open since 2026-11-27T13:10:00+00:00" in limit.ignored[0].describe()


def test_integer_keys_split_into_open_ended_ranges_even_above_two_to_the_63() -> None:
    assert key_predicates("id", 1, 100, 2) == ["`id` < 51", "`id` >= 51"]
    top = 2**64 - 1
    parts = key_predicates("id", 2**63, top, 3)
    assert parts[0] == f"`id` < {2**63 + (top - 2**63 + 1) // 3}" and parts[-1].startswith("`id` >= ")
    assert key_predicates("id", 5, 5, 1) == ["1 = 1"]


def test_read_options_of_the_job_document() -> None:
    job = job_with(read={"time_zone": "America/New_York", "wait_for_open_transactions": False, "max_open_transaction_s": 60})
    assert (job.read.time_zone, job.read.wait_for_open_transactions, job.read.max_open_transaction_s) == (
        "America/New_York",
        False,
        60,
    )
    with pytest.raises(ExtractionError, match="read.time_zone"):
        job_with(read={"time_zone": "x'; DROP"})
    with pytest.raises(ExtractionError, match="read.wait_for_open_transactions"):
        job_with(read={"wait_for_open_transactions": "yes"})
