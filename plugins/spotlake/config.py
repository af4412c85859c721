"""Pipeline configuration: ``config/pipelines.yaml`` validated into dataclasses.

Every error names the file, the entry and the fix. Table and column names must
be identifiers; they are quoted by the Spark job and never spliced into SQL as
free text.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter

from spark_jobs.common.contract import IDENTIFIER
from spark_jobs.common.database_secret import DatabaseTls, Endpoint
from spotlake.errors import ConfigError

COLUMN = re.compile(r"^(?=[^ ])[^`\x00-\x1f\x7f]{1,64}(?<=[^ ])$")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "pipelines.yaml"
CAST_TYPE = re.compile(r"^[a-z]+(\(\s*\d+\s*(,\s*\d+\s*)?\))?$")

DEFAULTS_KEYS = {"schedule", "lookback", "pool", "read", "start_date", "retries", "reconcile", "stale_after", "owner"}
SOURCE_KEYS = {"secret_id", "replica_secret_id", "host", "port", "database", "tls"}
ENDPOINT_KEYS = ("host", "port", "database")  # where the database is when its secret does not say
RECONCILE_KEYS = {"enabled", "schedule", "chunk_rows", "deletes"}
READ_KEYS = {"fetch_size", "partition_rows", "max_partitions", "snapshot_chunk_rows"}
READ_DURATIONS = {"max_window", "open_transaction_margin", "max_open_transaction"}
TIME_ZONE = re.compile(r"^([+-]\d{1,2}:\d{2}|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*)$")
LAKE_KEYS = {"catalog", "type", "warehouse", "namespace", "secret_id", "properties", "maintenance", *ENDPOINT_KEYS}
MAINTENANCE_KEYS = {"schedule", "pool", "max_active", "snapshot_retention", "retain_last", "orphan_age", "target_file_size_mb"}
CATALOG_TYPES = ("jdbc", "glue")
WAREHOUSE = re.compile(r"^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_./-]*)?$")
CHANGES_SUFFIX = "_changes"
TRANSFORM_OPS = ("select", "rename", "cast", "hash", "mask", "derive", "filter", "function")
# The Airflow owner of a DAG (its tasks' ``owner``): a team or a person, as the UI's Owner column shows it.
DEFAULT_OWNER = "data-platform"
OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._@+-]{0,98}[A-Za-z0-9._@+-])?$")


def extraction_dag_id(pipeline: str) -> str:
    """The DAG of a pipeline's windows (``extract_<pipeline>``)."""
    return f"extract_{pipeline}"


def config_path() -> Path:
    return Path(os.environ.get("SPOTLAKE_PIPELINES", DEFAULT_CONFIG))


@functools.lru_cache(maxsize=256)
def schedule_interval(schedule: str) -> timedelta:
    """Length of one interval of the cron expression ``schedule`` (two consecutive fire times)."""
    it = croniter(schedule, start_time=0)
    first = it.get_next(float)
    return timedelta(seconds=it.get_next(float) - first)


def parse_duration(value: Any, where: str) -> timedelta:
    """``"5m"``, ``"90s"``, ``"1h"`` or an integer number of seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = DURATION.match(str(value).strip())
    if not match:
        raise ConfigError(f"{where}: '{value}' is not a duration; write e.g. 90s, 5m, 1h or 1d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def column_name(value: Any, where: str) -> str:
    """A column name as MySQL allows it (reserved words, spaces, mixed case): always quoted where used."""
    if not isinstance(value, str) or not COLUMN.match(value):
        raise ConfigError(
            f"{where}: {value!r} is not a column name (no back-quote or control character, no space at either end, "
            "at most 64 characters) — fix the name"
        )
    return value


def owner(value: Any, where: str) -> str:
    """The owner of the DAGs an entry builds: one name (a team, a person or an email address)."""
    if not isinstance(value, str) or not OWNER.match(value):
        raise ConfigError(
            f"{where}: {value!r} is not an owner; write the one team or person who answers for these DAGs "
            f"(letters, digits, space, . _ @ + -, at most 100 characters, no comma), e.g. {DEFAULT_OWNER}"
        )
    return value


def identifier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(
            f"{where}: {value!r} is not a valid identifier (letters, digits, _ and $, not starting "
            "with a digit); names are quoted, never spliced into SQL — fix the name"
        )
    return value


@dataclass(frozen=True)
class Transform:
    """One transformation step, as sent to the Spark job."""

    op: str
    spec: dict[str, Any]

    def to_job(self) -> dict[str, Any]:
        return {"op": self.op, **self.spec}


@dataclass(frozen=True)
class Source:
    name: str
    secret_id: str
    replica_secret_id: str | None = None  # reconciliation reads its checksums from this replica
    # host, port, database of an RDS-managed master secret (it holds only username and password)
    endpoint: Endpoint = field(default_factory=Endpoint)
    tls: DatabaseTls = field(default_factory=DatabaseTls)  # auto: plain on loopback, VERIFY_IDENTITY elsewhere

    def to_job(self) -> dict[str, Any]:
        """The ``source`` section of a job document."""
        doc: dict[str, Any] = {"secret_id": self.secret_id, "tls": self.tls.to_job()}
        if self.endpoint.to_job():
            doc["endpoint"] = self.endpoint.to_job()
        return doc


@dataclass(frozen=True)
class Reconcile:
    """A pipeline's reconciliation (its ``reconcile_<name>`` DAG; see spark_jobs/extraction/reconcile.py)."""

    enabled: bool = True
    schedule: str = "30 * * * *"
    chunk_rows: int = 200
    deletes: str = "remove"  # or "flag": set the soft_delete column

    def to_job(self, source: Source) -> dict[str, Any]:
        doc: dict[str, Any] = {"chunk_rows": self.chunk_rows, "deletes": self.deletes}
        if source.replica_secret_id:
            doc["replica_secret_id"] = source.replica_secret_id
        return doc


@dataclass(frozen=True)
class Maintenance:
    """The lake's table maintenance (the ``lake_maintenance`` DAG)."""

    schedule: str = "0 3 * * *"
    pool: str = "small"
    # Maintenance jobs at once: each holds one of its pool's slots, the others stay with the windows.
    max_active: int = 1
    # Snapshots younger than this are kept, so a reader that planned its scan on one never
    # finds its files gone; longer than any query or backfill that reads the lake.
    snapshot_retention: timedelta = timedelta(days=1)
    retain_last: int = 10
    # A file no snapshot references is deleted only when older than this (an attempt that is
    # still writing has younger files).
    orphan_age: timedelta = timedelta(days=3)
    target_file_size_mb: int = 128


@dataclass(frozen=True)
class Lake:
    """The lake's Iceberg catalog: AWS Glue in production, a JDBC catalog on PostgreSQL locally."""

    catalog: str = "lake"
    type: str = "jdbc"
    warehouse: str = "s3://spotlake-lake/warehouse"
    namespace: str = "raw"
    secret_id: str | None = "spotlake/postgres/lake-catalog"
    properties: dict[str, str] = field(default_factory=dict)
    maintenance: Maintenance = field(default_factory=Maintenance)
    endpoint: Endpoint = field(default_factory=Endpoint)  # the JDBC catalog's database, where its secret does not say

    def to_job(self, pipeline: Pipeline) -> dict[str, Any]:
        """The ``lake`` section of a job document for ``pipeline``."""
        return {**self.to_job_catalog(), "current": pipeline.current_table, "changes": pipeline.changes_table}

    def to_job_catalog(self) -> dict[str, Any]:
        """The catalog fields of a job document's ``lake`` section (the namespace: the pipelines')."""
        doc: dict[str, Any] = {
            "catalog": self.catalog,
            "type": self.type,
            "warehouse": self.warehouse,
            "namespace": self.namespace,
        }
        if self.type == "jdbc":
            doc["secret_id"] = self.secret_id
            if self.endpoint.to_job():
                doc["endpoint"] = self.endpoint.to_job()
        if self.properties:
            doc["properties"] = dict(self.properties)
        return doc

    def qualified(self, table: str) -> str:
        return f"{self.catalog}.{self.namespace}.{table}"

    def table_location(self, table: str, namespace: str | None = None) -> str:
        """Where Iceberg keeps ``table`` (data and metadata files): the location its catalog gives a
        table created without one, as spotlake's jobs create them. A JDBC catalog puts it at
        ``<warehouse>/<namespace>/<table>``; AWS Glue at ``<warehouse>/<namespace>.db/<table>`` (a Glue
        database spotlake creates has no location of its own)."""
        folder = namespace or self.namespace
        return f"{self.warehouse}/{folder}.db/{table}" if self.type == "glue" else f"{self.warehouse}/{folder}/{table}"


@dataclass(frozen=True)
class Pipeline:
    name: str
    source: Source
    database: str
    table: str
    primary_key: tuple[str, ...]
    cursor: str
    schedule: str
    lookback: timedelta
    pool: str
    soft_delete: str | None = None
    transforms: tuple[Transform, ...] = ()
    read: dict[str, Any] = field(default_factory=dict)
    start_date: str = "2026-01-01T00:00:00+00:00"
    retries: int = 2
    initial_load: bool = True
    reconcile: Reconcile = field(default_factory=Reconcile)
    # How old the committed watermark may grow before the tables count as stale (None: two
    # schedule intervals, see spotlake.freshness.stale_after).
    stale_after: timedelta | None = None
    owner: str = DEFAULT_OWNER

    @property
    def interval(self) -> timedelta:
        """Length of one schedule interval (from two consecutive cron fire times)."""
        return schedule_interval(self.schedule)

    @property
    def dag_id(self) -> str:
        return extraction_dag_id(self.name)

    @property
    def current_table(self) -> str:
        """The lake's current-state table of this pipeline (one row per primary key)."""
        return self.name

    @property
    def changes_table(self) -> str:
        """The lake's changes table (every row version read)."""
        return f"{self.name}{CHANGES_SUFFIX}"

    @property
    def max_window(self) -> timedelta:
        return timedelta(seconds=int(self.read.get("max_window", 3600)))

    def read_job(self) -> dict[str, Any]:
        """The ``read`` section of a job document."""
        doc = {
            k: v
            for k, v in self.read.items()
            if k in ("fetch_size", "partition_rows", "max_partitions", "time_zone", "wait_for_open_transactions")
        }
        if "snapshot_chunk_rows" in self.read:
            doc["chunk_rows"] = self.read["snapshot_chunk_rows"]
        for key in ("open_transaction_margin", "max_open_transaction"):
            if key in self.read:
                doc[f"{key}_s"] = self.read[key]
        doc["window_chunk_s"] = int(self.max_window.total_seconds())
        return doc


@dataclass(frozen=True)
class PipelinesConfig:
    path: Path
    lake: Lake
    pipelines: tuple[Pipeline, ...]
    owner: str = DEFAULT_OWNER  # defaults.owner: the lake_maintenance DAG's, and each pipeline's unless it sets one

    def asset_uri(self, pipeline: Pipeline) -> str:
        """The Airflow Asset of a pipeline's current-state table."""
        return f"iceberg://{self.lake.catalog}/{self.lake.namespace}/{pipeline.current_table}"

    def get(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise ConfigError(f"{self.path}: no pipeline named '{name}'; known: {', '.join(p.name for p in self.pipelines)}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _unknown_keys(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(sorted(allowed))}")


def _columns_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of column names")
    return [column_name(v, where) for v in value]


def _reconcile(raw: dict[str, Any], where: str, soft_delete: Any, transforms: list[Any]) -> Reconcile:
    _unknown_keys(raw, RECONCILE_KEYS, where)
    base = Reconcile()
    enabled = raw.get("enabled", not any(isinstance(t, dict) and "filter" in t for t in transforms))
    schedule = str(raw.get("schedule", base.schedule))
    chunk_rows = raw.get("chunk_rows", base.chunk_rows)
    deletes = raw.get("deletes", base.deletes)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
    if not croniter.is_valid(schedule):
        raise ConfigError(f"{where}.schedule: '{schedule}' is not a cron expression; e.g. '30 * * * *' (hourly)")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"{where}.chunk_rows: expected a positive integer, got {chunk_rows!r}")
    if deletes not in ("remove", "flag"):
        raise ConfigError(f"{where}.deletes: expected remove or flag, got {deletes!r}")
    if deletes == "flag" and not soft_delete:
        raise ConfigError(
            f"{where}.deletes: flag sets the pipeline's soft_delete column, and it has none; set "
            "soft_delete or use deletes: remove"
        )
    if enabled and any(isinstance(t, dict) and "filter" in t for t in transforms):
        raise ConfigError(
            f"{where}: a pipeline with a filter step cannot be reconciled (a row the filter drops "
            "looks missing from the lake); set reconcile: {enabled: false} or filter when reading"
        )
    return Reconcile(enabled=enabled, schedule=schedule, chunk_rows=chunk_rows, deletes=deletes)


def _read_options(read: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``read`` section: counts, durations (stored as seconds), the source's time zone."""
    _unknown_keys(read, READ_KEYS | READ_DURATIONS | {"time_zone", "wait_for_open_transactions"}, where)
    out: dict[str, Any] = {}
    for key, value in read.items():
        if key in READ_DURATIONS:
            span = parse_duration(value, f"{where}.{key}")
            if key == "max_window" and span < timedelta(minutes=1):
                raise ConfigError(f"{where}.max_window: {span} is too short; use at least 1m")
            out[key] = int(span.total_seconds())
        elif key == "time_zone":
            if not isinstance(value, str) or not TIME_ZONE.match(value):
                raise ConfigError(
                    f"{where}.time_zone: {value!r} is not an offset (+05:30) or an IANA zone name "
                    "(America/New_York): the zone the source's DATETIME values are written in"
                )
            out[key] = value
        elif key == "wait_for_open_transactions":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
            out[key] = value
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
        else:
            out[key] = value
    return out


def _transform(raw: Any, where: str, user_functions: set[str] | None) -> Transform:
    raw = _mapping(raw, where)
    if len(raw) != 1:
        raise ConfigError(f"{where}: a transform is a mapping with exactly one of {', '.join(TRANSFORM_OPS)}; got {sorted(raw)}")
    op, value = next(iter(raw.items()))
    if op in ("select", "hash"):
        return Transform(op, {"columns": _columns_list(value, f"{where}.{op}")})
    if op in ("rename", "cast", "mask", "derive"):
        value = _mapping(value, f"{where}.{op}")
        return Transform(
            op, {"columns": {column_name(col, f"{where}.{op}"): _column_value(op, col, v, where) for col, v in value.items()}}
        )
    if op == "filter":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.filter: expected a Spark SQL boolean expression string")
        return Transform(op, {"condition": value})
    if op == "function":
        return Transform(op, {"name": _function_name(value, where, user_functions)})
    raise ConfigError(f"{where}: unknown transform '{op}'; use one of {', '.join(TRANSFORM_OPS)}")


def _column_value(op: str, col: str, value: Any, where: str) -> Any:
    """The checked value of ``col`` in a rename, cast, mask or derive step."""
    if op == "rename":
        return column_name(value, f"{where}.rename")
    if op == "cast":
        if not isinstance(value, str) or not CAST_TYPE.match(value.strip().lower()):
            raise ConfigError(
                f"{where}.cast.{col}: {value!r} is not a Spark type such as "
                "int, bigint, double, string, timestamp or decimal(12,2)"
            )
        return value.strip().lower()
    if op == "mask":
        keep = (value or {}).get("keep_last", 0) if isinstance(value, dict) else None
        if not isinstance(keep, int) or keep < 0:
            raise ConfigError(f"{where}.mask.{col}: write {{keep_last: N}} with N >= 0")
        return {"keep_last": keep}
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.derive.{col}: expected a Spark SQL expression string")
    return value


def _function_name(value: Any, where: str, user_functions: set[str] | None) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}.function: expected the registered name of a transform function")
    if user_functions is not None and value not in user_functions:
        raise ConfigError(
            f"{where}.function: no transform function registered as '{value}'; registered: "
            f"{', '.join(sorted(user_functions)) or 'none'} — register it with "
            "@register('name') in spark_jobs/user_transforms/"
        )
    return value


def registered_functions() -> set[str] | None:
    """Names of the user transform functions, or ``None`` if pyspark is not importable here."""
    try:
        from spark_jobs import user_transforms
    except ImportError:
        return None
    return set(user_transforms.names())


def read_yaml(path: Path, missing: str) -> Any:
    """The YAML document of ``path``; a missing file or bad YAML is a ConfigError (``missing``: the fix)."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; {missing}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load(path: Path | None = None) -> PipelinesConfig:
    path = path or config_path()
    return parse(read_yaml(path, "create it (see docs/configuration.md)"), path)


def load_lake(path: Path | None = None) -> Lake:
    """Only the ``lake`` section of ``config/pipelines.yaml`` (the catalog the streams share)."""
    path = path or config_path()
    raw = read_yaml(path, "the streams' lake tables live in its lake catalog")
    return _lake(_mapping(raw or {}, str(path)).get("lake") or {}, f"{path}: lake")


def parse(raw: Any, path: Path) -> PipelinesConfig:
    where = str(path)
    raw = _mapping(raw, where)
    _unknown_keys(raw, {"defaults", "sources", "pipelines", "lake"}, where)
    defaults = _mapping(raw.get("defaults") or {}, f"{where}: defaults")
    _unknown_keys(defaults, DEFAULTS_KEYS, f"{where}: defaults")
    lake = _lake(raw.get("lake") or {}, f"{where}: lake")
    default_owner = owner(defaults.get("owner", DEFAULT_OWNER), f"{where}: defaults.owner")
    sources: dict[str, Source] = {}
    for name, entry in _mapping(raw.get("sources") or {}, f"{where}: sources").items():
        entry = _mapping(entry, f"{where}: sources.{name}")
        _unknown_keys(entry, SOURCE_KEYS, f"{where}: sources.{name}")
        if not entry.get("secret_id"):
            raise ConfigError(
                f"{where}: sources.{name}: set secret_id to the Secrets Manager secret "
                "holding host, port, database, username and password (or the RDS secret format)"
            )
        replica = entry.get("replica_secret_id")
        sources[name] = Source(
            name=name,
            secret_id=str(entry["secret_id"]),
            replica_secret_id=str(replica) if replica else None,
            endpoint=_endpoint(entry, f"{where}: sources.{name}"),
            tls=_tls(entry.get("tls"), f"{where}: sources.{name}.tls"),
        )
    entries = raw.get("pipelines")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'pipelines' must be a non-empty list of pipeline entries")
    user_functions = registered_functions()
    pipelines: list[Pipeline] = []
    for index, entry in enumerate(entries):
        pipelines.append(_pipeline(entry, f"{where}: pipelines[{index}]", defaults, sources, user_functions))
    names = [p.name for p in pipelines]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: pipeline name(s) {', '.join(dupes)} appear more than once; names must be unique")
    clashes = sorted(p.name for p in pipelines if p.name in {q.changes_table for q in pipelines})
    if clashes:
        raise ConfigError(
            f"{where}: pipeline name(s) {', '.join(clashes)} are the changes table of another pipeline "
            f"(<name>{CHANGES_SUFFIX}); rename them"
        )
    return PipelinesConfig(path=path, lake=lake, pipelines=tuple(pipelines), owner=default_owner)


def _lake(raw: Any, where: str) -> Lake:
    raw = _mapping(raw, where)
    _unknown_keys(raw, LAKE_KEYS, where)
    base = Lake()
    kind = str(raw.get("type", base.type))
    if kind not in CATALOG_TYPES:
        raise ConfigError(
            f"{where}.type: '{kind}' is not a catalog type; use jdbc (a JDBC catalog, e.g. "
            "PostgreSQL) or glue (the AWS Glue Data Catalog)"
        )
    warehouse = str(raw.get("warehouse", base.warehouse)).rstrip("/")
    if not WAREHOUSE.match(warehouse):
        raise ConfigError(f"{where}.warehouse: '{warehouse}' is not an S3 location; write s3://bucket/prefix")
    secret_id = raw.get("secret_id", base.secret_id if kind == "jdbc" else None)
    if kind == "jdbc" and not secret_id:
        raise ConfigError(
            f"{where}.secret_id: a jdbc catalog needs the Secrets Manager secret of its database "
            "(host, port, database, username, password)"
        )
    properties = _mapping(raw.get("properties") or {}, f"{where}.properties")
    return Lake(
        catalog=identifier(raw.get("catalog", base.catalog), f"{where}.catalog"),
        type=kind,
        warehouse=warehouse.replace("s3a://", "s3://", 1),
        namespace=identifier(raw.get("namespace", base.namespace), f"{where}.namespace"),
        secret_id=str(secret_id) if kind == "jdbc" else None,
        properties={str(k): str(v) for k, v in properties.items()},
        maintenance=_maintenance(raw.get("maintenance") or {}, f"{where}.maintenance"),
        endpoint=_endpoint(raw, where),
    )


def _endpoint(raw: Mapping[str, Any], where: str) -> Endpoint:
    """``host``, ``port`` and ``database`` beside a secret's name (for RDS-managed master secrets)."""

    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}.{field.rpartition('.')[2]}: {problem}")

    return Endpoint.parse({k: raw[k] for k in ENDPOINT_KEYS if k in raw}, "endpoint", fail)


def _tls(raw: Any, where: str) -> DatabaseTls:
    """A database's ``tls`` section (:class:`~spark_jobs.common.database_secret.DatabaseTls`)."""

    def fail(field: str, problem: str) -> ConfigError:
        key = field.partition(".")[2]
        return ConfigError(f"{where}{'.' + key if key else ''}: {problem}")

    tls = DatabaseTls.parse(raw, "tls", fail)
    if tls.ca_file:
        raise ConfigError(
            f"{where}.ca_file: the MySQL driver (Connector/J) reads no PEM file; name the truststore instead "
            "(truststore: /etc/pki/spotlake/db-truststore.p12, written by deploy/emr/install-db-ca.sh), or leave "
            "both out to verify against the JVM's default trust store"
        )
    return tls


def _maintenance(raw: Any, where: str) -> Maintenance:
    raw = _mapping(raw, where)
    _unknown_keys(raw, MAINTENANCE_KEYS, where)
    base = Maintenance()
    schedule = str(raw.get("schedule", base.schedule))
    if not croniter.is_valid(schedule):
        raise ConfigError(f"{where}.schedule: '{schedule}' is not a cron expression; e.g. '0 3 * * *' (daily, 03:00 UTC)")
    retention = parse_duration(raw.get("snapshot_retention", "1d"), f"{where}.snapshot_retention")
    orphan_age = parse_duration(raw.get("orphan_age", "3d"), f"{where}.orphan_age")
    if orphan_age < timedelta(hours=1):
        raise ConfigError(
            f"{where}.orphan_age: {orphan_age} is too short: a window still writing its files would lose "
            "them; use at least 1h (the default is 3d)"
        )
    retain_last = raw.get("retain_last", base.retain_last)
    size = raw.get("target_file_size_mb", base.target_file_size_mb)
    max_active = raw.get("max_active", base.max_active)
    for key, value in (("retain_last", retain_last), ("target_file_size_mb", size), ("max_active", max_active)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return Maintenance(
        schedule=schedule,
        pool=str(raw.get("pool", base.pool)),
        max_active=max_active,
        snapshot_retention=retention,
        retain_last=retain_last,
        orphan_age=orphan_age,
        target_file_size_mb=size,
    )


PIPELINE_KEYS = {
    "name",
    "source",
    "database",
    "table",
    "primary_key",
    "cursor",
    "soft_delete",
    "schedule",
    "lookback",
    "pool",
    "transforms",
    "read",
    "start_date",
    "retries",
    "initial_load",
    "reconcile",
    "stale_after",
    "owner",
}


def _pipeline(
    entry: Any, where: str, defaults: dict[str, Any], sources: dict[str, Source], user_functions: set[str] | None
) -> Pipeline:
    entry = _mapping(entry, where)
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be lower-case letters, digits and _ (got {name!r})")
    where = f"{where} ({name})"
    _unknown_keys(entry, PIPELINE_KEYS, where)
    for key in ("source", "database", "table", "primary_key", "cursor"):
        if key not in entry:
            raise ConfigError(f"{where}: missing required key '{key}'")
    source_name = entry["source"]
    if source_name not in sources:
        raise ConfigError(
            f"{where}: source '{source_name}' is not defined under 'sources'; defined: {', '.join(sources) or 'none'}"
        )
    pk = entry["primary_key"]
    pk_cols = tuple(_columns_list(pk if isinstance(pk, list) else [pk], f"{where}.primary_key"))
    schedule = str(entry.get("schedule", defaults.get("schedule", "*/5 * * * *")))
    if not croniter.is_valid(schedule):
        raise ConfigError(f"{where}.schedule: '{schedule}' is not a cron expression; e.g. '*/5 * * * *'")
    transforms = entry.get("transforms") or []
    if not isinstance(transforms, list):
        raise ConfigError(f"{where}.transforms: expected a list of transform steps")
    read = _read_options({**(defaults.get("read") or {}), **(entry.get("read") or {})}, f"{where}.read")
    pipeline = Pipeline(
        name=name,
        source=sources[source_name],
        database=identifier(entry["database"], f"{where}.database"),
        table=identifier(entry["table"], f"{where}.table"),
        primary_key=pk_cols,
        cursor=column_name(entry["cursor"], f"{where}.cursor"),
        soft_delete=column_name(entry["soft_delete"], f"{where}.soft_delete") if entry.get("soft_delete") else None,
        schedule=schedule,
        lookback=timedelta(0),
        pool=str(entry.get("pool", defaults.get("pool", "small"))),
        transforms=tuple(_transform(t, f"{where}.transforms[{i}]", user_functions) for i, t in enumerate(transforms)),
        read=read,
        start_date=str(entry.get("start_date", defaults.get("start_date", "2026-01-01T00:00:00+00:00"))),
        retries=int(entry.get("retries", defaults.get("retries", 2))),
        initial_load=bool(entry.get("initial_load", True)),
        reconcile=_reconcile(
            {**(defaults.get("reconcile") or {}), **(entry.get("reconcile") or {})},
            f"{where}.reconcile",
            entry.get("soft_delete"),
            transforms,
        ),
        owner=owner(entry.get("owner", defaults.get("owner", DEFAULT_OWNER)), f"{where}.owner"),
    )
    lookback_raw = entry.get("lookback", defaults.get("lookback"))
    lookback = pipeline.interval if lookback_raw is None else parse_duration(lookback_raw, f"{where}.lookback")
    if pipeline.interval < timedelta(minutes=1):
        raise ConfigError(f"{where}.schedule: runs more often than once a minute; the shortest interval is 1 minute")
    stale_raw = entry.get("stale_after", defaults.get("stale_after"))
    stale_after = None if stale_raw is None else parse_duration(stale_raw, f"{where}.stale_after")
    if stale_after is not None and stale_after < pipeline.interval:
        raise ConfigError(
            f"{where}.stale_after: {stale_raw} is shorter than the schedule's interval "
            f"({int(pipeline.interval.total_seconds() // 60)} min), so every table would look stale between two runs. "
            "Fix: at least one interval (the default is two)"
        )
    return Pipeline(**{**pipeline.__dict__, "lookback": lookback, "stale_after": stale_after})
