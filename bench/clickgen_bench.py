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

``--workers 1,2`` measures (b) and (d) once per number of worker processes given
(the generator's ``--workers``, through the same code: one process runs the stream
in this one, more run :func:`spotlake_dev.clickgen.workers.run_workers`); each is a row.

Results go to ``docs/benchmarks/clickgen.md`` (or stdout with ``--print-only``).
``--generate-only`` runs (d) alone and prints it.

Usage::

    PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py --bootstrap 127.0.0.1:19092
    PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py --generate-only
    PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py --generate-only --workers 1,2
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import multiprocessing
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
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from spotlake.errors import ConfigError
from spotlake_dev.clickgen.behaviour import ClickStream, StreamConfig
from spotlake_dev.clickgen.cli import default_bootstrap, parse_workers
from spotlake_dev.clickgen.delivery import DeliveryTotals, KafkaSink, NullSink, Sink, producer_config
from spotlake_dev.clickgen.rate import ConstantRate
from spotlake_dev.clickgen.run import RunTotals, run
from spotlake_dev.clickgen.workers import WorkerPlan, run_workers

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks" / "clickgen.md"
START_MS = 1_714_521_600_000
NOMINAL_RATE = 1_000.0  # sets event times and the number of concurrent sessions of flat-out runs


def click_stream(seed: int, rate: float = NOMINAL_RATE) -> ClickStream:
    """The stream the benchmark sends: CLI defaults (2% late, 1% out of order, 10,000 users)."""
    return ClickStream(StreamConfig(seed=seed, start_ms=START_MS), ConstantRate(rate))


def flat_out(seed: int, events: int, workers: int, make_sink: Callable[[], Sink]) -> RunTotals:
    """``events`` of :func:`click_stream` flat out into ``make_sink()``: in this process for one
    worker, as the CLI does, else in ``workers`` processes with the CLI's ``--workers`` code."""
    if workers == 1:
        return run(click_stream(seed), make_sink(), count=events, pace=False, progress=None)
    plan = WorkerPlan(
        StreamConfig(seed=seed, start_ms=START_MS), ConstantRate(NOMINAL_RATE), workers, make_sink, count=events, pace=False
    )
    return run_workers(plan, progress=None)


def worker_counts(text: str) -> list[int]:
    """``--workers 1,2,4``: the numbers of worker processes to measure."""
    try:
        return [parse_workers(part) for part in text.split(",")]
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (a comma-separated list, e.g. --workers 1,2)") from None


def generator_name(workers: int) -> str:
    return "generator" if workers == 1 else f"generator, {workers} workers"


def bare_name(processes: int) -> str:
    return "bare producer" if processes == 1 else f"bare producer, {processes} processes"


@dataclass
class Outcome:
    events: int
    seconds: float
    delivered: int
    failed: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def bare_producer(
    bootstrap: str, topic: str, messages: list[tuple[bytes, str]], start: Any = None
) -> tuple[Outcome, float, float]:
    """Send pre-built messages with a plain produce/poll loop and the generator's producer settings.

    Returns the outcome and the ``time.monotonic()`` of its start and end (the same clock in
    every process of this machine). With ``start`` (a barrier), the clock starts once every
    party of it is connected and ready.
    """
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
    if start is not None:
        start.wait()
    started = time.monotonic()
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
    ended = time.monotonic()
    if left:
        raise SystemExit(f"bare producer: {left} messages still queued after 60 s; is the broker healthy?")
    return Outcome(len(messages), ended - started, totals.delivered, totals.failed), started, ended


def _bare_worker(bootstrap: str, topic: str, events: int, index: int, processes: int, start: Any, results: Any) -> None:
    """One of several bare-loop processes: its share of the same pre-built messages (made before
    the start), sent flat out."""
    messages = bench_messages(events)[index::processes]
    outcome, started, ended = bare_producer(bootstrap, topic, messages, start)
    results.put((outcome.delivered, outcome.failed, started, ended))


def parallel_bare_producer(bootstrap: str, topic: str, events: int, processes: int) -> Outcome:
    """The bare loop in ``processes`` processes (spawned, like the generator's workers), each sending
    its share of the messages; timed from their common start to the last one's last delivery report."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_bare_worker, args=(bootstrap, topic, events, index, processes, start, results))
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    parts = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
        if worker.exitcode != 0:
            raise SystemExit(f"a bare producer process ended with exit status {worker.exitcode}")
    seconds = max(p[3] for p in parts) - min(p[2] for p in parts)
    return Outcome(events, seconds, sum(p[0] for p in parts), sum(p[1] for p in parts))


def bench_messages(events: int) -> list[tuple[bytes, str]]:
    """The bare loop's pre-built messages: the generator's own, for a fixed seed."""
    return [(key, value) for key, value, _, _ in click_stream(1234).records(count=events)]


def generator(bootstrap: str, topic: str, events: int, seed: int, workers: int = 1) -> Outcome:
    """The generator flat out through :class:`KafkaSink`, timed until every delivery report is in.

    With several workers, each has its own producer; the time runs from their common
    start (after they have connected) until the last one has every report.
    """
    make_sink = functools.partial(KafkaSink, bootstrap, topic, connect_timeout=10.0)
    totals = flat_out(seed, events, workers, make_sink)
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


def generate_only(events: int, repetitions: int, workers: int = 1) -> list[float]:
    rates = []
    for repetition in range(repetitions):
        totals = flat_out(repetition, events, workers, NullSink)
        if totals.sent != events:
            raise SystemExit(f"generation with {workers} workers made {totals.sent:,} events, not {events:,}")
        rates.append(totals.rate)
    return rates


def create_topic(bootstrap: str, partitions: int) -> tuple[AdminClient, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"clickgen-bench-{uuid.uuid4().hex[:8]}"
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    except KafkaException as exc:
        raise SystemExit(
            f"cannot create a topic on Kafka at {bootstrap} ({exc}); start the local stack with `make up` or pass --bootstrap"
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


def generate_only_table(rates: dict[int, list[float]], events: int) -> list[str]:
    """One row per number of worker processes."""
    lines = [
        "| processes | events per run | runs | median events/s | min | max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, runs in rates.items():
        lines.append(
            f"| {workers} | {events:,} | {len(runs)} | {statistics.median(runs):,.0f} | {min(runs):,.0f} | {max(runs):,.0f} |"
        )
    return lines


def reproduce(args: argparse.Namespace) -> str:
    workers = "" if args.workers == [1] else f" --workers {','.join(map(str, args.workers))}"
    return (
        "Reproduce: `PYTHONPATH=plugins .venv/bin/python bench/clickgen_bench.py "
        f"--bootstrap {args.bootstrap} --events {args.events} --repetitions {args.repetitions}{workers}`"
    )


def report(
    args: argparse.Namespace,
    bare: dict[int, list[Outcome]],
    gen: dict[int, list[Outcome]],
    steady: dict[str, float],
    pure: dict[int, list[float]],
    payload: float,
) -> str:
    bare_medians = {processes: statistics.median(o.rate for o in outcomes) for processes, outcomes in bare.items()}
    bare_median = bare_medians[1]
    medians = {workers: statistics.median(o.rate for o in outcomes) for workers, outcomes in gen.items()}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Click-stream generator benchmark",
        "",
        f"Measured {when} on {machine()}, against the local Kafka broker at `{args.bootstrap}` "
        f"(same machine), topic with {args.partitions} partitions. Producer settings for both "
        "loops: `acks=all`, `enable.idempotence=true`, `compression.type=lz4`, `linger.ms=20`, "
        "`batch.num.messages=10000`, `batch.size=1000000`, a delivery report counted for every message.",
        "",
        reproduce(args),
        "",
        "## Maximum sustained rate",
        "",
        f"{args.events:,} events per run, {args.repetitions} alternating runs each; a run ends when every "
        "delivery report is in. The bare loop sends pre-built messages (the generator's own payloads, "
        f"{payload:,.0f} bytes on average), so it is the most this producer, broker and machine allow. "
        "A generator with N workers runs N processes, each with its own producer and 1/N of the events "
        "(and of the users); its time runs from their common start to the last delivery report. "
        "The bare loop in N processes (each sending 1/N of the messages, timed the same way) is the "
        "like-for-like limit of N processes; the target is set against the one-process loop.",
        "",
        "| loop | median events/s | runs (events/s) | delivered | failed |",
        "|---|---:|---|---:|---:|",
    ]
    rows = [(bare_name(processes), bare[processes], median) for processes, median in bare_medians.items()]
    rows += [(generator_name(workers), gen[workers], median) for workers, median in medians.items()]
    for name, outcomes, median in rows:
        runs = ", ".join(f"{o.rate:,.0f}" for o in outcomes)
        delivered = sum(o.delivered for o in outcomes)
        failed = sum(o.failed for o in outcomes)
        lines.append(f"| {name} | {median:,.0f} | {runs} | {delivered:,} | {failed:,} |")
    for workers, median in medians.items():
        ratio = median / bare_median
        name = generator_name(workers).capitalize()
        lines += [
            "",
            f"**{name} / bare producer: {ratio:.0%}** (targets: at least 50,000 events/s and at least 50%; "
            f"{'met' if median >= 50_000 and ratio >= 0.5 else 'NOT met'})"
            + (
                f"; against the bare loop in {workers} processes ({bare_medians[workers]:,.0f} events/s): "
                f"{median / bare_medians[workers]:.0%}."
                if workers > 1
                else "."
            ),
        ]
    lines += [
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
        "Seconds are whole wall-clock seconds from the first send; a second counts the events handed to the producer in it.",
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
    parser.add_argument("--bootstrap", default=default_bootstrap(), help="Kafka bootstrap (default: %(default)s)")
    parser.add_argument("--events", type=int, default=500_000, help="events per run (default: %(default)s)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each loop (default: %(default)s)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the topic (default: %(default)s)")
    parser.add_argument("--paced-rate", type=float, default=1_000.0, help="requested rate (default: %(default)s)")
    parser.add_argument("--paced-seconds", type=float, default=60.0, help="paced run length (default: %(default)s)")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1],
        metavar="N[,N...]",
        help="measure the generator with each of these numbers of worker processes, e.g. 1,2 (default: 1)",
    )
    parser.add_argument("--generate-only", action="store_true", help="measure generation into a null sink and print")
    parser.add_argument("--print-only", action="store_true", help=f"print the report instead of writing {REPORT}")
    args = parser.parse_args(argv)

    if args.generate_only:
        rates = {workers: generate_only(args.events, args.repetitions, workers) for workers in args.workers}
        print(f"Generation alone on {machine()}:\n")
        print("\n".join(generate_only_table(rates, args.events)))
        return 0

    messages = bench_messages(args.events)
    payload = sum(len(value) for _, value in messages) / len(messages)
    admin, topic = create_topic(args.bootstrap, args.partitions)
    try:
        # the bare loop in one process (the reference), and in as many processes as each generator row
        bare: dict[int, list[Outcome]] = {processes: [] for processes in sorted({1, *args.workers})}
        gen: dict[int, list[Outcome]] = {workers: [] for workers in args.workers}
        for repetition in range(args.repetitions):
            for processes, outcomes in bare.items():
                if processes == 1:
                    outcomes.append(bare_producer(args.bootstrap, topic, messages)[0])
                else:
                    outcomes.append(parallel_bare_producer(args.bootstrap, topic, args.events, processes))
                print(f"{bare_name(processes)} run {repetition + 1}: {outcomes[-1].rate:,.0f} events/s", file=sys.stderr)
            for workers, outcomes in gen.items():
                outcomes.append(generator(args.bootstrap, topic, args.events, seed=repetition, workers=workers))
                print(
                    f"{generator_name(workers)} run {repetition + 1}: {outcomes[-1].rate:,.0f} events/s",
                    file=sys.stderr,
                )
        del messages
        print(f"paced run: {args.paced_rate:g} events/s for {args.paced_seconds:g} s", file=sys.stderr)
        steady = paced(args.bootstrap, topic, args.paced_rate, args.paced_seconds)
    finally:
        admin.delete_topics([topic])
    pure = {workers: generate_only(args.events, args.repetitions, workers) for workers in args.workers}
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
