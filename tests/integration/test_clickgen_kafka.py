"""The click-stream generator against the real local Kafka: produce N, consume N, compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from spotlake.errors import ConfigError
from spotlake_dev.clickgen.behaviour import ClickStream, StreamConfig
from spotlake_dev.clickgen.delivery import KafkaSink, NullSink
from spotlake_dev.clickgen.events import MALFORMED_KINDS, VALID, classify
from spotlake_dev.clickgen.rate import ConstantRate
from spotlake_dev.clickgen.run import run
from spotlake_dev.clickgen.workers import WorkerPlan

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
PARTITIONS = 3


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    """A new, uniquely named topic, deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"clickgen-test-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} did not appear"
        time.sleep(0.2)
    yield name
    try:
        admin.delete_topics([name])[name].result(30)
    except KafkaException:
        pass


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every message of ``topic`` from the beginning: stop at ``expected`` plus a short wait for extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"clickgen-test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1_000, timeout=1.0)
            for message in batch:
                assert message.error() is None, message.error()
                messages.append(message)
            if len(messages) >= expected:
                deadline = min(deadline, time.monotonic() + 2.0)  # any duplicates would show up now
    finally:
        consumer.close()
    return messages


def click_stream(seed: int, **settings: object) -> ClickStream:
    config = StreamConfig(seed=seed, start_ms=START_MS, users=500, **settings)  # type: ignore[arg-type]
    return ClickStream(config, ConstantRate(1_000.0))


def test_round_trip_every_event_once_keyed_by_user(kafka_bootstrap: str, topic: str) -> None:
    n = 5_000
    stream = click_stream(11, late_fraction=0.05, out_of_order_fraction=0.02, malformed_fraction=0.0)
    expected_ids = {json.loads(value)["event_id"] for _, value, _, _ in stream.records(count=n)}
    assert len(expected_ids) == n

    sink = KafkaSink(kafka_bootstrap, topic, connect_timeout=10.0)
    assert sink.partitions == PARTITIONS
    totals = run(stream, sink, count=n, pace=False, progress=None)
    assert totals.ok, totals.summary()
    assert totals.sent == totals.delivery.delivered == n

    messages = consume(kafka_bootstrap, topic, n)
    ids: Counter[str] = Counter()
    partitions_of_user: dict[str, set[int]] = defaultdict(set)
    for message in messages:
        event = json.loads(message.value())
        ids[event["event_id"]] += 1
        assert message.key().decode() == event["user_id"]
        partitions_of_user[event["user_id"]].add(message.partition())
    assert len(messages) == n
    assert set(ids) == expected_ids
    assert max(ids.values()) == 1
    assert all(len(partitions) == 1 for partitions in partitions_of_user.values())


def test_malformed_records_arrive_as_counted(kafka_bootstrap: str, topic: str) -> None:
    n = 2_000
    sink = KafkaSink(kafka_bootstrap, topic, connect_timeout=10.0)
    totals = run(click_stream(12, malformed_fraction=0.1), sink, count=n, pace=False, progress=None)
    assert totals.ok, totals.summary()
    kinds = Counter(classify(message.value()) for message in consume(kafka_bootstrap, topic, n))
    assert kinds[VALID] == n - sum(totals.malformed.values())
    for kind in MALFORMED_KINDS:
        assert kinds[kind] == totals.malformed[kind] > 0


def test_paced_run_holds_the_rate(kafka_bootstrap: str, topic: str) -> None:
    sink = KafkaSink(kafka_bootstrap, topic, connect_timeout=10.0)
    totals = run(click_stream(13), sink, duration=3.0, pace=True, progress=None)
    assert totals.ok, totals.summary()
    assert totals.sent == 3_000
    assert totals.send_seconds == pytest.approx(3.0, abs=0.25)


def test_a_missing_topic_is_named(kafka_bootstrap: str) -> None:
    name = f"clickgen-missing-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=name):
        KafkaSink(kafka_bootstrap, name, connect_timeout=10.0)
    assert time.monotonic() - started < 15


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "spotlake_dev.clickgen", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def test_two_workers_send_every_event_once_each_user_in_order(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    n, seed, users = 6_001, 21, 300
    totals_file = tmp_path / "totals.json"
    done = run_cli(
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--workers",
        "2",
        "--count",
        str(n),
        "--rate",
        "1000",
        "--unthrottled",
        "--seed",
        str(seed),
        "--users",
        str(users),
        "--start",
        "2024-05-01T00:00:00Z",
        "--late-fraction",
        "0",
        "--out-of-order-fraction",
        "0",
        "--malformed-fraction",
        "0",
        "--totals-json",
        str(totals_file),
    )
    assert done.returncode == 0, done.stderr
    totals = json.loads(totals_file.read_text())
    assert totals["sent"] == totals["delivered"] == n and totals["failed"] == 0, totals

    # The records the two workers make, made here with the same library code, for comparison.
    plan = WorkerPlan(
        StreamConfig(
            seed=seed, start_ms=START_MS, users=users, late_fraction=0.0, out_of_order_fraction=0.0, malformed_fraction=0.0
        ),
        ConstantRate(1_000.0),
        2,
        NullSink,
        count=n,
    )
    expected = [
        json.loads(value)["event_id"]
        for index in range(2)
        for _, value, _, _ in plan.stream(index).records(count=plan.count_of(index))
    ]
    assert len(expected) == len(set(expected)) == n

    messages = consume(kafka_bootstrap, topic, n)
    ids = Counter(json.loads(message.value())["event_id"] for message in messages)
    assert len(messages) == n and set(ids) == set(expected) and max(ids.values()) == 1
    # Each user's events are in one partition, and each of its sessions' events in order there.
    partitions_of_user: dict[str, set[int]] = defaultdict(set)
    last_seq: dict[str, int] = {}
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        event = json.loads(message.value())
        partitions_of_user[event["user_id"]].add(message.partition())
        assert event["session_seq"] == last_seq.get(event["session_id"], -1) + 1, event
        last_seq[event["session_id"]] = event["session_seq"]
    assert all(len(partitions) == 1 for partitions in partitions_of_user.values())


def test_two_workers_and_a_broker_that_is_down_give_a_clear_error() -> None:
    started = time.monotonic()
    done = run_cli("--bootstrap", "127.0.0.1:1", "--workers", "2", "--count", "10", "--connect-timeout", "2", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr and "worker" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
