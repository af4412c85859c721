"""The click-stream job document: what the streaming supervisor sends, validated on parse.

The supervisor (``spotlake.stream_supervisor``) builds it from ``config/streaming.yaml``
and sends it as ``--job <base64url(JSON)>``; it names the sink's secret, never a
credential. Every error names the stream and the field at fault.

Example::

    {"stream": "clicks", "run_id": "9f0c...", "attempt": 3,
     "source": {"bootstrap_servers": "b-1.msk:9092", "topics": ["clicks"],
                "starting_offsets": "earliest", "max_offsets_per_trigger": 50000,
                "fail_on_data_loss": true},
     "sink": {"secret_id": "spotlake/postgres/clicks", "schema": "public"},
     "window_s": 60, "watermark_delay_s": 600, "late_policy": "count", "allowed_lateness_s": 86400,
     "trigger": {"interval_s": 10},
     "max_future_skew_s": 300,
     "checkpoint": "s3://spotlake-checkpoints/streams/clicks",
     "lake": {"catalog": "lake", "type": "glue", "warehouse": "s3://spotlake-lake/warehouse",
              "namespace": "clicks", "events": "events", "dead_letters": "dead_letters"}}

``trigger`` is ``{"interval_s": N}`` (0 = as fast as possible, at most 30) or
``{"available_now": true}`` (process what is in Kafka now, then stop: tests and
backfills). ``lake`` may be ``null`` (events only counted in PostgreSQL); its catalog
fields are those of an extraction job's ``lake`` section (``spark_jobs.common.job_documents``);
``dead_letters`` may be ``null`` (dead letters only in PostgreSQL). ``max_future_skew_s``:
an event whose time is further ahead of its Kafka timestamp than this is a dead letter
(reason ``future_event_time``) and never moves the watermark.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spark_jobs.clickstream.kafka_security import Credentials, KafkaSecurity
from spark_jobs.common.contract import decode_job, decode_json
from spark_jobs.common.database_secret import DatabaseTls, Endpoint
from spark_jobs.common.errors import StreamingError
from spark_jobs.common.job_documents import REGION

CONFIG_FILE = "config/streaming.yaml"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
LATE_POLICIES = ("count", "divert")
MAX_TRIGGER_S = 30.0
FETCH_MAX_WAIT_MS = 50
DEFAULT_FUTURE_SKEW_S = 300
TOP_KEYS = frozenset(
    {
        "stream",
        "run_id",
        "attempt",
        "source",
        "sink",
        "window_s",
        "watermark_delay_s",
        "late_policy",
        "allowed_lateness_s",
        "trigger",
        "checkpoint",
        "lake",
        "region",
        "max_future_skew_s",
    }
)
SOURCE_KEYS = frozenset(
    {
        "bootstrap_servers",
        "topics",
        "starting_offsets",
        "max_offsets_per_trigger",
        "fail_on_data_loss",
        "security",
    }
)


@dataclass(frozen=True)
class KafkaSource:
    bootstrap_servers: str
    topics: tuple[str, ...]
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    security: KafkaSecurity = KafkaSecurity()
    # SCRAM: read from security.secret_id on the driver (never part of the document)
    credentials: Credentials | None = None

    def options(self) -> dict[str, str]:
        """Options of Spark's Kafka source (with the client's TLS and SASL settings)."""
        options = {
            **self.security.spark_options(self.credentials),
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "subscribe": ",".join(self.topics),
            "startingOffsets": self.starting_offsets,
            "failOnDataLoss": "true" if self.fail_on_data_loss else "false",
            # A task's consumer stops at the batch's end offset, but its last fetch would wait the
            # default 500 ms for more data: about a second per micro-batch with 3 partitions on 2 cores.
            "kafka.fetch.max.wait.ms": str(FETCH_MAX_WAIT_MS),
        }
        if self.max_offsets_per_trigger is not None:
            options["maxOffsetsPerTrigger"] = str(self.max_offsets_per_trigger)
        return options


@dataclass(frozen=True)
class PostgresSink:
    secret_id: str
    schema: str = "public"
    endpoint: Endpoint = Endpoint()  # host, port, database where the secret does not say
    tls: DatabaseTls = DatabaseTls()  # auto: plain on loopback, sslmode=verify-full elsewhere


@dataclass(frozen=True)
class StreamLake:
    """The stream's Iceberg tables: the valid events and (optionally) the dead letters, in the
    lake's catalog (the fields :func:`spark_jobs.common.lake_catalog.catalog_properties` reads)."""

    catalog: str
    type: str
    warehouse: str
    namespace: str
    events: str
    dead_letters: str | None = None
    secret_id: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    endpoint: Endpoint = Endpoint()
    snapshot_retention_s: int = 3600  # the job expires the tables' older snapshots itself

    @property
    def events_table(self) -> str:
        return f"{self.catalog}.{self.namespace}.{self.events}"

    @property
    def dead_letters_table(self) -> str | None:
        return f"{self.catalog}.{self.namespace}.{self.dead_letters}" if self.dead_letters else None


@dataclass(frozen=True)
class Trigger:
    interval_s: float = 10.0
    available_now: bool = False

    def spark_options(self) -> dict[str, Any]:
        """Keyword arguments of ``DataStreamWriter.trigger``."""
        if self.available_now:
            return {"availableNow": True}
        return {"processingTime": f"{self.interval_s:g} seconds"}


@dataclass(frozen=True)
class StreamJob:
    stream: str
    run_id: str
    attempt: int
    source: KafkaSource
    sink: PostgresSink
    window_s: int
    watermark_delay_s: int
    late_policy: str
    trigger: Trigger
    checkpoint: str
    # Under "count": how long after the watermark a window still takes late events (its
    # distinct sets are kept that long). Documents of older supervisors lack it: one day.
    allowed_lateness_s: int = 86400
    lake: StreamLake | None = None
    max_future_skew_s: int = DEFAULT_FUTURE_SKEW_S
    region: str | None = None  # AWS region of Secrets Manager and MSK IAM (the registry's)

    @property
    def query_name(self) -> str:
        """The stream's one query (also its key in the sink's ``stream_progress``)."""
        return self.stream

    @property
    def context(self) -> str:
        return f"stream {self.stream}"

    @classmethod
    def from_base64url(cls, text: str) -> StreamJob:
        return cls.from_dict(decode_job(text, StreamingError))

    @classmethod
    def from_json(cls, text: str) -> StreamJob:
        return cls.from_dict(decode_json(text, StreamingError))

    @classmethod
    def from_dict(cls, data: Any) -> StreamJob:
        return _Parser(data).parse()


class _Parser:
    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise StreamingError(f"job: the job document must be a JSON object, got {type(data).__name__}")
        self.data = data
        self.who = "job"

    def fail(self, field: str, problem: str) -> StreamingError:
        return StreamingError(f"{self.who}: job field '{field}' {problem}")

    def parse(self) -> StreamJob:
        data = self.data
        stream = data.get("stream")
        if not isinstance(stream, str) or not NAME.match(stream):
            raise self.fail("stream", f"must be a stream name (lower-case letters, digits, _), got {stream!r}")
        self.who = f"stream {stream}"
        self.unknown_keys(data, TOP_KEYS, "")
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise self.fail("run_id", f"must be 1-64 letters, digits, _ or - (a uuid hex), got {run_id!r}")
        attempt = self.integer(data, "attempt", minimum=1)
        late_policy = data.get("late_policy", "count")
        if late_policy not in LATE_POLICIES:
            raise self.fail("late_policy", f"must be one of {', '.join(LATE_POLICIES)}, got {late_policy!r}")
        lake = data.get("lake")
        trigger = self.trigger(self.section(data, "trigger"))
        return StreamJob(
            stream=stream,
            run_id=run_id,
            attempt=attempt,
            source=self.source(self.section(data, "source")),
            sink=self.sink(self.section(data, "sink")),
            window_s=self.integer(data, "window_s", minimum=1),
            watermark_delay_s=self.integer(data, "watermark_delay_s", minimum=0),
            late_policy=late_policy,
            allowed_lateness_s=self.integer(data, "allowed_lateness_s", minimum=0) if "allowed_lateness_s" in data else 86400,
            trigger=trigger,
            checkpoint=self.uri(data, "checkpoint"),
            lake=self.lake(lake) if lake is not None else None,
            max_future_skew_s=self.integer(data, "max_future_skew_s", minimum=0)
            if "max_future_skew_s" in data
            else DEFAULT_FUTURE_SKEW_S,
            region=self.region(data.get("region")),
        )

    # ------------------------------------------------------------------ fields
    def unknown_keys(self, data: Mapping[str, Any], allowed: Any, prefix: str) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed))
            raise self.fail(prefix + unknown[0], f"is not part of the job contract; known fields: {known}")

    def section(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a JSON object, got {value!r}")
        return value

    def lake(self, data: Any) -> StreamLake:
        """The ``lake`` section: the catalog as in an extraction job, and the two table names."""
        from spark_jobs.common.errors import ExtractionError
        from spark_jobs.common.job_documents import _JobParser

        if not isinstance(data, dict):
            raise self.fail("lake", f"must be a JSON object or null, got {data!r}")
        parser = _JobParser(data)
        parser.who = self.who
        try:
            catalog = parser.catalog(data, "lake.", ("events", "dead_letters", "snapshot_retention_s"))
            events = parser.identifier(data.get("events"), "lake.events")
            dead = data.get("dead_letters")
            dead_letters = parser.identifier(dead, "lake.dead_letters") if dead is not None else None
        except ExtractionError as exc:
            raise StreamingError(str(exc)) from None
        retention = (
            self.integer(data, "snapshot_retention_s", minimum=0, prefix="lake.") if "snapshot_retention_s" in data else 3600
        )
        return StreamLake(**catalog, events=events, dead_letters=dead_letters, snapshot_retention_s=retention)

    def integer(self, data: Mapping[str, Any], key: str, minimum: int, prefix: str = "") -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(prefix + key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def text(self, data: Mapping[str, Any], key: str, prefix: str = "") -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(prefix + key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def uri(self, data: Mapping[str, Any], key: str, prefix: str = "") -> str:
        value = self.text(data, key, prefix).rstrip("/")
        if not URI.match(value):
            raise self.fail(prefix + key, f"must be a URI such as s3a://bucket/prefix or file:/abs/path, got {value!r}")
        return value

    def source(self, data: Mapping[str, Any]) -> KafkaSource:
        self.unknown_keys(data, SOURCE_KEYS, "source.")
        servers = self.text(data, "bootstrap_servers", "source.")
        if any(":" not in part for part in servers.split(",")):
            raise self.fail("source.bootstrap_servers", f"must be host:port[,host:port...], got {servers!r}")
        topics = data.get("topics")
        if not isinstance(topics, list) or not topics:
            raise self.fail("source.topics", f"must be a non-empty list of topic names, got {topics!r}")
        for i, topic in enumerate(topics):
            if not isinstance(topic, str) or not TOPIC.match(topic):
                raise self.fail(f"source.topics[{i}]", f"is not a Kafka topic name, got {topic!r}")
        starting = data.get("starting_offsets", "earliest")
        if starting not in ("earliest", "latest"):
            try:
                parsed = json.loads(starting) if isinstance(starting, str) else None
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                raise self.fail(
                    "source.starting_offsets",
                    f'must be "earliest", "latest" or a JSON object of offsets per topic and partition, got {starting!r}',
                )
        limit = data.get("max_offsets_per_trigger")
        if limit is not None:
            limit = self.integer(data, "max_offsets_per_trigger", minimum=1, prefix="source.")
        fail_on_loss = data.get("fail_on_data_loss", True)
        if not isinstance(fail_on_loss, bool):
            raise self.fail("source.fail_on_data_loss", f"must be true or false, got {fail_on_loss!r}")
        security = KafkaSecurity.parse(data.get("security"), "source.security", self.fail)
        return KafkaSource(servers, tuple(topics), starting, limit, fail_on_loss, security)

    def region(self, value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not REGION.match(value)):
            raise self.fail("region", f"must be an AWS region such as eu-west-1, got {value!r}")
        return value

    def sink(self, data: Mapping[str, Any]) -> PostgresSink:
        self.unknown_keys(data, {"secret_id", "schema", "endpoint", "tls"}, "sink.")
        schema = data.get("schema", "public")
        if not isinstance(schema, str) or not SCHEMA.match(schema):
            raise self.fail("sink.schema", f"must be a lower-case PostgreSQL identifier, got {schema!r}")
        return PostgresSink(
            secret_id=self.text(data, "secret_id", "sink."),
            schema=schema,
            endpoint=Endpoint.parse(data.get("endpoint"), "sink.endpoint", self.fail),
            tls=DatabaseTls.parse(data.get("tls"), "sink.tls", self.fail),
        )

    def trigger(self, data: Mapping[str, Any]) -> Trigger:
        self.unknown_keys(data, {"interval_s", "available_now"}, "trigger.")
        available_now = data.get("available_now", False)
        if not isinstance(available_now, bool):
            raise self.fail("trigger.available_now", f"must be true or false, got {available_now!r}")
        interval = data.get("interval_s", 10)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval <= MAX_TRIGGER_S:
            raise self.fail(
                "trigger.interval_s",
                f"must be a number of seconds from 0 (as fast as possible) to {MAX_TRIGGER_S:g}, got {interval!r}",
            )
        return Trigger(interval_s=float(interval), available_now=available_now)
