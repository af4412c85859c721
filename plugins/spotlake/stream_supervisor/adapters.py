"""The stream supervisor's collaborators for real: Kafka (confluent-kafka: topics and end offsets),
the sink's PostgreSQL (its schema and the committed progress) and Livy (a batch's state, its error
line, its deletion). :class:`~spotlake.stream_supervisor.supervisor.StreamSupervisor` takes any
objects of their protocols (:class:`~spotlake.stream_supervisor.supervisor.KafkaProbe`,
``SinkProbe``, ``BatchControl``); the tests give it fakes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from typing import Any

from spark_jobs.clickstream.kafka_security import Credentials, KafkaSecurity, read_credentials
from spotlake import sink_schema
from spotlake.errors import ConfigError, SpotlakeError
from spotlake.stream_supervisor.report import Progress


class TopicMissing(ConfigError):
    """A topic of the stream does not exist on its Kafka cluster."""


class KafkaUnreachable(SpotlakeError):
    """The stream's Kafka brokers did not answer."""


class KafkaTopics:
    """:class:`KafkaProbe` over confluent-kafka (metadata and watermark offsets only)."""

    def __init__(
        self,
        bootstrap: str,
        conn_id: str = "",
        timeout: float = 10.0,
        security: KafkaSecurity | None = None,
        region: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.conn_id = conn_id
        self.timeout = timeout
        self.security = security or KafkaSecurity()
        self.region = region

    @cached_property
    def _credentials(self) -> Credentials | None:
        if not self.security.needs_secret:
            return None
        assert self.security.secret_id is not None
        return read_credentials(self.security.secret_id, f"Kafka secret '{self.security.secret_id}'", ConfigError, self.region)

    def _settings(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
            "log_level": 0,
            **self.security.librdkafka_settings(self._credentials, self.region),
        }

    def check_topics(self, stream: str, topics: tuple[str, ...]) -> dict[str, int]:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        via = f" (Airflow connection '{self.conn_id}')" if self.conn_id else ""
        try:
            metadata = AdminClient(self._settings()).list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise KafkaUnreachable(
                f"stream {stream}: Kafka at {self.bootstrap}{via} did not answer within {self.timeout:.0f} s "
                f"({exc.args[0] if exc.args else exc}) — check the brokers and the connection's bootstrap.servers"
            ) from None
        existing = {name for name, meta in metadata.topics.items() if meta.error is None}
        missing = [t for t in topics if t not in existing]
        if missing:
            shown = ", ".join(sorted(t for t in existing if not t.startswith("__"))[:20]) or "none"
            raise TopicMissing(
                f"stream {stream}: topic {', '.join(repr(t) for t in missing)} does not exist on Kafka at "
                f"{self.bootstrap}{via}; existing topics: {shown} — create it, or fix streams.{stream}.topics "
                "in config/streaming.yaml"
            )
        return {t: len(metadata.topics[t].partitions) for t in topics}

    def end_offsets(self, partitions: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self._settings(), "group.id": "spotlake-stream-supervisor", "enable.auto.commit": False})

        def watermarks(topic: str, partition: int) -> tuple[int, int]:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.timeout)
            return low, high

        try:
            return {topic: {p: watermarks(topic, p) for p in range(count)} for topic, count in partitions.items()}
        finally:
            consumer.close()


class SinkDatabase:
    """:class:`SinkProbe` over a DB-API connection factory (Airflow's PostgresHook)."""

    def __init__(self, connect: Callable[[], Any], schema: str) -> None:
        self.connect = connect
        self.schema = schema

    def ensure_schema(self) -> list[str]:
        connection = self.connect()
        try:
            return sink_schema.apply(connection, self.schema)
        finally:
            connection.close()

    def progress(self, query_name: str) -> Progress | None:
        quoted = sink_schema.quote_schema(self.schema)
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(
                f"SELECT last_batch_id, committed_at, watermark, offsets FROM {quoted}.stream_progress WHERE query_name = %s",
                (query_name,),
            )
            row = cursor.fetchone()
            cursor.execute(
                f"SELECT coalesce(sum(dead_letters), 0) FROM {quoted}.stream_batches "
                "WHERE query_name = %s AND committed_at > now() - interval '1 hour'",
                (query_name,),
            )
            dead = cursor.fetchone()
            connection.rollback()
        finally:
            connection.close()
        if row is None or int(row[0]) < 0:
            return None
        offsets = row[3] if isinstance(row[3], dict) else json.loads(row[3] or "{}")
        return Progress(
            last_batch_id=int(row[0]),
            committed_at=row[1].isoformat(timespec="milliseconds") if row[1] else "",
            watermark=row[2].isoformat(timespec="milliseconds") if row[2] else "",
            offsets={t: {str(p): int(o) for p, o in parts.items()} for t, parts in offsets.items()},
            dead_letters_last_hour=int(dead[0]) if dead else 0,
        )
