"""The extraction job document: what the Airflow operator sends, validated on parse.

The operator sends the document as ``--job <base64url(JSON)>`` (or a file with
``--job-file``). Every error names the pipeline and the field at fault, so the
operator can show it as is. Names that end up in SQL are checked against
:data:`IDENTIFIER` here and back-quoted where they are used; no other user text
ever reaches the source database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from spark_jobs.common.contract import IDENTIFIER, decode_job, decode_json, window_label
from spark_jobs.common.database_secret import DatabaseTls, Endpoint
from spark_jobs.common.errors import ExtractionError

if TYPE_CHECKING:
    from typing import TypeGuard  # Python 3.10+: annotations only (the jobs run on 3.9)

# A column name as MySQL allows it (reserved words, spaces, mixed case, any script): no back-quote,
# no control character, no space at either end, at most 64 characters. Always quoted where used.
COLUMN = re.compile(r"^(?=[^ ])[^`\x00-\x1f\x7f]{1,64}(?<=[^ ])$")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
TRANSFORM_OPS = ("select", "rename", "cast", "hash", "mask", "derive", "filter", "function")
KINDS = ("window", "snapshot", "reconcile")
CATALOG_TYPES = ("jdbc", "glue")
WAREHOUSE = re.compile(r"^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
CONFIG_FILE = "config/pipelines.yaml"
TIME_ZONE = re.compile(r"^([+-]\d{1,2}:\d{2}|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*)$")

UTC = timezone.utc


def is_identifier(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and IDENTIFIER.match(value) is not None


def is_column(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and COLUMN.match(value) is not None


def quote_identifier(name: str) -> str:
    """Back-quote a MySQL / Spark SQL name; doubles any back-quote inside it."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Window:
    """The run's window: rows with ``read_from <= cursor < end`` are read; ``start`` labels it."""

    start: datetime
    end: datetime
    read_from: datetime

    @property
    def label(self) -> str:
        """The window's partition label, e.g. ``20261127T140000Z``."""
        return window_label(self.start)

    def to_json(self) -> dict[str, str]:
        return {
            "start": self.start.astimezone(UTC).isoformat(),
            "end": self.end.astimezone(UTC).isoformat(),
            "read_from": self.read_from.astimezone(UTC).isoformat(),
        }


@dataclass(frozen=True)
class ReadOptions:
    fetch_size: int = 10000
    partition_rows: int = 250000
    max_partitions: int = 2
    chunk_rows: int = 250000  # rows per chunk of the initial snapshot
    window_chunk_s: int = 3600  # a window longer than this is read and committed in chunks
    time_zone: str | None = None  # the zone of the source's DATETIME values; None: the server's
    wait_for_open_transactions: bool = True  # stop windows before the oldest open transaction
    open_transaction_margin_s: float = 2.0  # ... minus this margin
    max_open_transaction_s: float = 1800.0  # a transaction open longer is not waited for


@dataclass(frozen=True)
class ReconcileOptions:
    """How a reconciliation compares the source with the lake (see :mod:`spark_jobs.extraction.reconcile`)."""

    chunk_rows: int = 200  # about this many rows per checksum bucket
    deletes: str = "remove"  # rows gone from the source: "remove" them, or "flag" them (soft_delete set)
    replica_secret_id: str | None = None  # read the checksums from this replica
    repair_rows: int = 20000  # at most this many keys re-read per commit


@dataclass(frozen=True)
class LakeTables:
    """Where the pipeline's lake tables live: an Iceberg catalog, namespace and two table names."""

    catalog: str
    type: str
    warehouse: str
    namespace: str
    current: str
    changes: str
    secret_id: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    endpoint: Endpoint = Endpoint()  # the catalog database, where its secret does not say

    @property
    def current_table(self) -> str:
        return f"{self.catalog}.{self.namespace}.{self.current}"

    @property
    def changes_table(self) -> str:
        return f"{self.catalog}.{self.namespace}.{self.changes}"


@dataclass(frozen=True)
class RegistryRef:
    """The registry's DynamoDB tables (``<prefix>-jobs``, ``<prefix>-extraction-log``) and region."""

    prefix: str
    region: str | None = None


@dataclass(frozen=True)
class CommitOptions:
    lease_s: float = 120.0  # the commit lock's lease, renewed while the attempt owns its job
    wait_s: float = 1800.0  # how long to wait for another attempt's commit before failing


@dataclass(frozen=True)
class TransformStep:
    """One transformation step; ``index`` counts from 1 as a reader of the YAML list does."""

    index: int
    op: str
    columns: Any = None
    condition: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return f"transform #{self.index} ({self.op})"


class JobDocument:
    """What every job document can be read from: ``--job`` (base64url JSON) or ``--job-file``."""

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def from_base64url(cls, text: str) -> Any:
        return cls.from_dict(decode_job(text, ExtractionError))

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_dict(decode_json(text, ExtractionError))


@dataclass(frozen=True)
class ExtractJob(JobDocument):
    job_key: str
    attempt: int
    run_id: str
    pipeline: str
    kind: str
    secret_id: str
    database: str
    table: str
    primary_key: tuple[str, ...]
    cursor: str
    soft_delete: str | None
    window: Window | None
    transforms: tuple[TransformStep, ...]
    lake: LakeTables
    registry: RegistryRef
    read: ReadOptions
    commit: CommitOptions = CommitOptions()
    reconcile: ReconcileOptions = ReconcileOptions()
    source_endpoint: Endpoint = Endpoint()  # host, port, database where the source secret does not say
    source_tls: DatabaseTls = DatabaseTls()  # how the JDBC connections to the source use TLS

    @property
    def label(self) -> str:
        """The job's window label (the part of its job key after ``#``), ``snapshot`` for the initial load."""
        return self.job_key.rpartition("#")[2]

    @property
    def qualified_table(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def context(self) -> str:
        """How errors name this job: ``pipeline shop_orders (shop.orders)``."""
        return f"pipeline {self.pipeline} ({self.qualified_table})"

    @classmethod
    def from_dict(cls, data: Any) -> ExtractJob:
        return _JobParser(data).parse()


class _JobParser:
    """Parses one job document; errors name the pipeline (once known) and the field."""

    TOP_KEYS = frozenset(
        {
            "job_key",
            "attempt",
            "run_id",
            "pipeline",
            "source",
            "database",
            "table",
            "primary_key",
            "cursor",
            "soft_delete",
            "kind",
            "window",
            "transforms",
            "lake",
            "registry",
            "read",
            "reconcile",
            "commit",
        }
    )

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise ExtractionError(f"job: the job document must be a JSON object, got {type(data).__name__}")
        self.data = data
        self.who = "job"

    def fail(self, field: str, problem: str) -> ExtractionError:
        return ExtractionError(f"{self.who}: job field '{field}' {problem}")

    def parse(self) -> ExtractJob:
        data = self.data
        pipeline = data.get("pipeline")
        if not isinstance(pipeline, str) or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", pipeline):
            raise self.fail("pipeline", f"must be a pipeline name (letters, digits, _ . -), got {pipeline!r}")
        self.who = f"pipeline {pipeline}"
        self.unknown_keys(data, self.TOP_KEYS, "")
        job_key = self.text(data, "job_key")
        attempt = data.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise self.fail("attempt", f"must be an integer >= 1, got {attempt!r}")
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise self.fail("run_id", f"must be 1-64 letters, digits, _ or - (a uuid hex), got {run_id!r}")
        source = self.section(data, "source", required=True)
        self.unknown_keys(source, {"secret_id", "endpoint", "tls"}, "source.")
        primary_key = data.get("primary_key")
        if not isinstance(primary_key, list) or not primary_key:
            raise self.fail("primary_key", f"must be a non-empty list of column names, got {primary_key!r}")
        for i, col in enumerate(primary_key):
            self.column(col, f"primary_key[{i}]")
        if len(set(primary_key)) != len(primary_key):
            raise self.fail("primary_key", f"names a column twice: {primary_key}")
        soft_delete = data.get("soft_delete")
        kind = data.get("kind", "window")
        if kind not in KINDS:
            raise self.fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        if "#" not in job_key:
            raise self.fail("job_key", f"must be <pipeline>#<window label>, got {job_key!r}")
        return ExtractJob(
            job_key=job_key,
            attempt=attempt,
            run_id=run_id,
            pipeline=pipeline,
            kind=kind,
            secret_id=self.text(source, "secret_id", "source."),
            source_endpoint=Endpoint.parse(source.get("endpoint"), "source.endpoint", self.fail),
            source_tls=DatabaseTls.parse(source.get("tls"), "source.tls", self.fail),
            database=self.identifier(data.get("database"), "database"),
            table=self.identifier(data.get("table"), "table"),
            primary_key=tuple(primary_key),
            cursor=self.column(data.get("cursor"), "cursor"),
            soft_delete=None if soft_delete is None else self.column(soft_delete, "soft_delete"),
            window=self.window(self.section(data, "window", required=True)) if kind == "window" else None,
            transforms=self.transforms(data.get("transforms", [])),
            lake=self.lake(self.section(data, "lake", required=True)),
            registry=self.registry(self.section(data, "registry", required=True)),
            read=self.read(self.section(data, "read", required=False)),
            commit=self.commit(self.section(data, "commit", required=False)),
            reconcile=self.reconcile(self.section(data, "reconcile", required=False), soft_delete),
        )

    # ------------------------------------------------------------------ fields
    def section(self, data: Mapping[str, Any], key: str, required: bool) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a JSON object, got {value!r}")
        return value

    def unknown_keys(self, data: Mapping[str, Any], allowed: Any, prefix: str) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed))
            raise self.fail(prefix + unknown[0], f"is not part of the job contract; known fields: {known}")

    def text(self, data: Mapping[str, Any], key: str, prefix: str = "") -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(prefix + key, f"must be a non-empty string, got {value!r}")
        return value

    def identifier(self, value: Any, field: str) -> str:
        if not is_identifier(value):
            raise self.fail(
                field,
                f"must be an identifier (letters, digits, _ and $, not starting with a digit), "
                f"got {value!r}; names are quoted, never spliced into SQL — fix it in {CONFIG_FILE}",
            )
        return value

    def column(self, value: Any, field: str) -> str:
        if not is_column(value):
            raise self.fail(
                field,
                f"must be a column name (no back-quote or control character, no space at either end, at most 64 "
                f"characters), got {value!r} — fix it in {CONFIG_FILE}",
            )
        return value

    def timestamp(self, data: Mapping[str, Any], key: str) -> datetime:
        value = data.get(key)
        field = f"window.{key}"
        if not isinstance(value, str):
            raise self.fail(field, f"must be an ISO-8601 timestamp string with a UTC offset, got {value!r}")
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise self.fail(
                field,
                f"must be an ISO-8601 timestamp with a UTC offset, e.g. 2026-11-27T14:00:00+00:00, got {value!r}",
            )
        return parsed.astimezone(UTC)

    def window(self, data: Mapping[str, Any]) -> Window:
        self.unknown_keys(data, {"start", "end", "read_from"}, "window.")
        start, end = self.timestamp(data, "start"), self.timestamp(data, "end")
        read_from = self.timestamp(data, "read_from") if "read_from" in data else start
        if not start < end:
            raise self.fail("window", f"start {start.isoformat()} must be before end {end.isoformat()}")
        if read_from > start:
            raise self.fail("window.read_from", f"{read_from.isoformat()} must not be after start {start.isoformat()}")
        return Window(start=start, end=end, read_from=read_from)

    def lake(self, data: Mapping[str, Any]) -> LakeTables:
        catalog = self.catalog(data, "lake.", ("current", "changes"))
        return LakeTables(
            **catalog,
            current=self.identifier(data.get("current"), "lake.current"),
            changes=self.identifier(data.get("changes"), "lake.changes"),
        )

    def catalog(self, data: Mapping[str, Any], prefix: str, tables: tuple[str, ...]) -> dict[str, Any]:
        """The catalog fields of a ``lake`` section (all but its table names ``tables``), as
        keyword arguments of :class:`LakeTables` (the click stream's lake section has the same)."""
        keys = {"catalog", "type", "warehouse", "namespace", "secret_id", "properties", "endpoint", *tables}
        self.unknown_keys(data, keys, prefix)
        kind = data.get("type")
        if kind not in CATALOG_TYPES:
            raise self.fail(f"{prefix}type", f"must be one of {', '.join(CATALOG_TYPES)}, got {kind!r}")
        warehouse = self.text(data, "warehouse", prefix).rstrip("/")
        if not WAREHOUSE.match(warehouse):
            raise self.fail(f"{prefix}warehouse", f"must be an S3 location such as s3://bucket/warehouse, got {warehouse!r}")
        secret_id = data.get("secret_id")
        if kind == "jdbc" and (not isinstance(secret_id, str) or not secret_id.strip()):
            raise self.fail(f"{prefix}secret_id", "must name the Secrets Manager secret of the JDBC catalog's database")
        properties = data.get("properties") or {}
        if not isinstance(properties, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
            raise self.fail(f"{prefix}properties", f"must map catalog property names to strings, got {properties!r}")
        return {
            "catalog": self.identifier(data.get("catalog"), f"{prefix}catalog"),
            "type": kind,
            "warehouse": warehouse,
            "namespace": self.identifier(data.get("namespace"), f"{prefix}namespace"),
            "secret_id": secret_id if kind == "jdbc" else None,
            "properties": tuple(sorted(properties.items())),
            "endpoint": Endpoint.parse(data.get("endpoint"), f"{prefix}endpoint", self.fail),
        }

    def registry(self, data: Mapping[str, Any]) -> RegistryRef:
        self.unknown_keys(data, {"prefix", "region"}, "registry.")
        region = data.get("region")
        if region is not None and (not isinstance(region, str) or not REGION.match(region)):
            raise self.fail("registry.region", f"must be an AWS region such as eu-west-1, got {region!r}")
        prefix = self.text(data, "prefix", "registry.")
        if not re.match(r"^[A-Za-z0-9_.-]{1,200}$", prefix):
            raise self.fail("registry.prefix", f"must be letters, digits, _ . or -, got {prefix!r}")
        return RegistryRef(prefix=prefix, region=region)

    def commit(self, data: Mapping[str, Any]) -> CommitOptions:
        self.unknown_keys(data, {"lease_s", "wait_s"}, "commit.")
        values: dict[str, float] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise self.fail(f"commit.{key}", f"must be a positive number of seconds, got {value!r}")
            values[key] = float(value)
        return CommitOptions(**values)

    def reconcile(self, data: Mapping[str, Any], soft_delete: Any) -> ReconcileOptions:
        self.unknown_keys(data, {"chunk_rows", "deletes", "replica_secret_id", "repair_rows"}, "reconcile.")
        for key in ("chunk_rows", "repair_rows"):
            value = data.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise self.fail(f"reconcile.{key}", f"must be a positive integer, got {value!r}")
        deletes = data.get("deletes", "remove")
        if deletes not in ("remove", "flag"):
            raise self.fail("reconcile.deletes", f"must be remove or flag, got {deletes!r}")
        if deletes == "flag" and not soft_delete:
            raise self.fail(
                "reconcile.deletes",
                "is flag, which sets the pipeline's soft_delete column; the "
                "pipeline has none — set soft_delete, or deletes: remove",
            )
        replica = data.get("replica_secret_id")
        if replica is not None and (not isinstance(replica, str) or not replica):
            raise self.fail("reconcile.replica_secret_id", f"must be a secret name, got {replica!r}")
        return ReconcileOptions(**dict(data))

    def read(self, data: Mapping[str, Any]) -> ReadOptions:
        integers = {"fetch_size", "partition_rows", "max_partitions", "chunk_rows", "window_chunk_s"}
        seconds = {"open_transaction_margin_s", "max_open_transaction_s"}
        self.unknown_keys(data, integers | seconds | {"time_zone", "wait_for_open_transactions"}, "read.")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "time_zone":
                if value is not None and (not isinstance(value, str) or not TIME_ZONE.match(value)):
                    raise self.fail("read.time_zone", f"must be an offset (+05:30) or an IANA zone name, got {value!r}")
            elif key == "wait_for_open_transactions":
                if not isinstance(value, bool):
                    raise self.fail(f"read.{key}", f"must be true or false, got {value!r}")
            elif key in seconds:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise self.fail(f"read.{key}", f"must be a number of seconds >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise self.fail(f"read.{key}", f"must be a positive integer, got {value!r}")
            values[key] = value
        return ReadOptions(**values)

    # -------------------------------------------------------------- transforms
    def transforms(self, raw: Any) -> tuple[TransformStep, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail("transforms", f"must be a list of transform steps, got {raw!r}")
        return tuple(self.transform(i + 1, step) for i, step in enumerate(raw))

    def transform(self, index: int, step: Any) -> TransformStep:
        field = f"transforms #{index}"
        if not isinstance(step, dict) or step.get("op") not in TRANSFORM_OPS:
            op = step.get("op") if isinstance(step, dict) else step
            raise self.fail(field, f"has unknown op {op!r}; use one of {', '.join(TRANSFORM_OPS)}")
        op = step["op"]
        field = f"{field} ({op})"
        if op == "filter":
            self.unknown_keys(step, {"op", "condition"}, f"{field}: ")
            return TransformStep(index, op, condition=self.text(step, "condition", f"{field}: "))
        if op == "function":
            self.unknown_keys(step, {"op", "name"}, f"{field}: ")
            name = step.get("name")
            if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                raise self.fail(
                    f"{field}: name",
                    f"must be a registered function name such as 'shop.normalise_email', got {name!r}",
                )
            return TransformStep(index, op, name=name)
        self.unknown_keys(step, {"op", "columns"}, f"{field}: ")
        columns = step.get("columns")
        if op in ("select", "hash"):
            return TransformStep(index, op, columns=self.column_list(columns, f"{field}: columns"))
        mapping = self.column_mapping(columns, f"{field}: columns")
        if op == "rename":
            targets = [self.column(new, f"{field}: columns.{old}") for old, new in mapping.items()]
            if len(set(targets)) != len(targets):
                raise self.fail(f"{field}: columns", f"renames two columns to the same name: {mapping}")
        elif op == "mask":
            mapping = {c: self.mask_options(opts, f"{field}: columns.{c}") for c, opts in mapping.items()}
        else:  # cast, derive: a type or an expression per column
            for col, value in mapping.items():
                if not isinstance(value, str) or not value.strip():
                    what = "a Spark type such as decimal(12,2)" if op == "cast" else "a Spark SQL expression"
                    raise self.fail(f"{field}: columns.{col}", f"must be {what}, got {value!r}")
        return TransformStep(index, op, columns=mapping)

    def column_list(self, value: Any, field: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(field, f"must be a non-empty list of column names, got {value!r}")
        names = tuple(self.column(col, f"{field}[{i}]") for i, col in enumerate(value))
        if len(set(names)) != len(names):
            raise self.fail(field, f"names a column twice: {list(names)}")
        return names

    def column_mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            raise self.fail(field, f"must be a non-empty mapping of column name to value, got {value!r}")
        for col in value:
            self.column(col, f"{field} key")
        return dict(value)

    def mask_options(self, opts: Any, field: str) -> dict[str, int]:
        opts = {} if opts is None else opts
        if not isinstance(opts, dict) or set(opts) - {"keep_last"}:
            raise self.fail(field, f'must be {{"keep_last": N}}, got {opts!r}')
        keep = opts.get("keep_last", 0)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise self.fail(f"{field}.keep_last", f"must be an integer >= 0, got {keep!r}")
        return {"keep_last": keep}


def sql_timestamp(moment: datetime) -> str:
    """A window bound as the job writes it into SQL: UTC wall clock with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class MaintenanceOptions:
    snapshot_retention_s: float = 86400.0
    retain_last: int = 10
    orphan_age_s: float = 3 * 86400.0
    target_file_size_mb: int = 128


@dataclass(frozen=True)
class MaintenanceJob(JobDocument):
    job_key: str
    attempt: int
    run_id: str
    pipeline: str
    lake: LakeTables
    registry: RegistryRef
    options: MaintenanceOptions
    commit: CommitOptions = CommitOptions()
    # A click stream's tables (``lake.current``: its events, ``lake.changes``: its dead letters):
    # appended by the stream's micro-batches, which compaction does not conflict with, so no lock.
    stream: str | None = None

    @property
    def context(self) -> str:
        if self.stream is not None:
            return f"stream {self.stream} (maintenance)"
        return f"pipeline {self.pipeline} (maintenance)"

    @classmethod
    def from_dict(cls, data: Any) -> MaintenanceJob:
        parser = _JobParser(data)
        parser.who = f"pipeline {data.get('pipeline')}"
        parser.unknown_keys(
            data, {"job_key", "attempt", "run_id", "pipeline", "lake", "registry", "maintenance", "commit", "stream"}, ""
        )
        stream = data.get("stream")
        if stream is not None and (not isinstance(stream, str) or not is_identifier(stream)):
            raise parser.fail("stream", f"must be a stream name, got {stream!r}")
        attempt = data.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise parser.fail("attempt", f"must be an integer >= 1, got {attempt!r}")
        options = parser.section(data, "maintenance", required=False)
        parser.unknown_keys(
            options, {"snapshot_retention_s", "retain_last", "orphan_age_s", "target_file_size_mb"}, "maintenance."
        )
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise parser.fail(f"maintenance.{key}", f"must be a number >= 0, got {value!r}")
        return cls(
            job_key=parser.text(data, "job_key"),
            attempt=attempt,
            run_id=parser.text(data, "run_id"),
            pipeline=parser.text(data, "pipeline"),
            lake=parser.lake(parser.section(data, "lake", required=True)),
            registry=parser.registry(parser.section(data, "registry", required=True)),
            options=MaintenanceOptions(**options),
            commit=parser.commit(parser.section(data, "commit", required=False)),
            stream=stream,
        )
