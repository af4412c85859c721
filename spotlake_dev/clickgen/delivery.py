"""Where records go: Kafka (with delivery accounting), a JSON-lines file, or nowhere.

Every sink follows :class:`Sink`: ``send(key, value)``, ``idle(seconds)`` (wait,
serving delivery reports meanwhile), ``pending()`` (records not yet
acknowledged), ``close(timeout)``, ``abandon()`` and a :class:`DeliveryTotals`
in ``totals``.

:class:`KafkaSink` checks, before anything is produced, that the brokers answer
and the topic exists (:meth:`KafkaSink.check`), and raises
:class:`KafkaUnavailableError` or :class:`~spotlake.errors.ConfigError` with the
fix instead of hanging. Messages are produced with batching, compression and an
idempotent producer (``acks=all``); ``message.timeout.ms`` bounds how long a
message may wait, so a broker that goes away turns into counted delivery errors,
never a hang. Each delivery report is counted as delivered or failed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from spotlake.errors import ConfigError, SpotlakeError

COMPRESSIONS: tuple[str, ...] = ("lz4", "zstd", "snappy", "gzip", "none")
KAFKA_LOGGER = "spotlake_dev.clickgen.kafka"


class KafkaUnavailableError(SpotlakeError):
    """The Kafka brokers did not answer; the message names them and the fix."""


class RepeatFilter(logging.Filter):
    """Let each distinct log message through at most once per ``interval`` seconds.

    librdkafka logs every failed reconnection; while a broker is down that is
    several lines a second of the same text.
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        now = time.monotonic()
        last = self._last.get(text)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[text] = now
        return True


def kafka_logger() -> logging.Logger:
    """The logger that receives librdkafka's log lines, with repeats suppressed."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(existing, RepeatFilter) for existing in logger.filters):
        logger.addFilter(RepeatFilter())
    return logger


class Sink(Protocol):
    """Where :func:`spotlake_dev.clickgen.run.run` sends records."""

    totals: DeliveryTotals

    def send(self, key: bytes, value: str) -> None: ...

    def idle(self, seconds: float) -> None: ...

    def pending(self) -> int: ...

    def close(self, timeout: float | None = None) -> DeliveryTotals: ...

    def abandon(self) -> DeliveryTotals: ...


@dataclass
class DeliveryTotals:
    """What became of the records handed to a sink."""

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    @property
    def unacknowledged(self) -> int:
        """Records produced with no delivery report (still queued when the sink closed)."""
        return self.produced - self.delivered - self.failed


def producer_config(
    bootstrap: str,
    *,
    compression: str = "lz4",
    linger_ms: int = 20,
    batch_messages: int = 10_000,
    batch_bytes: int = 1_000_000,
    delivery_timeout: float = 30.0,
    queue_messages: int = 500_000,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The librdkafka settings of the generator's producer (also used by the benchmark)."""
    if compression not in COMPRESSIONS:
        raise ConfigError(
            f"compression {compression!r} is not supported; fix: pass --compression with one of {', '.join(COMPRESSIONS)}"
        )
    if not bootstrap or ":" not in bootstrap:
        raise ConfigError(f"bootstrap servers {bootstrap!r} are not host:port pairs; fix: pass --bootstrap 127.0.0.1:19092")
    if not delivery_timeout > 0:
        raise ConfigError(f"delivery timeout {delivery_timeout!r} s is not positive; fix: pass --delivery-timeout 30")
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": "spotlake-clickgen",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.num.messages": batch_messages,
        "batch.size": batch_bytes,
        "queue.buffering.max.messages": queue_messages,
        "queue.buffering.max.kbytes": 262_144,
        "message.timeout.ms": int(delivery_timeout * 1000),
        "socket.connection.setup.timeout.ms": 10_000,
        "logger": kafka_logger(),
    }
    config.update(overrides or {})
    return config


class KafkaSink:
    """Produce records to one Kafka topic, counting every delivery report.

    Construction checks the brokers and the topic (see :meth:`check`); pass
    ``check=False`` to skip that.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        connect_timeout: float = 5.0,
        poll_every: int = 100,
        check: bool = True,
        **settings: Any,
    ) -> None:
        if not topic:
            raise ConfigError("the Kafka topic name is empty; fix: pass --topic clicks or another topic")
        self.bootstrap = bootstrap
        self.topic = topic
        self.totals = DeliveryTotals()
        self.poll_every = max(1, poll_every)
        self._poll_at = self.poll_every  # serve delivery reports when this many messages are produced
        config = producer_config(bootstrap, **settings)
        self.delivery_timeout = config["message.timeout.ms"] / 1000.0
        config["on_delivery"] = self._on_delivery
        self.producer = Producer(config)
        self._produce = self.producer.produce
        self._poll = self.producer.poll
        self.partitions = 0
        if check:
            self.check(connect_timeout)

    def check(self, timeout: float = 5.0) -> int:
        """Check that the brokers answer within ``timeout`` s and the topic exists.

        Returns the topic's partition count.
        """
        try:
            metadata = self.producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"cannot reach Kafka at {self.bootstrap} within {timeout:g} s ({exc.args[0].str()}). "
                "Fix: start the local stack with `make up`, or point --bootstrap at a running broker "
                "(the local broker listens on 127.0.0.1:$SPOTLAKE_KAFKA_PORT, see stack.env)."
            ) from None
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None:
            known = sorted(name for name in metadata.topics if not name.startswith("__"))
            reason = "does not exist" if described is None else f"is unusable ({described.error.str()})"
            raise ConfigError(
                f"Kafka topic {self.topic!r} {reason} on {self.bootstrap} (topics there: "
                f"{', '.join(known) or 'none'}); the broker does not create topics on first use. "
                f"Fix: create it, e.g. `kafka-topics.sh --bootstrap-server {self.bootstrap} --create "
                f"--topic {self.topic} --partitions 3`, or pass --topic with an existing topic."
            )
        self.partitions = len(described.partitions)
        return self.partitions

    def _on_delivery(self, err: KafkaError | None, msg: object) -> None:
        # Called from poll()/flush() for every message: keep the common case to one increment.
        if err is None:
            self.totals.delivered += 1
        else:
            totals = self.totals
            totals.failed += 1
            totals.errors[err.name()] += 1
            if totals.first_error is None:
                totals.first_error = err.str()

    def send(self, key: bytes, value: str) -> None:
        """Queue one message, waiting for room if the local queue is full; serve delivery reports every ``poll_every``."""
        try:
            self._produce(self.topic, value, key)
        except BufferError:
            self._produce_when_room(key, value)
        totals = self.totals
        totals.produced += 1
        if totals.produced == self._poll_at:
            self._poll_at += self.poll_every
            self._poll(0)

    def _produce_when_room(self, key: bytes, value: str) -> None:
        """Serve delivery reports until the local queue takes the message."""
        while True:
            self._poll(0.05)
            try:
                self._produce(self.topic, value, key)
                return
            except BufferError:
                pass

    def idle(self, seconds: float) -> None:
        """Serve delivery reports for up to ``seconds`` (returns early when one was served)."""
        self._poll(seconds)

    def pending(self) -> int:
        """Messages queued or in flight."""
        return len(self.producer)

    def close(self, timeout: float | None = None) -> DeliveryTotals:
        """Wait for outstanding deliveries, drop what is left after ``timeout`` s, return the totals.

        The default timeout is the delivery timeout plus 5 s, by which time librdkafka
        has reported every message. Dropped messages get a failed delivery report
        (``_PURGE_QUEUE``) and count as failed.
        """
        if timeout is None:
            timeout = self.delivery_timeout + 5.0
        if self.producer.flush(timeout):
            self.abandon()
        return self.totals

    def abandon(self) -> DeliveryTotals:
        """Drop queued and in-flight messages now (they count as failed) and return the totals."""
        self.producer.purge()
        self.producer.flush(1.0)
        return self.totals


class JsonLinesSink:
    """Write each record's value as one line to a file or stdout (``--dry-run``)."""

    def __init__(self, path: Path | str | None = None, stream: IO[str] | None = None) -> None:
        self.totals = DeliveryTotals()
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._out: IO[str] = self.path.open("w", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the JSON-lines output {self.path} ({exc.strerror}); "
                    "fix: pass --output with a writable file path"
                ) from None
        else:
            self._out = stream if stream is not None else sys.stdout
        self._write = self._out.write

    def send(self, key: bytes, value: str) -> None:
        self._write(value + "\n")
        totals = self.totals
        totals.produced += 1
        totals.delivered += 1

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def pending(self) -> int:
        return 0

    def close(self, timeout: float | None = None) -> DeliveryTotals:
        """Flush the output and return the totals (a line counts as delivered once written)."""
        totals = self.totals
        try:
            self._out.flush()
        except BrokenPipeError:
            totals.errors["BROKEN_PIPE"] += 1
            totals.first_error = "the reader of the output went away (broken pipe)"
        if self.path is not None:
            self._out.close()
        return totals

    def abandon(self) -> DeliveryTotals:
        return self.close()


class NullSink:
    """Count records and drop them (measures pure generation speed)."""

    def __init__(self) -> None:
        self.totals = DeliveryTotals()

    def send(self, key: bytes, value: str) -> None:
        self.totals.produced += 1

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def pending(self) -> int:
        return 0

    def close(self, timeout: float | None = None) -> DeliveryTotals:
        self.totals.delivered = self.totals.produced
        return self.totals

    def abandon(self) -> DeliveryTotals:
        return self.close()
