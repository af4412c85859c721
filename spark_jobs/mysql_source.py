"""The MySQL source of an extraction: credentials, validation, window statistics, the JDBC read.

Credentials come from a Secrets Manager secret (JSON with host, port, database,
username, password), resolved with boto3 (which honours ``AWS_ENDPOINT_URL`` and
the region settings of the environment). The password goes only into the JDBC
``password`` option and connection properties: never into Spark conf, a URL,
a log line or a message.

Before reading, the table is checked against the live source (table, columns,
an index led by the cursor). SQL sent to MySQL contains only back-quoted
identifiers validated by :mod:`spark_jobs.job_config` and window bounds
formatted by the job itself; the MariaDB/MySQL server is expected to run in
UTC, and ``connectionTimeZone=UTC`` makes DATETIME values arrive unshifted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.database_secret import read_database_secret
from spark_jobs.errors import ExtractionError
from spark_jobs.job_config import CONFIG_FILE, UTC, ExtractJob, is_identifier, quote_identifier, sql_timestamp

MYSQL_DRIVER = "com.mysql.cj.jdbc.Driver"
URL_OPTIONS = (
    "connectionTimeZone=UTC&forceConnectionTimeZoneToSession=false"
    "&useCursorFetch=true&zeroDateTimeBehavior=CONVERT_TO_NULL"
    "&connectTimeout=10000&tcpKeepAlive=true"
)
INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
TEMPORAL_TYPES = frozenset({"datetime", "timestamp", "date"})
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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"jdbc:mysql://{self.address}/{self.database or ''}?{URL_OPTIONS}"


def resolve_source(job: ExtractJob) -> MySqlSource:
    """Read the source secret named by the job and check its shape (never echoing its values)."""
    where = f"pipeline {job.pipeline}: source secret '{job.secret_id}'"
    secret = read_database_secret(job.secret_id, where, ExtractionError,
                                  f"fix the source in {CONFIG_FILE}", database_required=False)
    if secret.database is not None and not is_identifier(secret.database):
        raise ExtractionError(f"{where}: database {secret.database!r} is not a database name")
    return MySqlSource(
        host=secret.host,
        port=secret.port,
        database=secret.database,
        username=secret.username,
        password=secret.password,
    )


# ------------------------------------------------------------- connection
@contextmanager
def jdbc_connection(spark: SparkSession, source: MySqlSource, job: ExtractJob) -> Iterator[Any]:
    """A plain JDBC connection in the driver JVM (for metadata and window statistics)."""
    jvm = spark._jvm
    properties = jvm.java.util.Properties()
    properties.setProperty("user", source.username)
    properties.setProperty("password", source.password)
    try:
        connection = jvm.com.mysql.cj.jdbc.Driver().connect(source.url, properties)
    except Py4JJavaError as exc:
        raise ExtractionError(
            f"pipeline {job.pipeline}: cannot connect to MySQL at {source.address} for table "
            f"{job.qualified_table}: {java_message(exc)} — check host, port and credentials in secret "
            f"'{job.secret_id}' and that the database accepts connections from the cluster"
        ) from None
    try:
        yield connection
    finally:
        connection.close()


def java_message(exc: Py4JJavaError) -> str:
    """The first line of the Java exception's message (never the JDBC properties)."""
    java = exc.java_exception
    message = str(java.getMessage() or java.getClass().getName())
    return message.strip().splitlines()[0]


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
class SourceColumn:
    name: str
    data_type: str  # information_schema DATA_TYPE, lower case: bigint, varchar, datetime, ...
    charset: str | None = None
    collation: str | None = None


@dataclass(frozen=True)
class SourceTable:
    """What the source says about the job's table."""

    columns: tuple[str, ...]
    types: Mapping[str, str]
    index_leaders: frozenset[str]
    details: Mapping[str, SourceColumn] = field(default_factory=dict)

    def integer_key(self, job: ExtractJob) -> str | None:
        """The primary-key column if it is a single integer column (the JDBC read can split on it)."""
        if len(job.primary_key) == 1 and self.types.get(job.primary_key[0]) in INTEGER_TYPES:
            return job.primary_key[0]
        return None


def describe_table(connection: Any, job: ExtractJob) -> SourceTable:
    rows = query_rows(
        connection,
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, COLLATION_NAME "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        job.database,
        job.table,
    )
    columns = [
        SourceColumn(name, (data_type or "").lower(), charset, collation)
        for schema, table, name, data_type, charset, collation in rows
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
    if cursor_type not in TEMPORAL_TYPES:
        raise ExtractionError(
            f"{job.context}: cursor column '{job.cursor}' is {cursor_type.upper()}, not DATETIME, TIMESTAMP "
            f"or DATE; windows are time ranges — choose a time column as cursor in {CONFIG_FILE}"
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


# ------------------------------------------------------------------ reading
def source_now(connection: Any) -> datetime:
    """The source's clock (UTC): the time line of its cursor values."""
    ((text,),) = query_rows(connection, "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f')")
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def range_condition(job: ExtractJob, low: datetime, high: datetime) -> str:
    """``low <= cursor < high``, bounds formatted by the job (UTC)."""
    cursor = quote_identifier(job.cursor)
    return f"{cursor} >= '{sql_timestamp(low)}' AND {cursor} < '{sql_timestamp(high)}'"


def select_query(job: ExtractJob, table: SourceTable, condition: str) -> str:
    columns = ", ".join(quote_identifier(c) for c in table.columns)
    return f"SELECT {columns} FROM {source_name(job)} WHERE {condition}"


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


def read_rows(
    spark: SparkSession, source: MySqlSource, job: ExtractJob, table: SourceTable, condition: str, stats: ReadStats
) -> DataFrame:
    """The rows matching ``condition`` through Spark's JDBC source, streamed, split on the key when large."""
    options = {
        "url": source.url,
        "driver": MYSQL_DRIVER,
        "user": source.username,
        "password": source.password,
        "dbtable": f"({select_query(job, table, condition)}) AS {WINDOW_ALIAS}",
        "fetchsize": str(job.read.fetch_size),
        # Transform filters run in Spark, with Spark's semantics (not MySQL's collations).
        "pushDownPredicate": "false",
    }
    partitions = partition_count(job, stats)
    key = table.integer_key(job)
    if partitions > 1 and key is not None:
        options.update(
            {
                "partitionColumn": key,
                "lowerBound": str(stats.key_min),
                "upperBound": str(stats.key_max + 1 if stats.key_max is not None else 0),
                "numPartitions": str(partitions),
            }
        )
    try:
        return spark.read.format("jdbc").options(**options).load()
    except Py4JJavaError as exc:
        raise ExtractionError(
            f"{job.context}: reading from MySQL at {source.address} failed: {java_message(exc)}"
        ) from None


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


def chunk_condition(job: ExtractJob, table: SourceTable, after: Sequence[Any] | None,
                    upper: Sequence[Any] | None) -> str:
    return f"{key_after(job, table, after)} AND {key_through(job, table, upper)}"


def chunk_upper(connection: Any, job: ExtractJob, table: SourceTable, after: Sequence[Any] | None,
                rows: int) -> list[Any] | None:
    """The key of the ``rows``-th row after ``after`` in key order, or None if no row follows it
    (then this chunk is the last, and reads every row after ``after``)."""
    order = ", ".join(quote_identifier(c) for c in job.primary_key)
    sql = (f"SELECT {order} FROM {source_name(job)} WHERE {key_after(job, table, after)} "
           f"ORDER BY {order} LIMIT 2 OFFSET {int(rows) - 1}")
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
