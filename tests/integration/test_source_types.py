"""Every column type at its extremes, time zones and daylight saving, and transactions that commit
late: the job in-process against the real MariaDB, the lake read back with pyiceberg and compared
with pymysql's own reading of the source (see tests/integration/job_harness.py)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pyspark.sql import SparkSession

from spark_jobs.common.errors import DataError, ExtractionError
from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.common.lake_state import WindowRecord, iso, snapshot_job_key
from spark_jobs.extraction import main as extraction_main
from spark_jobs.extraction.run import run_extraction
from spotlake.stack import StackLayout
from tests.support.job_harness import FIVE, Lake, next_window, orders_pipeline, seed

pytestmark = pytest.mark.integration


def root(layout: StackLayout) -> pymysql.Connection:
    return pymysql.connect(unix_socket=str(layout.run_dir / "mariadb.sock"), user="root", autocommit=True)


def job_doc(env: Lake, job_key: str, **changes: Any) -> ExtractJob:
    run_id, attempt = env.claim(job_key)
    doc = env.document(job_key, run_id, attempt, **{"transforms": [], "soft_delete": None, **changes})
    return ExtractJob.from_dict(doc)


def snapshot(env: Lake, spark: SparkSession, **changes: Any) -> dict[str, Any]:
    env.store.ensure(env.pipeline, True, datetime.now(UTC))
    return run_extraction(spark, job_doc(env, snapshot_job_key(env.pipeline), **changes))


def window(
    env: Lake,
    spark: SparkSession,
    start: datetime,
    read_from: datetime | None = None,
    end: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """The window starting at ``start``, planned as the operator plans it (or with the range given)."""
    if read_from is None:
        record = env.plan(start)
    else:
        label = start.strftime("%Y%m%dT%H%M%SZ")
        record = env.store.plan_window(
            WindowRecord(
                pipeline=env.pipeline,
                window=label,
                job_key=f"{env.pipeline}#{label}",
                start=iso(start),
                end=iso(end or start + FIVE),
                read_from=iso(read_from),
                planned_at=iso(datetime.now(UTC)),
            )
        )
    plan = {"start": record.start, "end": record.end, "read_from": record.read_from}
    return run_extraction(spark, job_doc(env, record.job_key, window=plan, **changes))


# ------------------------------------------------------------------ every type
COLUMNS = """
  id BIGINT UNSIGNED PRIMARY KEY,
  `select` INT, `Mixed Case` VARCHAR(20),
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, b1 BIT(1), b10 BIT(10), b64 BIT(64), bo BOOL,
  d10 DECIMAL(10,2), d38 DECIMAL(38,10), d65 DECIMAL(65,30), f FLOAT, dbl DOUBLE,
  dt DATE, dtm0 DATETIME, dtm6 DATETIME(6), ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  tm TIME, tm6 TIME(6), y YEAR,
  c CHAR(5), vc VARCHAR(50), tx TEXT, bn BINARY(4), vb VARBINARY(10), bl BLOB,
  en ENUM('a','b c'), st SET('x','y','z'), js JSON, g GEOMETRY, p POINT,
  updated_at DATETIME(6) NOT NULL, KEY ix_updated_at (updated_at)
"""
SMALLEST = dict(
    id=1,
    select=-1,
    **{"Mixed Case": "MiXeD"},
    ti=-128,
    tu=0,
    si=-32768,
    su=0,
    mi=-8388608,
    mu=0,
    i=-2147483648,
    iu=0,
    bi=-(2**63),
    b1=b"\x00",
    b10=b"\x00\x00",
    b64=b"\x00" * 8,
    bo=-128,
    d10=Decimal("-99999999.99"),
    d38=Decimal("-9999999999999999999999999999.9999999999"),
    d65=Decimal("-" + "9" * 35 + "." + "9" * 30),
    f=-3.40282e38,
    dbl=-1.7976931348623157e308,
    dt="1000-01-01",
    dtm0="1000-01-01 00:00:00",
    dtm6="1000-01-01 00:00:00.000000",
    ts0="1970-01-01 00:00:01",
    ts6="1970-01-01 00:00:01.000000",
    tm="-838:59:59",
    tm6="-838:59:59.000000",
    y=1901,
    c="",
    vc="",
    tx="",
    bn=b"\x00" * 4,
    vb=b"",
    bl=b"",
    en="a",
    st="",
    js="null",
    g="POLYGON((0 0,1 0,1 1,0 0))",
    p="POINT(-180 -90)",
)
LARGEST = dict(
    id=2**64 - 1,
    select=2**31 - 1,
    **{"Mixed Case": "😀 mixed"},
    ti=127,
    tu=255,
    si=32767,
    su=65535,
    mi=8388607,
    mu=16777215,
    i=2**31 - 1,
    iu=2**32 - 1,
    bi=2**63 - 1,
    b1=b"\x01",
    b10=b"\x03\xff",
    b64=b"\xff" * 8,
    bo=127,
    d10=Decimal("99999999.99"),
    d38=Decimal("9999999999999999999999999999.9999999999"),
    d65=Decimal("9" * 35 + "." + "9" * 30),
    f=3.40282e38,
    dbl=1.7976931348623157e308,
    dt="9999-12-31",
    dtm0="9999-12-31 23:59:59",
    dtm6="9999-12-31 23:59:59.999999",
    ts0="2038-01-19 03:14:07",
    ts6="2038-01-19 03:14:07.999999",
    tm="838:59:59",
    tm6="838:59:59.000000",
    y=2155,
    c="😀😀😀😀😀",
    vc="𝄞 ünïcödé 😀 \\ ' \"",
    tx="😀" * 1000,
    bn=b"\xff" * 4,
    vb=b"\x00\xff" * 5,
    bl=bytes(range(256)) * 40,
    en="b c",
    st="x,y,z",
    js='{"k": ["😀", 1.5, null]}',
    g="MULTIPOINT((1 2),(3 4))",
    p="POINT(180 90)",
)
ZEROS = dict(
    id=2**63,
    dt="0000-00-00",
    dtm0="2024-00-00 00:00:00",
    dtm6="0000-00-00 00:00:00",
    ts0="0000-00-00 00:00:00",
    y=0,
    tm="00:00:00",
    tm6="-00:00:00.000001",
)
SPATIAL = ("g", "p")


def insert_typed(env: Lake, rows: list[dict[str, Any]], at: datetime) -> None:
    with env.connect().cursor() as cur:
        for row in rows:
            names = [*row, "updated_at"]
            values = ["ST_GeomFromText(%s)" if n in SPATIAL else "%s" for n in row] + ["%s"]
            cur.execute(
                f"INSERT INTO {env.table} ({', '.join(f'`{n}`' for n in names)}) VALUES ({', '.join(values)})",
                [*row.values(), at.replace(tzinfo=None)],
            )


def float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def expected_rows(env: Lake) -> dict[int, dict[str, Any]]:
    """The source as pymysql reads it, mapped as docs/types.md says (independently of the job)."""
    conn = env.connect()
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {env.table}")
        rows = cur.fetchall()
        cur.execute(f"SELECT id, ST_AsText(g) AS g, ST_AsText(p) AS p FROM {env.table}")
        wkt = {r["id"]: r for r in cur.fetchall()}
    conn.close()
    out = {}
    for row in rows:
        want = {**row, "g": wkt[row["id"]]["g"], "p": wkt[row["id"]]["p"]}
        for bits in ("b10", "b64"):
            want[bits] = None if row[bits] is None else int.from_bytes(row[bits], "big")
        want["b1"] = None if row["b1"] is None else row["b1"] != b"\x00"
        want["f"] = None if row["f"] is None else float32(row["f"])
        want["d65"] = None if row["d65"] is None else str(row["d65"])
        for name in ("tm", "tm6"):
            want[name] = None if row[name] is None else row[name] // timedelta(microseconds=1)
        for name in ("dt", "dtm0", "dtm6", "ts0", "ts6"):
            if isinstance(row[name], str):  # pymysql hands back zero dates as text
                want[name] = None
        out[int(row["id"])] = want
    return out


def lake_rows(env: Lake) -> dict[int, dict[str, Any]]:
    out = {}
    for row in env.lake():
        got = {k: v for k, v in row.items() if not k.startswith("_")}
        for name, value in got.items():
            if isinstance(value, datetime):
                got[name] = value.astimezone(UTC).replace(tzinfo=None)
        got["f"] = None if got["f"] is None else float32(got["f"])
        out[int(got["id"])] = got
    return out


def test_every_type_at_its_extremes_lands_exactly(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    env.sql(f"CREATE TABLE {env.table} ({COLUMNS}) DEFAULT CHARSET=utf8mb4")
    at = datetime.now(UTC) - timedelta(days=1)
    insert_typed(env, [SMALLEST, LARGEST], at)
    # Split reads (partition_rows 1) on the BIGINT UNSIGNED key, across 2^63.
    read = {"chunk_rows": 100, "partition_rows": 1, "max_partitions": 3}
    result = snapshot(env, spark, read=read)
    assert result["rows"] == 2
    insert_typed(env, [ZEROS], datetime.now(UTC))
    start = next_window(env)
    done = window(env, spark, start, read=read)
    assert done["rows_written"] == 1 and done["null_dates"] == 4
    record = env.store.window(env.pipeline, start.strftime("%Y%m%dT%H%M%SZ"))
    assert record is not None and (record.null_dates, record.null_date_columns) == (4, ["dt", "dtm0", "dtm6", "ts0"])

    expected, got = expected_rows(env), lake_rows(env)
    assert set(got) == set(expected) == {1, 2**63, 2**64 - 1}
    for key, want in expected.items():
        for column, value in want.items():
            assert got[key][column] == value, f"row {key} column {column}: lake {got[key][column]!r} != {value!r}"
    types = {f.name: str(f.field_type) for f in env.iceberg().schema().fields}
    assert (types["id"], types["d65"], types["tm"], types["b1"], types["dt"], types["Mixed Case"]) == (
        "decimal(20, 0)",
        "string",
        "long",
        "boolean",
        "date",
        "string",
    )
    env.sql(f"DROP TABLE {env.table}")


# ------------------------------------------------------------------ time zones
TZ_TABLE = "(id INT PRIMARY KEY, at {kind}(6) NOT NULL, truth_us BIGINT NOT NULL, KEY ix_at (at)) DEFAULT CHARSET=utf8mb4"


@pytest.fixture
def server_zone(layout: StackLayout) -> Iterator[Any]:
    """Set the server's time zone for the test (new sessions take it); UTC again afterwards."""
    conn = root(layout)

    def set_zone(zone: str) -> None:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL time_zone = %s", (zone,))

    yield set_zone
    set_zone("+00:00")
    conn.close()


@pytest.mark.parametrize("zone", ["-05:00", "+05:30"])
@pytest.mark.parametrize("kind", ["TIMESTAMP", "DATETIME"])
def test_cursors_under_any_server_time_zone_lose_and_shift_nothing(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path, server_zone: Any, kind: str, zone: str
) -> None:
    server_zone(zone)
    env = Lake(mysql, catalog_secret, tmp_path)
    env.sql(f"CREATE TABLE {env.table} " + TZ_TABLE.format(kind=kind))
    insert = (
        f"INSERT INTO {env.table} VALUES (%s, NOW(6) - INTERVAL %s MINUTE, "
        "CAST(UNIX_TIMESTAMP(NOW(6) - INTERVAL %s MINUTE) * 1000000 AS SIGNED))"
    )
    with env.connect().cursor() as cur:  # an application session in the server's zone
        for i, minutes in enumerate((600, 30, 1), start=1):
            cur.execute(insert, (i, minutes, minutes))
    snapshot(env, spark, cursor="at", primary_key=["id"])
    with env.connect().cursor() as cur:
        for i in (4, 5):
            cur.execute(insert, (i, 0, 0))
    done = window(env, spark, next_window(env), cursor="at", primary_key=["id"])
    assert done["rows_written"] == 3  # rows 4 and 5, and row 3 again (inside the window's lookback)
    with env.connect().cursor() as cur:
        cur.execute(f"SELECT id, truth_us FROM {env.table}")
        truth = {i: datetime(1970, 1, 1) + timedelta(microseconds=us) for i, us in cur.fetchall()}
    got = {r["id"]: r["at"].astimezone(UTC).replace(tzinfo=None) for r in env.lake()}
    assert got == truth
    env.sql(f"DROP TABLE {env.table}")


def test_a_datetime_cursor_across_a_daylight_saving_change_loses_nothing(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    env.sql(f"CREATE TABLE {env.table} " + TZ_TABLE.format(kind="DATETIME"))
    # New York, 2026-11-01: 01:00-02:00 happens twice (EDT -4, then EST -5).
    walls = {
        1: ("00:50", "04:50"),
        2: ("01:10", "05:10"),
        3: ("01:50", "05:50"),
        4: ("01:20", "06:20"),
        5: ("01:55", "06:55"),
        6: ("02:10", "07:10"),
    }
    read = {"time_zone": "America/New_York", "window_chunk_s": 1800}
    snapshot(env, spark, cursor="at", read=read)  # an empty table: the window reads every row
    with env.connect().cursor() as cur:
        for i, (wall, _) in walls.items():
            cur.execute(f"INSERT INTO {env.table} VALUES (%s, %s, 0)", (i, f"2026-11-01 {wall}:00"))
    snapshot_start = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    # Windows of the UTC time line read in 30-minute chunks, one across the change (05:45Z-06:15Z).
    result = window(
        env,
        spark,
        datetime(2026, 11, 1, 7, 10, tzinfo=UTC),
        read_from=snapshot_start + timedelta(minutes=45),
        end=datetime(2026, 11, 1, 7, 15, tzinfo=UTC),
        cursor="at",
        read=read,
    )
    assert result["chunks"] == 5
    got = {r["id"]: r["at"].astimezone(UTC).strftime("%H:%M") for r in env.lake()}
    assert set(got) == set(walls)
    for i, (wall, utc_at) in walls.items():
        # A repeated wall time (01:xx) cannot say which of its two instants it was: it is stored as
        # the earlier one (EDT, -4), as docs/types.md says; the others are exact.
        expected = f"{int(wall[:2]) + 4:02d}:{wall[3:]}" if wall.startswith("01:") else utc_at
        assert got[i] == expected, (i, wall, got[i])
    env.sql(f"DROP TABLE {env.table}")


# ------------------------------------------------------------------ late commits
def late_table(env: Lake) -> None:
    env.sql(
        f"CREATE TABLE {env.table} (id INT PRIMARY KEY, v VARCHAR(20), "
        "updated_at DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6), KEY ix_u (updated_at))"
    )


def test_a_transaction_that_commits_intervals_later_reaches_the_lake_after_the_next_window(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    late_table(env)
    env.sql(
        f"INSERT INTO {env.table} (id, v, updated_at) VALUES (1, 'old', NOW(6) - INTERVAL 1 HOUR), "
        "(2, 'old', NOW(6) - INTERVAL 1 HOUR)"
    )
    snapshot(env, spark)
    holder = env.connect()
    holder.autocommit(False)
    with holder.cursor() as cur:  # a transaction that writes now and commits three windows later
        cur.execute(f"UPDATE {env.table} SET v = 'late' WHERE id = 1")
    try:
        env.sql(f"INSERT INTO {env.table} (id, v) VALUES (3, 'after')")
        start = next_window(env)
        for n in range(3):
            done = window(env, spark, start + n * FIVE)
            assert done["held_by"] and "transaction" in done["held_by"]
            state = env.store.get(env.pipeline)
            assert state is not None and state.held_by == done["held_by"]
        assert {r["id"]: r["v"] for r in env.lake()} == {1: "old", 2: "old"}
        holder.commit()
    finally:
        holder.close()
    done = window(env, spark, start + 3 * FIVE)
    assert done["held_by"] is None
    assert {r["id"]: r["v"] for r in env.lake()} == {1: "late", 2: "old", 3: "after"}
    state = env.store.get(env.pipeline)
    assert state is not None and state.held_by is None
    env.sql(f"DROP TABLE {env.table}")


def test_a_transaction_open_past_the_limit_is_named_and_not_waited_for(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    late_table(env)
    snapshot(env, spark)
    holder = env.connect()
    holder.autocommit(False)
    try:
        with holder.cursor() as cur:
            cur.execute(f"INSERT INTO {env.table} (id, v) VALUES (1, 'open')")
        env.sql(f"INSERT INTO {env.table} (id, v) VALUES (2, 'committed')")
        done = window(env, spark, next_window(env), read={"max_open_transaction_s": 0})
        assert done["held_by"] is None and done["rows_written"] == 1
        state = env.store.get(env.pipeline)
        assert state is not None and state.unwaited and "open since" in state.unwaited
    finally:
        holder.rollback()
        holder.close()
    env.sql(f"DROP TABLE {env.table}")


def test_without_the_process_privilege_the_window_stops_with_the_grant_that_fixes_it(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path, layout: StackLayout
) -> None:
    user, password = f"noproc_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with root(layout).cursor() as cur:
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT SELECT ON `{mysql['database']}`.* TO %s@'127.0.0.1'", (user,))
    env = Lake({**mysql, "user": user, "password": password}, catalog_secret, tmp_path)
    Lake.sql(
        Lake(mysql, catalog_secret, tmp_path),
        f"CREATE TABLE {mysql['database']}.{env.table} (id INT "
        "PRIMARY KEY, v VARCHAR(20), updated_at DATETIME(6) NOT NULL, KEY ix_u (updated_at))",
    )
    with pytest.raises(ExtractionError, match="GRANT PROCESS ON"):
        snapshot(env, spark)
    assert env.store.get(env.pipeline).watermark is None
    with root(layout).cursor() as cur:
        cur.execute(f"DROP TABLE `{mysql['database']}`.{env.table}")
        cur.execute("DROP USER %s@'127.0.0.1'", (user,))


# ------------------------------------------------------------------ data errors
def test_a_value_a_transform_cannot_hold_fails_once_with_the_column_value_and_fix(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = orders_pipeline(mysql, catalog_secret, tmp_path)
    seed(env, 3, datetime.now(UTC) - timedelta(days=1))
    env.sql(f"UPDATE {env.table} SET amount = 123456.78 WHERE id = 2")
    casts = [{"op": "cast", "columns": {"amount": "decimal(5,2)"}}]
    with pytest.raises(DataError) as caught:
        snapshot(env, spark, transforms=casts)
    message = str(caught.value)
    assert message.startswith(
        f"pipeline {env.pipeline} (shop.{env.table}): snapshot chunk 1: transform #1 (cast) "
        "column 'amount': [NUMERIC_VALUE_OUT_OF_RANGE] 123456.78 cannot be represented as "
        "Decimal(5, 2). — fix: change the cast of column 'amount' to a type"
    )
    state = env.store.get(env.pipeline)
    assert state is not None and state.snapshot_chunks == 0
    assert not spark.catalog.tableExists(f"lake.{env.namespace}.{env.pipeline}")
    # The entry script says it is a data error, so the operator does not retry it.
    key = snapshot_job_key(env.pipeline)
    run_id, attempt = env.claim(key)
    doc = env.document(key, run_id, attempt, transforms=casts, soft_delete=None)
    encoded = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    assert extraction_main.main(["--job", encoded]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("SPOTLAKE_DATA_ERROR: ") and err[-1].startswith("SPOTLAKE_ERROR: ")
    env.sql(f"DROP TABLE {env.table}")


def test_column_names_that_need_quoting_work_as_keys_cursors_and_in_transforms(
    mysql: dict[str, str], catalog_secret: str, spark: SparkSession, tmp_path: Path
) -> None:
    env = Lake(mysql, catalog_secret, tmp_path)
    env.sql(
        f"CREATE TABLE {env.table} (`Order Id` BIGINT NOT NULL, `select` VARCHAR(5) NOT NULL, "
        "`Amount Due` DECIMAL(10,2), `it's` VARCHAR(10), `Updated At` DATETIME(6) NOT NULL, "
        "`deleted at` DATETIME(6) NULL, PRIMARY KEY (`Order Id`, `select`), KEY ix_u (`Updated At`))"
    )
    at = datetime.now(UTC) - timedelta(days=1)
    with env.connect().cursor() as cur:
        cur.executemany(
            f"INSERT INTO {env.table} VALUES (%s, %s, %s, %s, %s, NULL)",
            [(i, "ab"[i % 2], Decimal(i) / 4, f"v'{i}", at.replace(tzinfo=None)) for i in range(1, 301)],
        )
    names = {
        "primary_key": ["Order Id", "select"],
        "cursor": "Updated At",
        "soft_delete": "deleted at",
        "read": {"chunk_rows": 70},
    }
    transforms = [
        {"op": "rename", "columns": {"Amount Due": "amount due"}},
        {"op": "derive", "columns": {"Double Due": "`amount due` * 2"}},
        {"op": "cast", "columns": {"it's": "string"}},
        {"op": "select", "columns": ["Order Id", "select", "amount due", "Double Due", "it's", "Updated At", "deleted at"]},
    ]
    assert snapshot(env, spark, transforms=transforms, **names)["rows"] == 300
    with env.connect().cursor() as cur:
        cur.execute(f"UPDATE {env.table} SET `Amount Due` = 99, `Updated At` = NOW(6) WHERE `Order Id` <= 10")
        cur.execute(f"DELETE FROM {env.table} WHERE `Order Id` > 290")
    window(env, spark, next_window(env), transforms=transforms, **names)
    reconcile_key = f"{env.pipeline}#reconcile-names"
    found = run_extraction(
        spark, job_doc(env, reconcile_key, kind="reconcile", transforms=transforms, reconcile={"chunk_rows": 20}, **names)
    )
    assert found["deletes"] == 10
    with env.connect().cursor() as cur:
        cur.execute(f"SELECT `Order Id`, `select`, `Amount Due`, `it's` FROM {env.table}")
        expected = {(i, s): (a, a * 2, t) for i, s, a, t in cur.fetchall()}
    got = {(r["Order Id"], r["select"]): (r["amount due"], r["Double Due"], r["it's"]) for r in env.lake()}
    assert got == expected
    env.sql(f"DROP TABLE {env.table}")
