"""How each MySQL / MariaDB column type is read, and what it becomes in the lake.

The read selects every column through an expression chosen by its type, so values
that Spark's JDBC mapping cannot hold (wider than 38 digits, ``TIME`` beyond a day,
zero dates, spatial values) arrive as something that holds them exactly, and temporal
values arrive as text that Spark parses on the proleptic Gregorian calendar (no
hybrid-calendar shift for dates before 1582). The mapping (docs/types.md):

=========================================  =======================================
MySQL                                      lake (Iceberg / Spark)
=========================================  =======================================
TINYINT, SMALLINT, MEDIUMINT, INT (signed  int (long for INT UNSIGNED and above)
or unsigned), TINYINT(1) / BOOL
BIGINT                                     long
BIGINT UNSIGNED                            decimal(20,0)
BIT(1)                                     boolean
BIT(2..63)                                 long (the bits as an unsigned number)
BIT(64)                                    decimal(20,0)
DECIMAL(p,s), p <= 38                      decimal(p,s)
DECIMAL(p,s), p > 38                       string (the exact decimal text)
FLOAT                                      double (the single-precision value, exactly)
DOUBLE                                     double
DATE                                       date
DATETIME(0..6)                             timestamp (UTC; the value read in the source's time zone)
TIMESTAMP(0..6)                            timestamp (UTC)
zero or invalid date / datetime            NULL, counted per window in the log
TIME(0..6)                                 long: the duration in microseconds (-838:59:59 .. 838:59:59)
YEAR                                       int (0 for the zero year)
CHAR, VARCHAR, TEXT, ENUM, SET, JSON       string (UTF-8)
BINARY, VARBINARY, BLOB                    binary
GEOMETRY, POINT, ... (spatial)             string: WKT (``ST_AsText``)
anything else                              string (``CAST(... AS CHAR)``)
=========================================  =======================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from spark_jobs.common.job_documents import quote_identifier

SPATIAL_TYPES = frozenset(
    {
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
        "geomcollection",
    }
)
TEXT_FORMAT = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%d %H:%i:%s.%f", "timestamp": "%Y-%m-%d %H:%i:%s.%f"}
SPARK_FORMAT = {"date": "yyyy-MM-dd", "datetime": "yyyy-MM-dd HH:mm:ss.SSSSSS", "timestamp": "yyyy-MM-dd HH:mm:ss.SSSSSS"}
# Columns the read adds, carried through the transforms (a ``select`` step keeps them):
CARRIED = "__spotlake_"
# per row, the names of the temporal columns whose value was a zero or invalid date (stored as
# NULL); summed per chunk, then dropped before the commit;
INVALID_DATES = "__spotlake_invalid_dates"
# MD5 of the row's primary key and of the whole row as the source renders them (``QUOTE``), stored
# in the lake as ``_source_key`` / ``_source_hash``: reconciliation compares them with the same
# expressions computed on the source (see :mod:`spark_jobs.extraction.reconcile`).
SOURCE_KEY = "__spotlake_source_key"
SOURCE_HASH = "__spotlake_source_hash"
MAX_SPARK_PRECISION = 38


@dataclass(frozen=True)
class SourceColumn:
    """A column as ``information_schema.COLUMNS`` describes it."""

    name: str
    data_type: str  # DATA_TYPE, lower case: bigint, varchar, datetime, ...
    charset: str | None = None
    collation: str | None = None
    column_type: str = ""  # COLUMN_TYPE, lower case: "bigint(20) unsigned", "bit(1)", ...
    precision: int | None = None  # NUMERIC_PRECISION (BIT: the number of bits)
    scale: int | None = None

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type


@dataclass(frozen=True)
class ColumnRead:
    """How one column is selected from MySQL and what Spark makes of it."""

    select: str  # the MySQL expression, without its alias
    temporal: str | None = None  # "date" / "datetime" / "timestamp": text parsed by Spark
    lake_type: str = ""


def column_read(column: SourceColumn) -> ColumnRead:
    name = quote_identifier(column.name)
    kind = column.data_type
    if kind == "bigint" and column.unsigned:
        return ColumnRead(name, lake_type="decimal(20,0)")
    if kind == "bit":
        bits = column.precision or 1
        if bits == 1:
            return ColumnRead(name, lake_type="boolean")
        if bits < 64:
            return ColumnRead(f"CAST({name} AS SIGNED)", lake_type="long")
        return ColumnRead(f"CAST({name} AS UNSIGNED)", lake_type="decimal(20,0)")
    if kind in ("decimal", "numeric") and (column.precision or 0) > MAX_SPARK_PRECISION:
        return ColumnRead(f"CAST({name} AS CHAR)", lake_type="string")
    if kind in TEXT_FORMAT:
        return ColumnRead(
            f"DATE_FORMAT({name}, '{TEXT_FORMAT[kind]}')", temporal=kind, lake_type="date" if kind == "date" else "timestamp"
        )
    if kind == "time":
        return ColumnRead(f"CAST(TIMESTAMPDIFF(MICROSECOND, TIME '00:00:00', {name}) AS SIGNED)", lake_type="long")
    if kind in SPATIAL_TYPES:
        return ColumnRead(f"ST_AsText({name})", lake_type="string")
    if kind in KNOWN_AS_IS:
        return ColumnRead(name, lake_type=KNOWN_AS_IS[kind])
    return ColumnRead(f"CAST({name} AS CHAR)", lake_type="string")


KNOWN_AS_IS = {
    "tinyint": "int",
    "smallint": "int",
    "mediumint": "int",
    "int": "int",
    "integer": "int",
    "bigint": "long",
    "decimal": "decimal",
    "numeric": "decimal",
    "float": "double",
    "double": "double",
    "real": "double",
    "year": "int",
    "char": "string",
    "varchar": "string",
    "tinytext": "string",
    "text": "string",
    "mediumtext": "string",
    "longtext": "string",
    "enum": "string",
    "set": "string",
    "json": "string",
    "binary": "binary",
    "varbinary": "binary",
    "tinyblob": "binary",
    "blob": "binary",
    "mediumblob": "binary",
    "longblob": "binary",
}


def select_list(columns: Sequence[SourceColumn], key: Sequence[str] = ()) -> str:
    """The SELECT list of a read: each column through its expression, under its own name, then
    the key's and the row's hashes (when the key is given)."""
    parts = []
    for column in columns:
        read = column_read(column)
        name = quote_identifier(column.name)
        parts.append(name if read.select == name else f"{read.select} AS {name}")
    if key:
        parts.append(f"{hash_sql(key)} AS {SOURCE_KEY}")
        parts.append(f"{hash_sql([c.name for c in columns])} AS {SOURCE_HASH}")
    return ", ".join(parts)


def hash_sql(names: Sequence[str]) -> str:
    """MD5 (hex) of the values as MySQL quotes them, NULL as the bare word: the same for the same
    values in any session with the same time zone (the jobs' sessions are UTC)."""
    quoted = ", ".join(f"IFNULL(QUOTE({quote_identifier(n)}), 'NULL')" for n in names)
    return f"MD5(CONCAT_WS(',', {quoted}))"


def spark_values(df: DataFrame, columns: Sequence[SourceColumn], time_zone: str) -> DataFrame:
    """The rows read with temporal text parsed (``time_zone``: the zone of DATETIME values) and
    :data:`INVALID_DATES` added: zero and invalid dates become NULL and are named there."""
    temporal = [(c.name, column_read(c).temporal) for c in columns if column_read(c).temporal]
    values: dict[str, Column] = {}
    invalid: list[Column] = []
    for name, kind in temporal:
        text = F.col(quote_identifier(name))
        parsed = parsed_value(text, str(kind), time_zone)
        values[name] = parsed
        invalid.append(F.when(text.isNotNull() & parsed.isNull(), F.lit(name)))
    names = F.array_compact(F.array(*invalid)) if invalid else F.array().cast("array<string>")
    # One projection: the flags read the text, not the parsed values that replace it.
    return df.withColumns({**values, INVALID_DATES: names})


def parsed_value(text: Column, kind: str, time_zone: str) -> Column:
    moment = F.try_to_timestamp(text, F.lit(SPARK_FORMAT[kind]))
    if kind == "date":
        return F.to_date(moment)
    if kind == "datetime" and time_zone not in ("UTC", "+00:00", "Z"):
        return F.to_utc_timestamp(moment, time_zone)
    return moment


def lake_types(columns: Sequence[SourceColumn]) -> Mapping[str, str]:
    """Column name -> what it becomes in the lake (for the log and the docs)."""
    return {c.name: column_read(c).lake_type for c in columns}
