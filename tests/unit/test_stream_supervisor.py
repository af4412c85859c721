"""The streaming supervisor's decisions with a moto registry and fake Livy, Kafka and sink."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spotlake import config, pools, status, streaming
from spotlake.artifacts import JobArtifacts
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from spotlake.stream_status import StreamState, StreamStatusStore
from spotlake.stream_supervisor import (
    BatchProbe,
    Progress,
    StreamBackedOff,
    StreamSupervisor,
    TopicMissing,
)
from spotlake.streaming import RestartBudget, StreamConfig

STREAM = StreamConfig(
    name="clicks",
    pool="large",
    topics=("clicks",),
    sink_secret_id="spotlake/postgres/clicks",
    sink_schema="clickstream",
    checkpoint="s3a://checkpoints/clicks",
    restart_budget=RestartBudget(2, timedelta(hours=1)),
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeLivy:
    """Every cluster's Livy: batches by endpoint; an endpoint in ``down`` does not answer."""

    batches: dict[tuple[str, int], str] = field(default_factory=dict)
    logs: dict[tuple[str, int], str] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    deleted: list[tuple[str, int]] = field(default_factory=list)

    def client(self, endpoint: str) -> Any:
        livy = self

        class Client:
            def post_batch(self, **body: Any) -> int:
                if endpoint in livy.down:
                    raise ConnectionError(f"{endpoint} refused")
                batch_id = sum(1 for e, _ in livy.batches if e == endpoint)
                livy.batches[(endpoint, batch_id)] = "running"
                livy.bodies.append({"endpoint": endpoint, **body})
                return batch_id

            def get_batch_state(self, batch_id: int, retry_args: Any = None) -> Any:
                if endpoint in livy.down:
                    raise ConnectionError(f"{endpoint} refused")
                return SimpleNamespace(value=livy.batches[(endpoint, batch_id)])

        return Client()

    def control(self, endpoint: str) -> Any:
        livy = self

        class Control:
            def probe(self, batch_id: int) -> BatchProbe:
                if endpoint in livy.down:
                    return BatchProbe("unreachable", "ConnectionError")
                state = livy.batches.get((endpoint, batch_id))
                return BatchProbe(state) if state else BatchProbe("lost", "HTTP 404")

            def error_line(self, batch_id: int) -> str:
                return livy.logs.get((endpoint, batch_id), "")

            def delete(self, batch_id: int) -> None:
                if endpoint in livy.down:
                    raise ConnectionError(f"{endpoint} refused")
                livy.deleted.append((endpoint, batch_id))
                livy.batches[(endpoint, batch_id)] = "killed"

        return Control()


class FakeKafka:
    bootstrap = "b-1:9092"

    def __init__(self) -> None:
        self.topics = {"clicks": 2}
        self.ends = {"clicks": {0: (0, 100), 1: (10, 50)}}

    def check_topics(self, stream: str, topics: tuple[str, ...]) -> dict[str, int]:
        missing = [t for t in topics if t not in self.topics]
        if missing:
            raise TopicMissing(f"stream {stream}: topic {missing[0]!r} does not exist on Kafka at {self.bootstrap}")
        return {t: self.topics[t] for t in topics}

    def end_offsets(self, partitions: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]]:
        return self.ends


class FakeSink:
    def __init__(self) -> None:
        self.migrated = 0
        self.current: Progress | None = None

    def ensure_schema(self) -> list[str]:
        self.migrated += 1
        return ["0001_click_sink.sql"] if self.migrated == 1 else []

    def progress(self, query_name: str) -> Progress | None:
        assert query_name == "clicks"
        return self.current


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="sv")
        reg.create_tables()
        yield reg


def ready(registry: Registry, name: str, endpoint: str) -> Cluster:
    cluster = Cluster(pool="large", cluster_id=name, provider="local", state="")
    registry.put_launching(cluster)
    return registry.mark_ready(cluster, endpoint)


@dataclass
class World:
    registry: Registry
    livy: FakeLivy
    kafka: FakeKafka
    sink: FakeSink
    clock: Clock
    supervisor: StreamSupervisor
    statuses: StreamStatusStore


@pytest.fixture
def world(registry: Registry) -> World:
    livy, kafka, sink, clock = FakeLivy(), FakeKafka(), FakeSink(), Clock()
    statuses = StreamStatusStore(registry.client, registry.prefix)
    supervisor = StreamSupervisor(
        stream=STREAM,
        registry=registry,
        statuses=statuses,
        kafka=kafka,
        sink=sink,
        client_for=livy.client,
        control_for=livy.control,
        publish=lambda: JobArtifacts("/artifacts/abc/stream_clicks.py", ["/artifacts/abc/spark_jobs.zip"]),
        clock=clock,
        stop_timeout_s=2.0,
    )
    return World(registry, livy, kafka, sink, clock, supervisor, statuses)


def test_first_start_then_running_with_lag_and_status(world: World) -> None:
    ready(world.registry, "large-0001", "http://a")
    report = world.supervisor.supervise()
    assert report.state == StreamState.STARTED and report.migrations == ["0001_click_sink.sql"]
    assert report.job is not None and (report.job.cluster_id, report.job.batch_id, report.job.attempt) == ("large-0001", 0, 1)
    (body,) = world.livy.bodies
    assert body["file"] == "/artifacts/abc/stream_clicks.py" and body["name"].startswith("spotlake-stream-clicks-")
    assert "spark.scheduler.mode" not in body["conf"]  # one query: no scheduler pools to share between
    document = json.loads(base64.urlsafe_b64decode(body["args"][1]))
    assert document["stream"] == "clicks" and document["source"]["bootstrap_servers"] == "b-1:9092"
    assert document["sink"] == {"secret_id": "spotlake/postgres/clicks", "schema": "clickstream", "tls": {"mode": "auto"}}
    assert report.lag is not None and report.lag.total == 140  # nothing committed: from the low offsets

    world.sink.current = Progress(
        7, "2026-11-27T14:00:30.000+00:00", "2026-11-27T13:50:00.000+00:00", {"clicks": {"0": 90, "1": 50}}
    )
    running = world.supervisor.supervise()
    assert running.state == StreamState.RUNNING and len(world.livy.bodies) == 1
    assert running.lag is not None and running.lag.by_partition == {"clicks/0": 10, "clicks/1": 0}
    status = world.statuses.get("clicks")
    assert status is not None and status.state == StreamState.RUNNING and status.lag == 10
    assert status.last_batch_id == 7 and status.livy_state == "running" and status.restarts == []
    assert any("last committed micro-batch 7" in line for line in running.lines())


def test_a_dead_batch_restarts_with_its_error_and_the_budget_then_backs_off(world: World) -> None:
    ready(world.registry, "large-0001", "http://a")
    world.supervisor.supervise()
    for attempt in (2, 3):
        last = attempt - 2
        world.livy.batches[("http://a", last)] = "dead"
        world.livy.logs[("http://a", last)] = "sink PostgreSQL unreachable"
        report = world.supervisor.supervise()
        assert report.state == StreamState.RESTARTED and "sink PostgreSQL unreachable" in report.reason
        assert report.job is not None and report.job.attempt == attempt
        world.clock.now += timedelta(minutes=1)
    world.livy.batches[("http://a", 2)] = "dead"
    with pytest.raises(StreamBackedOff, match="2 restarts within 1h .*restart_budget 2 per 1h"):
        world.supervisor.supervise()
    assert len(world.livy.bodies) == 3, "no submission while backed off"
    status = world.statuses.get("clicks")
    assert status is not None and status.state == StreamState.BACKED_OFF
    assert [r.cause for r in status.restarts] == ["batch dead", "batch dead"]
    with pytest.raises(StreamBackedOff):
        world.supervisor.supervise()  # every run fails loudly while the budget is spent
    world.clock.now += timedelta(hours=1)
    assert world.supervisor.supervise().state == StreamState.RESTARTED
    assert len(world.livy.bodies) == 4


def test_a_batch_that_ended_successfully_is_restarted_too(world: World) -> None:
    ready(world.registry, "large-0001", "http://a")
    world.supervisor.supervise()
    world.livy.batches[("http://a", 0)] = "success"
    report = world.supervisor.supervise()
    assert report.state == StreamState.RESTARTED and report.job is not None and report.job.batch_id == 1
    assert world.livy.deleted == [], "an ended batch keeps its log in Livy"


def test_an_unreachable_cluster_is_waited_for_then_the_stream_moves_to_the_replacement(world: World) -> None:
    a = ready(world.registry, "large-0001", "http://a")
    world.supervisor.supervise()
    world.livy.down.add("http://a")
    waiting = world.supervisor.supervise()
    assert waiting.state == StreamState.WAITING and "waiting for the fleet" in waiting.reason
    assert len(world.livy.bodies) == 1
    world.registry.transition_cluster(a, ClusterState.DEAD, "3 failed health checks")
    ready(world.registry, "large-0002", "http://b")
    report = world.supervisor.supervise()
    assert report.state == StreamState.RESTARTED and "large-0001 is DEAD" in report.reason
    assert report.job is not None and (report.job.cluster_id, report.job.attempt, report.job.moves) == ("large-0002", 2, 1)
    assert world.registry.get_job("clicks").state == JobState.SUBMITTED


def test_a_draining_cluster_is_left_for_the_replacement_after_the_batch_stops(world: World) -> None:
    a = ready(world.registry, "large-0001", "http://a")
    world.supervisor.supervise()
    b = Cluster(pool="large", cluster_id="large-0002", provider="local", state="")
    world.registry.put_launching(b)
    world.registry.take_over(b, "http://b", a, drain_started_at="2026-11-27T14:00:00+00:00")
    report = world.supervisor.supervise()
    assert report.state == StreamState.MOVED
    assert world.livy.deleted[0] == ("http://a", 0)
    assert report.job is not None and report.job.cluster_id == "large-0002"


def test_no_ready_cluster_is_a_wait_not_a_failure(world: World) -> None:
    report = world.supervisor.supervise()
    assert report.state == StreamState.WAITING and "has no READY cluster" in report.reason
    assert world.livy.bodies == []


def test_a_missing_topic_stops_everything_before_a_submission(world: World) -> None:
    ready(world.registry, "large-0001", "http://a")
    world.kafka.topics = {}
    with pytest.raises(TopicMissing, match="topic 'clicks' does not exist on Kafka at b-1:9092"):
        world.supervisor.supervise()
    assert world.livy.bodies == [] and world.sink.migrated == 0


def test_status_shows_the_streams_lag_and_last_micro_batch(world: World) -> None:
    ready(world.registry, "large-0001", "http://a")
    world.supervisor.supervise()
    world.sink.current = Progress(12, world.clock.now.isoformat(), "", {"clicks": {"0": 100, "1": 45}})
    world.clock.now += timedelta(seconds=30)
    world.supervisor.supervise()
    streams = streaming.StreamsConfig(Path("config/streaming.yaml"), (STREAM, replace(STREAM, name="views")))
    snapshot = status.collect(world.registry, pools.load(provider="local"), config.load(), world.clock.now, streams)
    text = status.render(snapshot)
    section = text.split("STREAMS", 1)[1].splitlines()
    row = next(line for line in section if line.strip().startswith("clicks "))
    assert row.split()[:7] == ["clicks", "RUNNING", "large-0001", "0", "12", "30s", "5"]
    assert "views" in text and "(not supervised yet)" in text


def test_the_operator_reads_the_brokers_from_its_connection_and_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.exceptions import AirflowException

    from operators.streaming import StreamSupervisorOperator, bootstrap_servers

    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_EXTRA", json.dumps({"conn_type": "generic", "extra": {"bootstrap.servers": "b-1:9092,b-2:9092"}})
    )
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_HOST", json.dumps({"conn_type": "generic", "host": "k", "port": 9093}))
    assert bootstrap_servers("kafka_extra") == "b-1:9092,b-2:9092"
    assert bootstrap_servers("kafka_host") == "k:9093"

    operator = StreamSupervisorOperator(task_id="supervise", stream_name="clicks")

    class Failing:
        def supervise(self) -> None:
            raise StreamBackedOff("stream clicks: 5 restarts within 1h")

    monkeypatch.setattr(operator, "supervisor", lambda: Failing())
    with pytest.raises(AirflowException, match="stream clicks: 5 restarts within 1h"):
        operator.execute({})
