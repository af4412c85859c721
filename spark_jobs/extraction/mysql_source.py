"""The MySQL source of an extraction: credentials, validation, window statistics, the JDBC read.

Credentials come from a Secrets Manager secret (JSON with host, port, database,
username, password), resolved with boto3 (which honours ``AWS_ENDPOINT_URL`` and
the region settings of the environment). The password goes only into the JDBC
``password`` option and connection properties: never into Spark conf, a URL,
a log line or a message.

Before reading, the table is checked against the live source (table, columns,
an index led by the cursor). SQL sent to MySQL contains only back-quoted
identifiers validated by :mod:`spark_jobs.common.job_documents` and window bounds
formatted by the job itself.

Time: every connection sets its session ``time_zone`` to UTC, so ``TIMESTAMP``
values and bounds are UTC whatever the server's zone. ``DATETIME`` values are wall
clock times in the source's time zone (``read.time_zone``, by default the server's
``@@time_zone``): window bounds are converted to that wall clock, covering both
sides of a daylight-saving change, and values are converted to UTC in Spark
(:class:`TimeLine`). Each column is read through the expression of
:mod:`spark_jobs.extraction.source_types`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.common.database_secret import DatabaseTls, read_database_secret
from spark_jobs.common.errors import ExtractionError
from spark_jobs.common.job_documents import CONFIG_FILE, UTC, ExtractJob, is_identifier, quote_identifier, sql_timestamp
from spark_jobs.common.runtime import driver_jvm, java_root_cause
from spark_jobs.extraction.source_types import SourceColumn, select_list, spark_values

MYSQL_DRIVER = "com.mysql.cj.jdbc.Driver"
URL_OPTIONS = (
    "connectionTimeZone=UTC&forceConnectionTimeZoneToSession=false"
    "&sessionVariables=time_zone='%2B00:00'"
    "&useCursorFetch=true&zeroDateTimeBehavior=CONVERT_TO_NULL"
    "&tinyInt1isBit=false&yearIsDateType=false&characterEncoding=UTF-8"
    "&connectTimeout=10000&tcpKeepAlive=true"
)
INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
CURSOR_TYPES = frozenset({"datetime", "timestamp"})
TEMPORAL_KEY_TYPES = frozenset({"datetime", "timestamp", "date"})
BINARY_TYPES = frozenset({"binary", "varbinary"})
CHARACTER_TYPES = frozenset({"char", "varchar"})
KEY_TYPES = INTEGER_TYPES | {"decimal", "numeric"} | BINARY_TYPES | CHARACTER_TYPES | TEMPORAL_KEY_TYPES
TEMPORAL_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2}(\.\d{1,6})?)?$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9_]+$")
WINDOW_ALIAS = "spotlake_window"


@dataclass(frozen=True)
class MySqlSource:
    host: str
    port: int
    database: str | None
    username: str
    password: str = field(repr=False)
    tls: DatabaseTls = DatabaseTls()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Connector/J's URL: the session settings, and TLS as ``tls`` says for this host
        (``auto``: ``sslMode=DISABLED`` on loopback, ``VERIFY_IDENTITY`` elsewhere)."""
        return f"jdbc:mysql://{self.address}/{self.database or ''}?{URL_OPTIONS}{self.tls.mysql_options(self.host)}"


def resolve_source(job: ExtractJob, secret_id: str | None = None) -> MySqlSource:
    """Read the source secret named by the job (or ``secret_id``, e.g. a replica's) and check its
    shape (never echoing its values)."""
    secret_id = secret_id or job.secret_id
    where = f"pipeline {job.pipeline}: source secret '{secret_id}'"
    secret = read_database_secret(
        secret_id,
        where,
        ExtractionError,
        f"fix the source in {CONFIG_FILE}",
        database_required=False,
        region=job.registry.region,
        endpoint=job.source_endpoint if secret_id == job.secret_id else None,
    )
    if secret.database is not None and not is_identifier(secret.database):
        raise ExtractionError(f"{where}: database {secret.database!r} is not a database name")
    return MySqlSource(
        host=secret.host,
        port=secret.port,
        database=secret.database,
        username=secret.username,
        password=secret.password,
        tls=job.source_tls,
    )


# ------------------------------------------------------------- connection
@contextmanager
def jdbc_connection(spark: SparkSession, source: MySqlSource, job: ExtractJob) -> Iterator[Any]:
    """A plain JDBC connection in the driver JVM (for metadata and window statistics)."""
    jvm = driver_jvm(spark)
    properties = jvm.java.util.Properties()
    properties.setProperty("user", source.username)
    properties.setProperty("password", source.password)
    try:
        connection = jvm.com.mysql.cj.jdbc.Driver().connect(source.url, properties)
    except Py4JJavaError as exc:
        mode = source.tls.effective(source.host)
        trust = source.tls.truststore or "the JVM's default trust store"
        tls = (
            f"; TLS {mode}: the server's certificate must chain to a CA in {trust}"
            + (" and name the host" if mode == "verify-identity" else "")
            + " (the source's tls in config/pipelines.yaml)"
            if mode in ("verify-identity", "verify-ca")
            else f"; TLS {mode}"
        )
        raise ExtractionError(
            f"pipeline {job.pipeline}: cannot connect to MySQL at {source.address} for table "
            f"{job.qualified_table}: {java_message(exc)} — check host, port and credentials in secret "
            f"'{job.secret_id}' and that the database accepts connections from the cluster{tls}"
        ) from None
    try:
        yield connection
    finally:
        connection.close()


def java_message(exc: Py4JJavaError) -> str:
    """The first line of the Java exception's message, and of its root cause's when that says more
    (never the JDBC properties): Connector/J reports a refused TLS handshake as "Communications link
    failure", and only the cause says which check failed."""
    java = exc.java_exception
    first = _first_line(java)
    root = java_root_cause(java)
    cause = _first_line(root) if root is not java else first
    return first if cause == first else f"{first}: {cause}"


def _first_line(java: Any) -> str:
    message = str(java.getMessage() or "").strip()
    return message.splitlines()[0] if message else str(java.getClass().getName())


def query_rows(connection: Any, sql: str, *params: str) -> list[list[str | None]]:
    statement = connection.prepareStatement(sql)
    try:
        for i, value in enumerate(params, start=1):
            statement.setString(i, value)
        result = statement.executeQuery()
        width = result.getMetaData().getColumnCount()
        rows: list[list[str | None]] = []
        while result.next():
            rows.append([result.getString(i) for i in range(1, width + 1)])
        return rows
    finally:
        statement.close()


# ------------------------------------------------------------- validation
@dataclass(frozen=True)
class SourceTable:
    """What the source says about the job's table."""

    columns: tuple[str, ...]
    types: Mapping[str, str]
    index_leaders: frozenset[str]
    details: Mapping[str, SourceColumn] = field(default_factory=dict)

    def column(self, name: str) -> SourceColumn:
        return self.details.get(name) or SourceColumn(name, self.types[name])

    @property
    def source_columns(self) -> list[SourceColumn]:
        return [self.column(c) for c in self.columns]

    def integer_key(self, job: ExtractJob) -> str | None:
        """The primary-key column if it is a single integer column (the JDBC read can split on it)."""
        if len(job.primary_key) == 1 and self.types.get(job.primary_key[0]) in INTEGER_TYPES:
            return job.primary_key[0]
        return None


def describe_table(connection: Any, job: ExtractJob) -> SourceTable:
    rows = query_rows(
        connection,
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, "
        "COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        job.database,
        job.table,
    )
    columns = [
        SourceColumn(
            name,
            (data_type or "").lower(),
            charset,
            collation,
            (column_type or "").lower(),
            int(precision) if precision is not None else None,
            int(scale) if scale is not None else None,
        )
        for schema, table, name, data_type, charset, collation, column_type, precision, scale in rows
        if schema == job.database and table == job.table and name is not None
    ]
    if not columns:
        raise ExtractionError(
            f"pipeline {job.pipeline}: table {job.qualified_table} does not exist in the source "
            f"(renamed or dropped?) — fix the table name in {CONFIG_FILE}"
        )
    leaders = query_rows(
        connection,
        "SELECT DISTINCT COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND SEQ_IN_INDEX = 1",
        job.database,
        job.table,
    )
    return SourceTable(
        columns=tuple(c.name for c in columns),
        types={c.name: c.data_type for c in columns},
        index_leaders=frozenset(row[0] for row in leaders if row[0] is not None),
        details={c.name: c for c in columns},
    )


def check_table(job: ExtractJob, table: SourceTable) -> None:
    """The job's key columns exist, the cursor is a time column that leads an index, and the
    primary key has types the initial snapshot can page through."""
    listing = ", ".join(table.columns)
    for role, column, setting in (
        [("cursor", job.cursor, "cursor")]
        + [("primary-key", c, "primary_key") for c in job.primary_key]
        + ([("soft-delete", job.soft_delete, "soft_delete")] if job.soft_delete else [])
    ):
        if column not in table.columns:
            raise ExtractionError(
                f"{job.context}: {role} column '{column}' does not exist in the source table; "
                f"columns are: {listing} — fix {setting} in {CONFIG_FILE}"
            )
    cursor_type = table.types[job.cursor]
    if cursor_type == "date":
        raise ExtractionError(
            f"{job.context}: cursor column '{job.cursor}' is DATE: a row changed twice in one day keeps its "
            f"cursor, so a window cannot tell that it changed — choose a DATETIME or TIMESTAMP column that "
            f"every change sets (e.g. updated_at ... ON UPDATE CURRENT_TIMESTAMP) as cursor in {CONFIG_FILE}"
        )
    if cursor_type not in CURSOR_TYPES:
        raise ExtractionError(
            f"{job.context}: cursor column '{job.cursor}' is {cursor_type.upper()}, not DATETIME or TIMESTAMP; "
            f"windows are time ranges — choose a time column as cursor in {CONFIG_FILE}"
        )
    if job.cursor not in table.index_leaders:
        raise ExtractionError(
            f"{job.context}: cursor column '{job.cursor}' is not the first column of any index, so every "
            f"window would scan the whole table — add one (CREATE INDEX ix_{job.table}_{job.cursor} ON "
            f"{job.qualified_table} ({job.cursor})) or choose an indexed cursor in {CONFIG_FILE}"
        )
    for column in job.primary_key:
        kind = table.types[column]
        if kind not in KEY_TYPES:
            raise ExtractionError(
                f"{job.context}: primary-key column '{column}' is {kind.upper()}; the initial snapshot pages "
                f"through the key and supports integer, decimal, character, binary and date/time keys — "
                f"choose another unique key as primary_key in {CONFIG_FILE}"
            )


# --------------------------------------------------------------------- time
def source_now(connection: Any) -> datetime:
    """The source's clock (UTC): the time line of its cursor values."""
    ((text,),) = query_rows(connection, "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f')")
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


OFFSET = re.compile(r"^([+-])(\d{1,2}):(\d{2})$")


def parse_zone(name: str) -> tzinfo | None:
    """A MySQL ``time_zone`` value or an IANA name as a tzinfo, or None if it is neither."""
    match = OFFSET.match(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    if "/" not in name:  # "EST", "CET", "IST": abbreviations that do not say their daylight-saving rules
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class TimeLine:
    """Where the cursor's values sit in time: TIMESTAMP values are UTC (the session's zone);
    DATETIME values are wall clock times in ``zone_name``."""

    cursor_type: str
    zone_name: str = "UTC"
    zone: tzinfo = UTC

    @property
    def utc(self) -> bool:
        return self.zone is UTC or self.zone_name in ("+00:00", "UTC")

    def wall(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def cursor_bounds(self, low: datetime, high: datetime) -> tuple[str, str]:
        """The cursor values that ``[low, high)`` (UTC) covers. For a DATETIME cursor in a zone with
        daylight saving, wall clock time jumps at a change; the bounds then cover both sides (an
        hour repeated in autumn is read in full by every window that touches it)."""
        if self.cursor_type == "timestamp" or self.utc:
            return sql_timestamp(low), sql_timestamp(high)
        span = high - low
        wall_low, wall_high = self.wall(low), self.wall(high)
        lower, upper = min(wall_low, wall_high - span), max(wall_high, wall_low + span)
        return lower.strftime("%Y-%m-%d %H:%M:%S.%f"), upper.strftime("%Y-%m-%d %H:%M:%S.%f")


def time_line(connection: Any, job: ExtractJob, table: SourceTable) -> TimeLine:
    """The job's time line: the cursor's type and, when the table has DATETIME columns, the zone
    of their values (``read.time_zone``, else the server's ``@@time_zone``)."""
    cursor_type = table.types[job.cursor]
    if "datetime" not in table.types.values():
        return TimeLine(cursor_type)
    name = job.read.time_zone
    origin = "read.time_zone"
    if not name:
        ((global_zone, system_zone),) = query_rows(connection, "SELECT @@global.time_zone, @@system_time_zone")
        name = str(system_zone if global_zone == "SYSTEM" else global_zone)
        origin = "the server's @@system_time_zone" if global_zone == "SYSTEM" else "the server's @@time_zone"
    zone = parse_zone(name)
    if zone is None:
        raise ExtractionError(
            f"{job.context}: DATETIME values are wall clock times in the source's time zone, and {origin} is "
            f"{name!r}, which is not an offset (+05:30) or an IANA zone name (Europe/Paris) — set "
            f"read.time_zone for this pipeline in {CONFIG_FILE} to the zone the application writes in"
        )
    return TimeLine(cursor_type, name, zone)


# -------------------------------------------------------------- late commits
@dataclass(frozen=True)
class OpenTransaction:
    """A read-write transaction open on the source: rows it wrote are not visible yet."""

    trx_id: str
    thread: str
    started: datetime  # UTC, on the source's clock (whole seconds)
    age_s: float
    query: str

    def describe(self) -> str:
        what = f", running {self.query!r}" if self.query else ""
        return (
            f"transaction {self.trx_id} (connection {self.thread}) open since {self.started.isoformat()} "
            f"({self.age_s:.0f} s){what}"
        )


def open_transactions(connection: Any, job: ExtractJob) -> list[OpenTransaction]:
    """The source's open read-write transactions, oldest first (``information_schema.INNODB_TRX``;
    needs the PROCESS privilege)."""
    try:
        rows = query_rows(
            connection,
            "SELECT trx_id, trx_mysql_thread_id, TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6)), "
            "LEFT(COALESCE(trx_query, ''), 200), DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f') "
            "FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID() "
            "AND trx_is_read_only = 0 AND trx_autocommit_non_locking = 0 ORDER BY trx_started",
        )
    except Py4JJavaError as exc:
        raise ExtractionError(
            f"{job.context}: cannot list the source's open transactions ({java_message(exc)}); windows stop "
            f"before the oldest one so that rows it commits late are not missed — GRANT PROCESS ON *.* TO the "
            f"source user, or set read.wait_for_open_transactions: false in {CONFIG_FILE} (late commits are "
            f"then found only by reconciliation)"
        ) from None
    found = []
    for trx_id, thread, age_us, query, now in rows:
        age = timedelta(microseconds=int(age_us or 0))
        started = datetime.fromisoformat(str(now)).replace(tzinfo=UTC) - age
        found.append(
            OpenTransaction(
                str(trx_id), str(thread), started.replace(microsecond=0), age.total_seconds(), " ".join(str(query or "").split())
            )
        )
    return found


@dataclass(frozen=True)
class ReadLimit:
    """How far a window may read now: up to the oldest open transaction's start, minus a margin;
    transactions open longer than ``max_open_transaction_s`` are not waited for."""

    until: datetime | None  # None: no transaction holds the window back
    holding: OpenTransaction | None = None
    ignored: tuple[OpenTransaction, ...] = ()


def read_limit(transactions: list[OpenTransaction], margin_s: float, max_open_s: float) -> ReadLimit:
    ignored = tuple(t for t in transactions if t.age_s > max_open_s)
    waiting = [t for t in transactions if t.age_s <= max_open_s]
    if not waiting:
        return ReadLimit(None, None, ignored)
    oldest = waiting[0]
    return ReadLimit(oldest.started - timedelta(seconds=margin_s), oldest, ignored)


# ------------------------------------------------------------------ reading
def range_condition(job: ExtractJob, low: datetime, high: datetime, line: TimeLine | None = None) -> str:
    """``low <= cursor < high``: bounds formatted by the job, on the cursor's time line."""
    cursor = quote_identifier(job.cursor)
    lower, upper = (line or TimeLine("timestamp")).cursor_bounds(low, high)
    return f"{cursor} >= '{lower}' AND {cursor} < '{upper}'"


def select_query(job: ExtractJob, table: SourceTable, condition: str) -> str:
    return f"SELECT {select_list(table.source_columns, job.primary_key)} FROM {source_name(job)} WHERE {condition}"


def source_name(job: ExtractJob) -> str:
    return f"{quote_identifier(job.database)}.{quote_identifier(job.table)}"


@dataclass(frozen=True)
class ReadStats:
    rows: int
    key_min: int | None = None
    key_max: int | None = None


def read_stats(connection: Any, job: ExtractJob, table: SourceTable, condition: str) -> ReadStats:
    """Rows matching ``condition`` and, for a single integer key, its bounds (to split the read)."""
    key = table.integer_key(job)
    bounds = f", MIN({quote_identifier(key)}), MAX({quote_identifier(key)})" if key else ""
    (row,) = query_rows(connection, f"SELECT COUNT(*){bounds} FROM {source_name(job)} WHERE {condition}")
    rows = int(row[0] or 0)
    if key is None or row[1] is None or row[2] is None:
        return ReadStats(rows=rows)
    return ReadStats(rows=rows, key_min=int(row[1]), key_max=int(row[2]))


def partition_count(job: ExtractJob, stats: ReadStats) -> int:
    if stats.key_min is None or stats.key_max is None or stats.rows <= job.read.partition_rows:
        return 1
    wanted = math.ceil(stats.rows / job.read.partition_rows)
    return max(1, min(job.read.max_partitions, wanted, stats.key_max - stats.key_min + 1))


def key_predicates(key: str, low: int, high: int, parts: int) -> list[str]:
    """``parts`` ranges of an integer key that together hold every value (the first and last are
    open-ended): Python integers, so BIGINT UNSIGNED keys above 2^63 split as well."""
    column = quote_identifier(key)
    cuts = [low + (high - low + 1) * i // parts for i in range(1, parts)]
    predicates = []
    for i in range(parts):
        terms = ([f"{column} >= {cuts[i - 1]}"] if i > 0 else []) + ([f"{column} < {cuts[i]}"] if i < parts - 1 else [])
        predicates.append(" AND ".join(terms) or "1 = 1")
    return predicates


def read_rows(
    spark: SparkSession,
    source: MySqlSource,
    job: ExtractJob,
    table: SourceTable,
    condition: str,
    stats: ReadStats,
    line: TimeLine | None = None,
) -> DataFrame:
    """The rows matching ``condition`` through Spark's JDBC source, streamed, split on the key when
    large, each column read as :mod:`spark_jobs.extraction.source_types` says."""
    properties = {
        "user": source.username,
        "password": source.password,
        "driver": MYSQL_DRIVER,
        "fetchsize": str(job.read.fetch_size),
        # Transform filters run in Spark, with Spark's semantics (not MySQL's collations).
        "pushDownPredicate": "false",
    }
    query = f"({select_query(job, table, condition)}) AS {WINDOW_ALIAS}"
    partitions = partition_count(job, stats)
    key = table.integer_key(job)
    try:
        if partitions > 1 and key is not None and stats.key_min is not None and stats.key_max is not None:
            raw = spark.read.jdbc(
                source.url, query, predicates=key_predicates(key, stats.key_min, stats.key_max, partitions), properties=properties
            )
        else:
            raw = spark.read.format("jdbc").options(url=source.url, dbtable=query, **properties).load()
    except Py4JJavaError as exc:
        raise ExtractionError(f"{job.context}: reading from MySQL at {source.address} failed: {java_message(exc)}") from None
    return spark_values(raw, table.source_columns, (line or TimeLine("timestamp")).zone_name)


# --------------------------------------------------------- initial snapshot
# The initial load pages through the primary key (as Debezium's incremental snapshots do):
# chunk n holds the rows whose key lies after chunk n-1's last key, up to and including the
# key `chunk_rows` rows further on. A chunk's bounds are the source's own key values, kept
# in the registry as JSON, and written into SQL only as literals formatted by type below.
def key_after(job: ExtractJob, table: SourceTable, after: Sequence[Any] | None) -> str:
    """``key > after`` (row-value order, expanded so MySQL uses the primary key as a range)."""
    if after is None:
        return "1 = 1"
    terms = []
    for i, column in enumerate(job.primary_key):
        equal = [f"{quote_identifier(c)} = {key_literal(table, c, after[j])}" for j, c in enumerate(job.primary_key[:i])]
        terms.append("(" + " AND ".join([*equal, f"{quote_identifier(column)} > {key_literal(table, column, after[i])}"]) + ")")
    return "(" + " OR ".join(terms) + ")"


def key_through(job: ExtractJob, table: SourceTable, upper: Sequence[Any] | None) -> str:
    """``key <= upper`` (row-value order)."""
    if upper is None:
        return "1 = 1"
    return f"NOT {key_after(job, table, upper)}"


def chunk_condition(job: ExtractJob, table: SourceTable, after: Sequence[Any] | None, upper: Sequence[Any] | None) -> str:
    return f"{key_after(job, table, after)} AND {key_through(job, table, upper)}"


def chunk_upper(connection: Any, job: ExtractJob, table: SourceTable, after: Sequence[Any] | None, rows: int) -> list[Any] | None:
    """The key of the ``rows``-th row after ``after`` in key order, or None if no row follows it
    (then this chunk is the last, and reads every row after ``after``)."""
    order = ", ".join(quote_identifier(c) for c in job.primary_key)
    sql = (
        f"SELECT {order} FROM {source_name(job)} WHERE {key_after(job, table, after)} "
        f"ORDER BY {order} LIMIT 2 OFFSET {int(rows) - 1}"
    )
    statement = connection.prepareStatement(sql)
    try:
        result = statement.executeQuery()
        if not result.next():
            return None
        upper = [_key_value(result, i + 1, table.types[c]) for i, c in enumerate(job.primary_key)]
        return upper if result.next() else None
    finally:
        statement.close()


def _key_value(result: Any, index: int, kind: str) -> Any:
    if kind in BINARY_TYPES:
        return {"hex": bytes(result.getBytes(index)).hex()}
    return str(result.getString(index))


def key_literal(table: SourceTable, column: str, value: Any) -> str:
    """A key value as a MySQL literal of its column's type; never raw text from the source."""
    kind = table.types[column]
    if kind in INTEGER_TYPES:
        return str(int(value))
    if kind in ("decimal", "numeric"):
        return str(Decimal(str(value)))
    if kind in BINARY_TYPES:
        return f"X'{bytes.fromhex(value['hex']).hex()}'"
    if kind in TEMPORAL_KEY_TYPES:
        text = str(value)
        if not TEMPORAL_VALUE.match(text):
            raise ExtractionError(f"primary-key value {text!r} of column '{column}' is not a {kind} value")
        return f"'{text}'"
    detail = table.details[column]
    charset = detail.charset or "utf8mb4"
    collation = detail.collation or f"{charset}_bin"
    if not (IDENTIFIER_RE.match(charset) and IDENTIFIER_RE.match(collation)):
        raise ExtractionError(f"column '{column}' has an unexpected character set {charset!r} / collation {collation!r}")
    encoded = str(value).encode("utf-8").hex()
    return f"CONVERT(CONVERT(X'{encoded}' USING utf8mb4) USING {charset}) COLLATE {collation}"
