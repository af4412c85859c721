"""The lake's Iceberg catalog in a Spark session: configuration, tables, schema evolution, commits.

The catalog is configured at run time from the job document (so the same job runs
against the AWS Glue Data Catalog in production and a JDBC catalog on PostgreSQL
locally), before the session first uses it. Credentials of a JDBC catalog come from
its Secrets Manager secret and go only into the session's catalog properties
(Spark redacts ``*password*`` keys in its UI and logs).

S3 is reached through Iceberg's ``S3FileIO``; when ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` is set (a local stack, an S3-compatible store) it points there with
path-style access, as boto3 does with the same variables.

Every table is Iceberg format v2, merge-on-read (a window's ``MERGE INTO`` writes
position deletes instead of rewriting files; maintenance compacts them), with all data
columns optional, so a column that becomes nullable in the source never breaks a write.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ByteType,
    DataType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StructField,
    StructType,
)

from spark_jobs.common.database_secret import Endpoint, read_database_secret
from spark_jobs.common.errors import DataError, ExtractionError
from spark_jobs.common.job_documents import CONFIG_FILE, ExtractJob, quote_identifier
from spark_jobs.common.runtime import driver_jvm

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
CATALOG_IMPL = {
    "jdbc": "org.apache.iceberg.jdbc.JdbcCatalog",
    "glue": "org.apache.iceberg.aws.glue.GlueCatalog",
}

# Columns spotlake adds. The changes table keeps every row version a window read;
# the current-state table keeps one row per primary key.
CHANGE_COLUMNS = (
    ("_op", "string"),  # snapshot (initial load), upsert (read by a window), delete (soft-deleted)
    ("_window", "string"),  # the window label, or "snapshot"
    ("_job_key", "string"),
    ("_chunk", "int"),
    ("_attempt", "int"),
    ("_run_id", "string"),
    ("_extracted_at", "timestamp"),  # the source's clock when the chunk was read
    ("_source_key", "string"),  # MD5 of the primary key as the source renders it (reconciliation)
    ("_source_hash", "string"),  # MD5 of the whole source row
)
CURRENT_COLUMNS = (
    ("_op", "string"),
    ("_window", "string"),
    ("_job_key", "string"),
    ("_extracted_at", "timestamp"),
    ("_source_key", "string"),
    ("_source_hash", "string"),
)
RESERVED = frozenset(name for name, _ in CHANGE_COLUMNS)

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.delete.mode": "merge-on-read",
    "write.update.mode": "merge-on-read",
    "write.merge.mode": "merge-on-read",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
    # Exact bounds (not 16-character prefixes) so a window's files are found by their job key.
    "write.metadata.metrics.column._job_key": "full",
}


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class CatalogTables(Protocol):
    """What :func:`catalog_properties` reads of a job's lake: a pipeline's :class:`LakeTables`, a
    stream's ``StreamLake`` (spark_jobs/clickstream/job.py)."""

    @property
    def catalog(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def warehouse(self) -> str: ...
    @property
    def secret_id(self) -> str | None: ...
    @property
    def properties(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def endpoint(self) -> Endpoint: ...


def catalog_properties(lake: CatalogTables, who: str, region: str | None) -> dict[str, str]:
    """``spark.sql.catalog.<name>*`` settings of the lake's catalog (with credentials for JDBC)."""
    prefix = f"spark.sql.catalog.{lake.catalog}"
    props = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.catalog-impl": CATALOG_IMPL[lake.type],
        f"{prefix}.warehouse": lake.warehouse.replace("s3a://", "s3://", 1),
        f"{prefix}.io-impl": S3_FILE_IO,
        # Commits of other sessions must be seen at once (windows, maintenance, warm sessions).
        f"{prefix}.cache-enabled": "false",
    }
    if region:
        props[f"{prefix}.client.region"] = region
    endpoint = s3_endpoint()
    if endpoint:
        props[f"{prefix}.s3.endpoint"] = endpoint
        props[f"{prefix}.s3.path-style-access"] = "true"
    if lake.type == "jdbc":
        assert lake.secret_id is not None
        secret = read_database_secret(
            lake.secret_id,
            f"{who}: lake catalog secret '{lake.secret_id}'",
            ExtractionError,
            f"fix lake.secret_id in {CONFIG_FILE}",
            database_required=True,
            region=region,
            endpoint=lake.endpoint,
        )
        props.update(
            {
                f"{prefix}.uri": f"jdbc:postgresql://{secret.host}:{secret.port}/{secret.database}",
                f"{prefix}.jdbc.user": secret.username,
                f"{prefix}.jdbc.password": secret.password,
                f"{prefix}.jdbc.schema-version": "V1",
            }
        )
    for key, value in lake.properties:
        props[f"{prefix}.{key}"] = value
    return props


def configure_catalog(spark: SparkSession, job: ExtractJob) -> None:
    """Make the job's catalog usable in ``spark`` (before its first use in the session)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if ICEBERG_EXTENSIONS not in extensions:
        raise ExtractionError(
            f"{job.context}: the Spark session lacks Iceberg's SQL extensions, which MERGE INTO needs — "
            f"start it with spark.sql.extensions={ICEBERG_EXTENSIONS} (EMR: the iceberg-defaults "
            "classification with iceberg.enabled=true)"
        )
    for key, value in catalog_properties(job.lake, f"pipeline {job.pipeline}", job.registry.region).items():
        spark.conf.set(key, value)


# ------------------------------------------------------------------ tables
def ddl_columns(schema: StructType) -> str:
    return ", ".join(f"{quote_identifier(f.name)} {f.dataType.simpleString()}" for f in schema.fields)


def with_meta(schema: StructType, meta: tuple[tuple[str, str], ...]) -> StructType:
    fields = list(schema.fields) + [StructField(name, _simple_type(kind), True) for name, kind in meta]
    return StructType(fields)


def _simple_type(name: str) -> DataType:
    from pyspark.sql.types import IntegerType, StringType, TimestampType

    return {"string": StringType(), "int": IntegerType(), "timestamp": TimestampType()}[name]


def table_exists(spark: SparkSession, name: str) -> bool:
    return bool(spark._jsparkSession.catalog().tableExists(name))


@dataclass(frozen=True)
class LakeSchema:
    """The schema the window's rows are written with, per table, after any evolution."""

    changes: StructType
    current: StructType


def ensure_tables(spark: SparkSession, job: ExtractJob, data: StructType, primary_key: tuple[str, ...]) -> LakeSchema:
    """Create the pipeline's tables if missing and evolve them to take ``data``'s columns."""
    clash = sorted(RESERVED & {f.name for f in data.fields})
    if clash:
        raise ExtractionError(
            f"{job.context}: column(s) {', '.join(clash)} clash with the lake's own columns "
            f"({', '.join(sorted(RESERVED))}) — rename them with a rename transform in {CONFIG_FILE}"
        )
    lake = job.lake
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {lake.catalog}.{quote_identifier(lake.namespace)}")
    identity = {
        "spotlake.pipeline": job.pipeline,
        "spotlake.source": job.qualified_table,
        "spotlake.primary-key": ",".join(primary_key),
    }
    _create(
        spark,
        lake.changes_table,
        with_meta(data, CHANGE_COLUMNS),
        "PARTITIONED BY (days(_extracted_at))",
        {**TABLE_PROPERTIES, **identity, "spotlake.role": "changes"},
    )
    if _create(
        spark,
        lake.current_table,
        with_meta(data, CURRENT_COLUMNS),
        "",
        {**TABLE_PROPERTIES, **identity, "spotlake.role": "current"},
    ):
        ordered = ", ".join(quote_identifier(c) for c in primary_key)
        spark.sql(f"ALTER TABLE {lake.current_table} WRITE LOCALLY ORDERED BY {ordered}")
    return LakeSchema(
        changes=evolve(spark, job, lake.changes_table, with_meta(data, CHANGE_COLUMNS)),
        current=evolve(spark, job, lake.current_table, with_meta(data, CURRENT_COLUMNS)),
    )


def _create(spark: SparkSession, name: str, schema: StructType, partitioning: str, properties: Mapping[str, str]) -> bool:
    if table_exists(spark, name):
        return False
    props = ", ".join(f"{_literal(k)}={_literal(v)}" for k, v in properties.items())
    spark.sql(f"CREATE TABLE IF NOT EXISTS {name} ({ddl_columns(schema)}) USING iceberg {partitioning} TBLPROPERTIES ({props})")
    return True


def _literal(text: str) -> str:
    """A Spark SQL string literal (a key column's name may hold a quote)."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored(kind: DataType) -> DataType:
    """The Spark type a column of type ``kind`` has once in an Iceberg table (which has no
    byte or short integers)."""
    return IntegerType() if isinstance(kind, (ByteType, ShortType)) else kind


def widens(old: DataType, new: DataType) -> bool:
    """Whether Iceberg can promote a column of type ``old`` to ``new`` in place."""
    if isinstance(old, IntegerType) and isinstance(new, LongType):
        return True
    if isinstance(old, FloatType) and isinstance(new, DoubleType):
        return True
    return (
        isinstance(old, DecimalType) and isinstance(new, DecimalType) and new.scale == old.scale and new.precision > old.precision
    )


def evolve(spark: SparkSession, job: ExtractJob, name: str, wanted: StructType) -> StructType:
    """Add the columns of ``wanted`` the table lacks and widen the ones it needs wider; refuse any
    other type change (a narrowed or different type): Iceberg cannot make it in place, and
    writing on would hide it. Returns the table's schema afterwards. A column the source
    dropped stays in the table (new rows hold NULL there)."""
    have = {f.name.lower(): f for f in spark.table(name).schema.fields}
    changed = False
    for field in wanted.fields:
        current = have.get(field.name.lower())
        if current is None:
            spark.sql(f"ALTER TABLE {name} ADD COLUMN {quote_identifier(field.name)} {field.dataType.simpleString()}")
            changed = True
        elif stored(field.dataType) == current.dataType:
            continue
        elif widens(current.dataType, stored(field.dataType)):
            spark.sql(f"ALTER TABLE {name} ALTER COLUMN {quote_identifier(current.name)} TYPE {field.dataType.simpleString()}")
            changed = True
        else:
            raise DataError(
                f"{job.context}: column '{field.name}' is {field.dataType.simpleString()} in the source (after "
                f"transforms) but {current.dataType.simpleString()} in the lake table {name}; Iceberg can only "
                "widen a column in place (int→bigint, float→double, a decimal's precision up at the same "
                "scale), so the pipeline stops here and nothing was committed — fix: add `cast: {"
                f'{field.name}: "{current.dataType.simpleString()}"}}` to the pipeline\'s transforms in '
                f"{CONFIG_FILE} if every value fits, or load the table under a new pipeline name"
            )
    return spark.table(name).schema if changed else StructType(list(have.values()))


# ----------------------------------------------------------------- commits
class _Callable:
    """A ``java.util.concurrent.Callable`` implemented in Python, for py4j."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.error: BaseException | None = None

    def call(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller with its Python type
            self.error = exc
        return None

    class Java:
        implements = ["java.util.concurrent.Callable"]


def with_commit_properties(spark: SparkSession, properties: Mapping[str, str], fn: Callable[[], Any]) -> None:
    """Run ``fn`` (e.g. a ``MERGE INTO``) so that its Iceberg commit carries ``properties`` in its
    snapshot summary (Iceberg's ``CommitMetadata``; SQL has no option for it)."""
    from pyspark.java_gateway import ensure_callback_server_started

    gateway = spark.sparkContext._gateway
    ensure_callback_server_started(gateway)
    jvm = driver_jvm(spark)
    java_map = jvm.java.util.HashMap()
    for key, value in properties.items():
        java_map.put(key, value)
    call = _Callable(fn)
    jvm.org.apache.iceberg.spark.CommitMetadata.withCommitProperties(
        java_map, call, jvm.java.lang.Class.forName("java.lang.RuntimeException")
    )
    if call.error is not None:
        raise call.error


def commit_id() -> str:
    return uuid.uuid4().hex


def snapshot_with(spark: SparkSession, name: str, key: str, value: str, depth: int = 50) -> Any:
    """The newest snapshot of table ``name`` whose summary has ``key`` = ``value`` (None if none in
    the last ``depth``)."""
    table = driver_jvm(spark).org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)
    table.refresh()
    snapshot = table.currentSnapshot()
    for _ in range(depth):
        if snapshot is None:
            return None
        if snapshot.summary().get(key) == value:
            return snapshot
        parent = snapshot.parentId()
        snapshot = table.snapshot(parent) if parent is not None else None
    return None


def newest_snapshot_having(spark: SparkSession, name: str, key: str) -> Any:
    """The newest snapshot among the current one and its ancestors whose summary has ``key`` (None if none)."""
    table = driver_jvm(spark).org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)
    table.refresh()
    snapshot = table.currentSnapshot()
    while snapshot is not None:
        if snapshot.summary().get(key) is not None:
            return snapshot
        parent = snapshot.parentId()
        snapshot = table.snapshot(parent) if parent is not None else None
    return None


def current_snapshot(spark: SparkSession, name: str) -> Any:
    """The table's current snapshot (None if the table or a snapshot does not exist yet)."""
    if not table_exists(spark, name):
        return None
    table = driver_jvm(spark).org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)
    table.refresh()
    return table.currentSnapshot()


def live_rows(snapshot: Any) -> int | None:
    """Rows in the table at ``snapshot``: its records less its position deletes (merge-on-read).
    None when the summary cannot say: no record count, or more position deletes than records (delete
    files still counted after compaction rewrote the rows they point at: dangling deletes)."""
    if snapshot is None:
        return None
    summary = snapshot.summary()
    records = summary.get("total-records")
    deletes = int(summary.get("total-position-deletes") or "0")
    if records is None or deletes > int(records):
        return None
    return int(records) - deletes
