"""The local stack's Kafka: a single-node KRaft broker and controller (jars: ``jvm/kafka/pom.xml``)."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from spotlake.errors import StackError
from spotlake.maven import resolve_jars
from spotlake.stack import StackLayout, kafka_bootstrap
from spotlake_dev.localstack.java import heap_args, java_bin, properties_text, write_if_changed
from spotlake_dev.localstack.process import ServiceSpec


def kafka_dir(layout: StackLayout) -> Path:
    return layout.data_dir / "kafka"


def kafka_server_properties(layout: StackLayout) -> dict[str, object]:
    """The broker+controller config of the single-node KRaft cluster."""
    port, cport = layout.port("kafka"), layout.port("kafka_controller")
    return {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": kafka_dir(layout) / "log",
        # A topic that does not exist is an error the tests can see, not a silent create.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        # Small: two cores, a few MB of test data.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "num.replica.fetchers": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.hours": 24,
        "log.retention.check.interval.ms": 60_000,
        "delete.topic.enable": "true",
    }


_KAFKA_LOG4J2 = """\
# Written by spotlake_dev.localstack.kafka_server; Kafka logs to stdout, which the supervisor keeps.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def kafka_cluster_id() -> str:
    """A Kafka ``Uuid`` in its base64url form, as ``StorageTool random-uuid`` prints it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return text


def kafka_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether the broker answers a metadata request (not merely an open port)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            "log_level": 0,  # no "Connection refused" noise while the broker starts
        }
    )
    metadata = admin.list_topics(timeout=timeout)
    return bool(metadata.brokers)


def kafka_spec(layout: StackLayout) -> ServiceSpec:
    """A single-node KRaft Kafka (broker+controller) on 127.0.0.1."""
    home = kafka_dir(layout)
    config = home / "server.properties"
    log4j = home / "log4j2.properties"
    classpath = f"{layout.jars('kafka')}/*"
    java = java_bin()

    def prepare() -> None:
        resolve_jars(layout, "kafka")
        write_if_changed(config, properties_text(kafka_server_properties(layout)))
        write_if_changed(log4j, _KAFKA_LOG4J2)
        if (home / "log" / "meta.properties").exists():
            return  # formatted already: formatting again would fail (or wipe the cluster id)
        done = subprocess.run(
            [
                java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                "kafka.tools.StorageTool", "format", "--ignore-formatted",
                "-t", kafka_cluster_id(), "-c", str(config),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(f"formatting Kafka storage in {home / 'log'} failed (exit {done.returncode}):\n{tail}")

    bootstrap = kafka_bootstrap(layout)
    return ServiceSpec(
        name="kafka",
        argv=[
            java,
            *heap_args(layout, "SPOTLAKE_KAFKA_HEAP", "-Xms128m -Xmx384m"),
            "-XX:+UseSerialGC",
            "-XX:ReservedCodeCacheSize=64m",
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",  # keep logging through the shutdown
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={home / 'app-logs'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ],
        ports=[layout.port("kafka"), layout.port("kafka_controller")],
        ready=lambda: kafka_ready(bootstrap),
        cwd=home,
        prepare=prepare,
        ready_timeout=90.0,
        stop_timeout=30.0,
    )
