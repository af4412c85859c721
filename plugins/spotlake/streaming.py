"""Stream configuration: ``config/streaming.yaml`` validated into dataclasses.

Each stream names its Kafka topics, its PostgreSQL sink (a Secrets Manager secret
the Spark job resolves, and the schema it writes), its checkpoint, its Iceberg tables
(in the lake's catalog of ``config/pipelines.yaml``), and how it runs (trigger, window, watermark, late-event policy, restart
budget). Every error names the file, the stream, the key and the fix.

:meth:`StreamConfig.job_document` turns a stream into the document the Spark job
(``spark_jobs/clickstream/main.py``) receives; it carries the secret's name, never a
credential.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from spark_jobs.clickstream.kafka_security import KafkaSecurity
from spark_jobs.common.database_secret import DatabaseTls, Endpoint
from spotlake import config
from spotlake.config import DEFAULT_OWNER, NAME, _mapping, _unknown_keys, identifier, owner, parse_duration
from spotlake.errors import ConfigError
from spotlake.pools import PoolsConfig, provider_name

DEFAULT_STREAMS = Path(__file__).resolve().parents[2] / "config" / "streaming.yaml"
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
LATE_POLICIES = ("count", "divert")
MAX_TRIGGER = timedelta(seconds=30)
WINDOW_RANGE = (timedelta(seconds=1), timedelta(days=1))

SETTING_KEYS = {
    "pool",
    "kafka_conn_id",
    "postgres_conn_id",
    "starting_offsets",
    "max_offsets_per_trigger",
    "trigger_interval",
    "window",
    "watermark_delay",
    "late_policy",
    "allowed_lateness",
    "max_future_skew",
    "restart_budget",
    "spark_conf",
    "kafka_security",
    "owner",
}
STREAM_KEYS = SETTING_KEYS | {"topics", "sink", "checkpoint", "lake"}
DEFAULTS: dict[str, Any] = {
    "pool": "large",
    "kafka_conn_id": "spotlake_kafka",
    "postgres_conn_id": "spotlake_postgres",
    "starting_offsets": "earliest",
    "max_offsets_per_trigger": 50000,
    "trigger_interval": "10s",
    "max_future_skew": "5m",
    "window": "1m",
    "watermark_delay": "10m",
    "late_policy": "count",
    "allowed_lateness": "1d",
    "restart_budget": {"restarts": 5, "per": "1h"},
    "spark_conf": {},
    "kafka_security": {"protocol": "PLAINTEXT"},
    "owner": DEFAULT_OWNER,
}


def supervisor_dag_id(stream: str) -> str:
    """The DAG that keeps a stream running (``stream_<stream>``)."""
    return f"stream_{stream}"


def streams_path() -> Path:
    return Path(os.environ.get("SPOTLAKE_STREAMS", DEFAULT_STREAMS))


@dataclass(frozen=True)
class RestartBudget:
    """At most ``restarts`` restarts within any ``per``; then the supervisor backs off."""

    restarts: int = 5
    per: timedelta = timedelta(hours=1)


# Spark settings of every stream's batch, under its own spark_conf (which may override them).
STREAM_SPARK_CONF: dict[str, str] = {}


@dataclass(frozen=True)
class StreamLakeTables:
    """The stream's Iceberg tables in the lake's catalog: every valid event, and the dead letters."""

    namespace: str
    events: str = "events"
    dead_letters: str | None = "dead_letters"
    # The stream expires its tables' snapshots older than this itself (every commit adds one).
    snapshot_retention: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class StreamConfig:
    name: str
    pool: str
    topics: tuple[str, ...]
    sink_secret_id: str
    sink_schema: str
    checkpoint: str
    kafka_conn_id: str = "spotlake_kafka"
    postgres_conn_id: str = "spotlake_postgres"
    lake: StreamLakeTables | None = None
    catalog: config.Lake | None = None  # the lake's catalog (config/pipelines.yaml), when lake is set
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = 50000
    trigger_interval: timedelta = timedelta(seconds=10)
    max_future_skew: timedelta = timedelta(minutes=5)
    window: timedelta = timedelta(minutes=1)
    watermark_delay: timedelta = timedelta(minutes=10)
    late_policy: str = "count"
    allowed_lateness: timedelta = timedelta(days=1)
    restart_budget: RestartBudget = field(default_factory=RestartBudget)
    spark_conf: dict[str, str] = field(default_factory=dict)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    sink_endpoint: Endpoint = field(default_factory=Endpoint)  # host, port, database where the secret does not say
    sink_tls: DatabaseTls = field(default_factory=DatabaseTls)  # auto: plain on loopback, verify-full elsewhere
    owner: str = DEFAULT_OWNER  # the Airflow owner of the stream's supervisor DAG

    @property
    def job_key(self) -> str:
        """The registry's job key of the stream: its name."""
        return self.name

    @property
    def dag_id(self) -> str:
        return supervisor_dag_id(self.name)

    @property
    def query_name(self) -> str:
        """The stream's one query: its key in the sink's ``stream_progress``."""
        return self.name

    def lake_document(self) -> dict[str, Any] | None:
        """The job document's ``lake`` section: the catalog's fields and the two tables."""
        if self.lake is None:
            return None
        catalog = self.catalog or config.Lake()
        doc = catalog.to_job_catalog()
        doc.update(
            {
                "namespace": self.lake.namespace,
                "events": self.lake.events,
                "dead_letters": self.lake.dead_letters,
                "snapshot_retention_s": int(self.lake.snapshot_retention.total_seconds()),
            }
        )
        return doc

    def job_document(
        self, run_id: str, attempt: int, bootstrap_servers: str, available_now: bool = False, region: str | None = None
    ) -> dict[str, Any]:
        """The Spark job's document (see ``spark_jobs/clickstream/job.py``); ``region`` is the AWS
        region of Secrets Manager and MSK (the registry's)."""
        source: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "security": self.kafka_security.to_job(),
            "topics": list(self.topics),
            "starting_offsets": self.starting_offsets,
            "fail_on_data_loss": True,
        }
        if self.max_offsets_per_trigger is not None:
            source["max_offsets_per_trigger"] = self.max_offsets_per_trigger
        trigger: dict[str, Any] = (
            {"available_now": True} if available_now else {"interval_s": self.trigger_interval.total_seconds()}
        )
        return {
            "stream": self.name,
            "run_id": run_id,
            "attempt": attempt,
            "source": source,
            "sink": {
                "secret_id": self.sink_secret_id,
                "schema": self.sink_schema,
                **({"endpoint": self.sink_endpoint.to_job()} if self.sink_endpoint.to_job() else {}),
                "tls": self.sink_tls.to_job(),
            },
            **({"region": region} if region else {}),
            "window_s": int(self.window.total_seconds()),
            "watermark_delay_s": int(self.watermark_delay.total_seconds()),
            "late_policy": self.late_policy,
            "allowed_lateness_s": int(self.allowed_lateness.total_seconds()),
            "max_future_skew_s": int(self.max_future_skew.total_seconds()),
            "trigger": trigger,
            "checkpoint": self.checkpoint,
            "lake": self.lake_document(),
        }


@dataclass(frozen=True)
class StreamsConfig:
    path: Path
    streams: tuple[StreamConfig, ...]

    def get(self, name: str) -> StreamConfig:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise ConfigError(
            f"{self.path}: no stream named '{name}'; defined streams: "
            f"{', '.join(s.name for s in self.streams) or 'none'} — add it under 'streams' or fix the name"
        )


def load(path: Path | None = None, catalog: config.Lake | None = None) -> StreamsConfig:
    """The streams of ``path``; streams with a lake get the lake's catalog of ``config/pipelines.yaml``
    (or ``catalog``)."""
    path = path or streams_path()
    streams = parse(config.read_yaml(path, "create it (see docs/streaming.md)"), path)
    if any(s.lake for s in streams.streams):
        lake = catalog or config.load_lake()
        streams = StreamsConfig(streams.path, tuple(replace(s, catalog=lake) if s.lake else s for s in streams.streams))
    return streams


def parse(raw: Any, path: Path) -> StreamsConfig:
    where = str(path)
    raw = _mapping(raw, where)
    _unknown_keys(raw, {"defaults", "streams"}, where)
    defaults = _mapping(raw.get("defaults") or {}, f"{where}: defaults")
    _unknown_keys(defaults, SETTING_KEYS, f"{where}: defaults")
    if "owner" in defaults:
        owner(defaults["owner"], f"{where}: defaults.owner")
    entries = raw.get("streams")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: 'streams' must be a mapping of stream name to settings, with at least one")
    streams = tuple(_stream(name, entry, f"{where}: streams.{name}", {**DEFAULTS, **defaults}) for name, entry in entries.items())
    return StreamsConfig(path, streams)


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value.strip()


def _uri(value: Any, where: str) -> str:
    text = _text(value, where, "a URI such as s3://bucket/prefix").rstrip("/")
    if not URI.match(text):
        raise ConfigError(f"{where}: {text!r} is not a URI; write e.g. s3://spotlake-lake/clicks/events")
    if text.startswith("s3a://") and provider_name() == "emr":
        raise ConfigError(
            f"{where}: {text!r} uses s3a://, which on EMR bypasses EMRFS and its optimized committer; write "
            f"{'s3://' + text[len('s3a://') :]!r} (the local stack serves s3:// with S3A)"
        )
    return text


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a whole number >= 1, got {value!r}")
    return value


def _topics(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a list of Kafka topic names, e.g. [clicks]")
    for topic in value:
        if not isinstance(topic, str) or not TOPIC.match(topic):
            raise ConfigError(f"{where}: {topic!r} is not a Kafka topic name (letters, digits, . _ -)")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: names a topic twice: {value}")
    return tuple(value)


def _starting_offsets(value: Any, where: str) -> str:
    if value in ("earliest", "latest"):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    raise ConfigError(f"{where}: expected earliest, latest, or a mapping of topic to {{partition: offset}}, got {value!r}")


def _budget(value: Any, where: str) -> RestartBudget:
    value = _mapping(value, where)
    _unknown_keys(value, {"restarts", "per"}, where)
    restarts = _positive_int(value.get("restarts", 5), f"{where}.restarts")
    per = parse_duration(value.get("per", "1h"), f"{where}.per")
    if per <= timedelta(0):
        raise ConfigError(f"{where}.per: must be longer than zero; write e.g. 1h")
    return RestartBudget(restarts, per)


def _spark_conf(value: Any, where: str) -> dict[str, str]:
    value = _mapping(value or {}, where)
    conf: dict[str, str] = {}
    for key, setting in value.items():
        if not isinstance(key, str) or not key.startswith("spark."):
            raise ConfigError(f"{where}: {key!r} is not a Spark setting (they start with 'spark.')")
        if isinstance(setting, (dict, list)) or setting is None:
            raise ConfigError(f"{where}.{key}: expected a string, number or boolean, got {setting!r}")
        conf[key] = str(setting).lower() if isinstance(setting, bool) else str(setting)
    return conf


def _stream(name: Any, entry: Any, where: str, settings: dict[str, Any]) -> StreamConfig:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: stream names are lower-case letters, digits and _ (got {name!r}); rename it")
    entry = _mapping(entry or {}, where)
    _unknown_keys(entry, STREAM_KEYS, where)
    settings = {**settings, **{k: v for k, v in entry.items() if k in SETTING_KEYS}}
    for key in ("topics", "sink", "checkpoint"):
        if key not in entry:
            raise ConfigError(f"{where}: '{key}' is required; see docs/streaming.md for an example")
    sink = _mapping(entry["sink"], f"{where}.sink")
    _unknown_keys(sink, {"secret_id", "schema", "host", "port", "database", "tls"}, f"{where}.sink")
    schema = sink.get("schema", "public")
    if not isinstance(schema, str) or not SCHEMA.match(schema):
        raise ConfigError(f"{where}.sink.schema: {schema!r} is not a lower-case PostgreSQL identifier (letters, digits, _)")
    trigger = parse_duration(settings["trigger_interval"], f"{where}.trigger_interval")
    if trigger > MAX_TRIGGER:
        raise ConfigError(
            f"{where}.trigger_interval: {settings['trigger_interval']} is longer than 30s; choose 0s (as fast as possible) to 30s"
        )
    window = parse_duration(settings["window"], f"{where}.window")
    if not WINDOW_RANGE[0] <= window <= WINDOW_RANGE[1]:
        raise ConfigError(f"{where}.window: {settings['window']} is not between 1s and 1d; write e.g. 1m")
    late_policy = settings["late_policy"]
    if late_policy not in LATE_POLICIES:
        raise ConfigError(f"{where}.late_policy: {late_policy!r} is not one of {', '.join(LATE_POLICIES)}")
    limit = settings["max_offsets_per_trigger"]
    return StreamConfig(
        name=name,
        pool=_text(settings["pool"], f"{where}.pool", "a pool name from config/pools.yaml"),
        topics=_topics(entry["topics"], f"{where}.topics"),
        sink_secret_id=_text(sink.get("secret_id"), f"{where}.sink.secret_id", "a Secrets Manager secret id"),
        sink_schema=schema,
        checkpoint=_uri(entry["checkpoint"], f"{where}.checkpoint"),
        kafka_conn_id=_text(settings["kafka_conn_id"], f"{where}.kafka_conn_id", "an Airflow connection id"),
        postgres_conn_id=_text(settings["postgres_conn_id"], f"{where}.postgres_conn_id", "an Airflow connection id"),
        lake=_lake_tables(entry["lake"], f"{where}.lake") if entry.get("lake") else None,
        starting_offsets=_starting_offsets(settings["starting_offsets"], f"{where}.starting_offsets"),
        max_offsets_per_trigger=None if limit is None else _positive_int(limit, f"{where}.max_offsets_per_trigger"),
        trigger_interval=trigger,
        max_future_skew=parse_duration(settings["max_future_skew"], f"{where}.max_future_skew"),
        window=window,
        watermark_delay=parse_duration(settings["watermark_delay"], f"{where}.watermark_delay"),
        late_policy=late_policy,
        allowed_lateness=parse_duration(settings["allowed_lateness"], f"{where}.allowed_lateness"),
        restart_budget=_budget(settings["restart_budget"], f"{where}.restart_budget"),
        spark_conf=_spark_conf(settings["spark_conf"], f"{where}.spark_conf"),
        kafka_security=KafkaSecurity.parse(settings["kafka_security"], f"{where}.kafka_security", _config_error),
        sink_endpoint=Endpoint.parse(
            {k: sink[k] for k in ("host", "port", "database") if k in sink}, f"{where}.sink", _config_error
        ),
        sink_tls=_sink_tls(sink.get("tls"), f"{where}.sink.tls"),
        owner=owner(settings["owner"], f"{where}.owner"),
    )


def _lake_tables(value: Any, where: str) -> StreamLakeTables:
    if isinstance(value, str):
        raise ConfigError(
            f"{where}: {value!r} is a path, but the stream's lake is now Iceberg tables in the lake's catalog "
            "(config/pipelines.yaml: lake); write lake: {namespace: clicks, events: events, dead_letters: "
            "dead_letters} — see docs/streaming.md"
        )
    value = _mapping(value, where)
    _unknown_keys(value, {"namespace", "events", "dead_letters", "snapshot_retention"}, where)
    if "namespace" not in value:
        raise ConfigError(f"{where}.namespace: required, the Iceberg namespace of the stream's tables (e.g. clicks)")
    dead = value.get("dead_letters", "dead_letters")
    return StreamLakeTables(
        namespace=identifier(value["namespace"], f"{where}.namespace"),
        events=identifier(value.get("events", "events"), f"{where}.events"),
        dead_letters=identifier(dead, f"{where}.dead_letters") if dead else None,
        snapshot_retention=parse_duration(value.get("snapshot_retention", "1h"), f"{where}.snapshot_retention"),
    )


def _sink_tls(raw: Any, where: str) -> DatabaseTls:
    tls = DatabaseTls.parse(raw, where, _config_error)
    if tls.truststore:
        raise ConfigError(
            f"{where}.truststore: the sink's driver (libpq) reads a PEM CA bundle, not a Java truststore; "
            "name it as ca_file (/etc/pki/spotlake/db-ca.pem, written by deploy/emr/install-db-ca.sh)"
        )
    return tls


def _config_error(field: str, problem: str) -> ConfigError:
    return ConfigError(f"{field}: {problem}")


def check_pools(pools: PoolsConfig, streams: StreamsConfig) -> None:
    """Every stream's pool exists and lists the stream under ``serves.streams``."""
    for stream in streams.streams:
        where = f"{streams.path}: stream {stream.name}"
        if stream.pool not in pools.names():
            raise ConfigError(
                f"{where}: pool '{stream.pool}' is not defined in {pools.path}; defined pools: "
                f"{', '.join(pools.names())} — add the pool or change the stream's pool"
            )
        if stream.name not in pools.get(stream.pool).serves_streams:
            raise ConfigError(
                f"{where}: runs on pool '{stream.pool}', but {pools.path}: pools.{stream.pool}.serves.streams "
                f"does not list it; add '{stream.name}' there"
            )
