"""Benchmark of the click-stream generator: how fast, how close to the producer's limit, how steady.

Measures, against a running Kafka broker (this script starts nothing; bring the
local stack up with ``make up`` first):

(a) a bare confluent-kafka producer loop sending pre-built messages (the same
    payloads the generator makes) to a fresh topic: the physical limit here;
(b) the generator, flat out, into the same topic with the same producer settings;
    (a) and (b) alternate for several repetitions and the medians are compared;
    each run counts until every delivery report is in;
(c) the generator asked for 1,000 events/s for 60 s: the achieved rate and the
    largest deviation of any whole second from the target;
(d) pure generation speed, into a sink that drops the records (no Kafka).

Results go to ``docs/benchmarks/clickgen.md`` (or stdout with ``--print-only``).
``--generate-only`` runs (d) alone and prints it.

Usage::

    PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py --bootstrap 127.0.0.1:19092
    PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py --generate-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from spotlake.clickgen.behaviour import ClickStream, StreamConfig
from spotlake.clickgen.cli import default_bootstrap
from spotlake.clickgen.delivery import DeliveryTotals, KafkaSink, NullSink, producer_config
from spotlake.clickgen.rate import ConstantRate
from spotlake.clickgen.run import run

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks" / "clickgen.md"
START_MS = 1_714_521_600_000
NOMINAL_RATE = 1_000.0  # sets event times and the number of concurrent sessions of flat-out runs


def click_stream(seed: int, rate: float = NOMINAL_RATE) -> ClickStream:
    """The stream the benchmark sends: CLI defaults (2% late, 1% out of order, 10,000 users)."""
    return ClickStream(StreamConfig(seed=seed, start_ms=START_MS), ConstantRate(rate))


@dataclass
class Outcome:
    events: int
    seconds: float
    delivered: int
    failed: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def bare_producer(bootstrap: str, topic: str, messages: list[tuple[bytes, str]]) -> Outcome:
    """Send pre-built messages with a plain produce/poll loop and the generator's producer settings."""
    totals = DeliveryTotals()

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is None:
            totals.delivered += 1
        else:
            totals.failed += 1

    config = producer_config(bootstrap)
    config["on_delivery"] = on_delivery
    producer = Producer(config)
    producer.list_topics(topic, timeout=10)
    produce, poll = producer.produce, producer.poll
    started = time.perf_counter()
    for index, (key, value) in enumerate(messages):
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                poll(0.05)
        if not index % 100:
            poll(0)
    left = producer.flush(60)
    seconds = time.perf_counter() - started
    if left:
        raise SystemExit(f"bare producer: {left} messages still queued after 60 s; is the broker healthy?")
    return Outcome(len(messages), seconds, totals.delivered, totals.failed)


def generator(bootstrap: str, topic: str, events: int, seed: int) -> Outcome:
    """The generator flat out through :class:`KafkaSink`, timed until every delivery report is in."""
    sink = KafkaSink(bootstrap, topic, connect_timeout=10.0)
    totals = run(click_stream(seed), sink, count=events, pace=False, progress=None)
    return Outcome(totals.sent, totals.seconds, totals.delivery.delivered, totals.delivery.failed)


class SendTimes:
    """Wraps a sink and records the clock time of every send."""

    def __init__(self, sink: KafkaSink, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.clock = clock
        self.times: list[float] = []
        self.totals = sink.totals

    def send(self, key: bytes, value: str) -> None:
        self.sink.send(key, value)
        self.times.append(self.clock())

    def idle(self, seconds: float) -> None:
        self.sink.idle(seconds)

    def pending(self) -> int:
        return self.sink.pending()

    def close(self, timeout: float | None = None) -> DeliveryTotals:
        return self.sink.close(timeout)

    def abandon(self) -> DeliveryTotals:
        return self.sink.abandon()


def paced(bootstrap: str, topic: str, rate: float, seconds: float) -> dict[str, float]:
    """Ask for ``rate`` events/s for ``seconds``; measure what each wall-clock second got."""
    sink = SendTimes(KafkaSink(bootstrap, topic, connect_timeout=10.0))
    totals = run(click_stream(99, rate), sink, duration=seconds, pace=True, progress=None)
    origin = sink.times[0]
    per_second = Counter(int(t - origin) for t in sink.times)
    whole = [per_second[s] for s in range(int(seconds))]
    return {
        "requested": rate,
        "seconds": seconds,
        "sent": totals.sent,
        "delivered": totals.delivery.delivered,
        "failed": totals.delivery.failed,
        "achieved": totals.rate,
        "min_second": min(whole),
        "max_second": max(whole),
        "max_deviation": max(abs(n - rate) for n in whole) / rate,
        "stdev_second": statistics.pstdev(whole),
    }


def generate_only(events: int, repetitions: int) -> list[float]:
    rates = []
    for repetition in range(repetitions):
        totals = run(click_stream(repetition), NullSink(), count=events, pace=False, progress=None)
        rates.append(totals.rate)
    return rates


def create_topic(bootstrap: str, partitions: int) -> tuple[AdminClient, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"clickgen-bench-{uuid.uuid4().hex[:8]}"
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(
            30
        )
    except KafkaException as exc:
        raise SystemExit(
            f"cannot create a topic on Kafka at {bootstrap} ({exc}); start the local stack with `make up` "
            "or pass --bootstrap"
        ) from None
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {name} did not appear on {bootstrap} within 30 s")
        time.sleep(0.2)
    return admin, name


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"
    )


def generate_only_table(rates: list[float], events: int) -> list[str]:
    return [
        "| events per run | runs | median events/s | min | max |",
        "|---:|---:|---:|---:|---:|",
        f"| {events:,} | {len(rates)} | {statistics.median(rates):,.0f} "
        f"| {min(rates):,.0f} | {max(rates):,.0f} |",
    ]


def report(
    args: argparse.Namespace,
    bare: list[Outcome],
    gen: list[Outcome],
    steady: dict[str, float],
    pure: list[float],
    payload: float,
) -> str:
    bare_median = statistics.median(o.rate for o in bare)
    gen_median = statistics.median(o.rate for o in gen)
    ratio = gen_median / bare_median
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Click-stream generator benchmark",
        "",
        f"Measured {when} on {machine()}, against the local Kafka broker at `{args.bootstrap}` "
        f"(same machine), topic with {args.partitions} partitions. Producer settings for both "
        "loops: `acks=all`, `enable.idempotence=true`, `compression.type=lz4`, `linger.ms=20`, "
        "`batch.num.messages=10000`, `batch.size=1000000`, a delivery report counted for every message.",
        "",
        "Reproduce: `PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py "
        f"--bootstrap {args.bootstrap} --events {args.events} --repetitions {args.repetitions}`",
        "",
        "## Maximum sustained rate",
        "",
        f"{args.events:,} events per run, {args.repetitions} alternating runs each; a run ends when every "
        "delivery report is in. The bare loop sends pre-built messages (the generator's own payloads, "
        f"{payload:,.0f} bytes on average), so it is the most this producer, broker and machine allow.",
        "",
        "| loop | median events/s | runs (events/s) | delivered | failed |",
        "|---|---:|---|---:|---:|",
    ]
    for name, outcomes, median in (("bare producer", bare, bare_median), ("generator", gen, gen_median)):
        runs = ", ".join(f"{o.rate:,.0f}" for o in outcomes)
        delivered = sum(o.delivered for o in outcomes)
        failed = sum(o.failed for o in outcomes)
        lines.append(f"| {name} | {median:,.0f} | {runs} | {delivered:,} | {failed:,} |")
    lines += [
        "",
        f"**Generator / bare producer: {ratio:.0%}** (targets: at least 50,000 events/s and at least 50%; "
        f"{'met' if gen_median >= 50_000 and ratio >= 0.5 else 'NOT met'}).",
        "",
        f"## Holding a requested rate ({steady['requested']:,.0f} events/s for {steady['seconds']:.0f} s)",
        "",
        "| requested | achieved | sent | delivered | failed | slowest second | fastest second "
        "| max deviation of a second | st. dev. per second |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {steady['requested']:,.0f} | {steady['achieved']:,.1f} | {steady['sent']:,} | "
        f"{steady['delivered']:,} | {steady['failed']:,} | {steady['min_second']:,} | "
        f"{steady['max_second']:,} | "
        f"{steady['max_deviation']:.2%} | {steady['stdev_second']:.1f} |",
        "",
        "Seconds are whole wall-clock seconds from the first send; a second counts the events handed to "
        "the producer in it.",
        "",
        "## Generation alone",
        "",
        "The generator into a sink that drops records (no Kafka): the cost of making events.",
        "",
        *generate_only_table(pure, args.events),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap", default=default_bootstrap(), help="Kafka bootstrap (default: %(default)s)"
    )
    parser.add_argument("--events", type=int, default=500_000, help="events per run (default: %(default)s)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each loop (default: %(default)s)")
    parser.add_argument(
        "--partitions", type=int, default=3, help="partitions of the topic (default: %(default)s)"
    )
    parser.add_argument(
        "--paced-rate", type=float, default=1_000.0, help="requested rate (default: %(default)s)"
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=60.0, help="paced run length (default: %(default)s)"
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="measure generation into a null sink and print"
    )
    parser.add_argument(
        "--print-only", action="store_true", help=f"print the report instead of writing {REPORT}"
    )
    args = parser.parse_args(argv)

    if args.generate_only:
        rates = generate_only(args.events, args.repetitions)
        print(f"Generation alone on {machine()}:\n")
        print("\n".join(generate_only_table(rates, args.events)))
        return 0

    messages = [(key, value) for key, value, _, _ in click_stream(1234).records(count=args.events)]
    payload = sum(len(value) for _, value in messages) / len(messages)
    admin, topic = create_topic(args.bootstrap, args.partitions)
    try:
        bare: list[Outcome] = []
        gen: list[Outcome] = []
        for repetition in range(args.repetitions):
            bare.append(bare_producer(args.bootstrap, topic, messages))
            print(f"bare producer run {repetition + 1}: {bare[-1].rate:,.0f} events/s", file=sys.stderr)
            gen.append(generator(args.bootstrap, topic, args.events, seed=repetition))
            print(f"generator run {repetition + 1}: {gen[-1].rate:,.0f} events/s", file=sys.stderr)
        del messages
        print(f"paced run: {args.paced_rate:g} events/s for {args.paced_seconds:g} s", file=sys.stderr)
        steady = paced(args.bootstrap, topic, args.paced_rate, args.paced_seconds)
    finally:
        admin.delete_topics([topic])
    pure = generate_only(args.events, args.repetitions)
    text = report(args, bare, gen, steady, pure, payload)
    if args.print_only:
        print(text)
    else:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(text)
        print(f"wrote {REPORT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
