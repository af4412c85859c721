"""``python -m spotlake_dev.clickgen``: produce realistic fake click events at a controlled rate.

Examples::

    # 1,000 events/s for a minute into the local stack's Kafka, topic "clicks"
    python -m spotlake_dev.clickgen --rate 1000 --duration 60

    # ten events on stdout, as fast as possible, always the same ones
    python -m spotlake_dev.clickgen --dry-run --unthrottled --count 10 --seed 7 --start 2024-05-01T00:00:00Z

    # 100,000 events, 2% malformed, into a JSON-lines file
    python -m spotlake_dev.clickgen --output /tmp/clicks.jsonl --unthrottled --count 100000 \\
        --malformed-fraction 0.02

    # flat out from 4 processes (each user's events from one of them, in order)
    python -m spotlake_dev.clickgen --workers 4 --unthrottled --count 2000000 --seed 7

Exit status: 0 when every event was delivered; 1 when some were not
(delivery errors or a timeout) or a worker process failed; 2 for bad
arguments (including a missing topic); 3 when Kafka cannot be reached; 130
after Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from spotlake.errors import ConfigError
from spotlake.stack import read_stack_env
from spotlake_dev.clickgen.behaviour import ClickStream, Funnel, StreamConfig
from spotlake_dev.clickgen.delivery import (
    COMPRESSIONS,
    KAFKA_LOGGER,
    JsonLinesSink,
    KafkaSink,
    KafkaUnavailableError,
    Sink,
)
from spotlake_dev.clickgen.events import iso_millis
from spotlake_dev.clickgen.rate import PROFILES, RateProfile, make_profile
from spotlake_dev.clickgen.run import RunTotals, run
from spotlake_dev.clickgen.workers import WorkerFailedError, WorkerPlan, run_workers

DEFAULT_TOPIC = "clicks"
EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def default_bootstrap() -> str:
    """``127.0.0.1:$SPOTLAKE_KAFKA_PORT``, the port from the environment or ``stack.env``."""
    port = read_stack_env().get("SPOTLAKE_KAFKA_PORT", "19092")
    return f"127.0.0.1:{port}"


def parse_start(text: str) -> int:
    """Epoch milliseconds from ``text``: an integer of epoch ms, or ISO-8601 (no zone means UTC)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"start time {text!r} is neither epoch milliseconds nor ISO-8601; "
            "fix: pass --start 2024-05-01T00:00:00Z or --start 1714521600000"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def parse_workers(text: str) -> int:
    """The number of worker processes in ``text``: a whole number, 1 or more."""
    fix = "fix: pass --workers 1 (one process, the default) or more, at most one per CPU core, e.g. --workers 4"
    try:
        workers = int(text.strip())
    except ValueError:
        raise ConfigError(f"--workers {text!r} is not a whole number of processes; {fix}") from None
    if workers < 1:
        raise ConfigError(f"--workers {workers} is less than 1: at least one process must generate; {fix}")
    return workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spotlake_dev.clickgen",
        description="Produce realistic fake click events (JSON, keyed by user_id) into Kafka at a "
        "controlled rate, or print them with --dry-run. The schema is in docs/events.md.",
        epilog="Without --count or --duration the generator runs until Ctrl-C. Progress goes to "
        "stderr; totals are printed on exit, including after Ctrl-C. Exit status: 0 all delivered, "
        "1 some not delivered, 2 bad arguments, 3 Kafka unreachable, 130 interrupted.",
    )
    target = parser.add_argument_group("destination")
    target.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers, host:port[,host:port] "
        f"(default: 127.0.0.1:$SPOTLAKE_KAFKA_PORT from stack.env, now {default_bootstrap()})",
    )
    target.add_argument("--topic", default=DEFAULT_TOPIC, help="topic to produce to; it must exist (default: %(default)s)")
    target.add_argument("--dry-run", action="store_true", help="write JSON lines to stdout (or --output) instead of Kafka")
    target.add_argument("--output", type=Path, help="JSON-lines file to write instead of Kafka (implies --dry-run)")
    target.add_argument("--compression", choices=COMPRESSIONS, default="lz4", help="(default: %(default)s)")
    target.add_argument("--linger-ms", type=int, default=20, help="producer batching delay (default: %(default)s)")
    target.add_argument("--batch-messages", type=int, default=10_000, help="messages per batch at most (default: %(default)s)")
    target.add_argument(
        "--delivery-timeout",
        type=float,
        default=30.0,
        help="seconds a message may wait for the broker before it counts as failed (default: %(default)s)",
    )
    target.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the broker at start (default: %(default)s)",
    )

    amount = parser.add_argument_group("rate and amount")
    amount.add_argument("--rate", type=float, default=100.0, help="target events/s, fractions allowed (default: %(default)s)")
    amount.add_argument(
        "--unthrottled",
        action="store_true",
        help="send as fast as possible; event times still follow --rate and --profile",
    )
    amount.add_argument("--count", type=int, help="stop after this many events")
    amount.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="processes generating in parallel, each with a share of the users, rate and --count "
        "and its own producer; not with --dry-run (default: %(default)s)",
    )
    amount.add_argument("--duration", type=float, help="stop after this many seconds of schedule")
    amount.add_argument("--profile", choices=PROFILES, default="constant", help="rate over time (default: %(default)s)")
    amount.add_argument("--diurnal-amplitude", type=float, default=0.6, help="diurnal swing, 0..<1 (default: %(default)s)")
    amount.add_argument("--diurnal-period", type=float, default=86_400.0, help="length of the day in s (default: %(default)s)")
    amount.add_argument("--diurnal-peak-hour", type=float, default=20.0, help="busiest hour, UTC (default: %(default)s)")
    amount.add_argument("--burst-factor", type=float, default=5.0, help="rate multiplier in a burst (default: %(default)s)")
    amount.add_argument("--burst-seconds", type=float, default=5.0, help="length of a burst (default: %(default)s)")
    amount.add_argument("--burst-gap", type=float, default=60.0, help="mean seconds between bursts (default: %(default)s)")

    sim = parser.add_argument_group("simulation")
    sim.add_argument(
        "--seed",
        type=int,
        help="random seed; the same seed and --start give the same events (default: a random seed, printed at start)",
    )
    sim.add_argument("--start", help="event time of the first event, ISO-8601 or epoch ms (default: now)")
    sim.add_argument("--users", type=int, default=10_000, help="number of users (default: %(default)s)")
    sim.add_argument("--sessions", type=int, help="sessions running at once (default: rate x 15, at most --users)")
    defaults = Funnel()
    for stage, text in (
        ("product", "landing to product page"),
        ("cart", "product to add to cart"),
        ("checkout", "cart to checkout"),
        ("purchase", "checkout to purchase"),
    ):
        sim.add_argument(
            f"--funnel-{stage}",
            type=float,
            default=getattr(defaults, stage),
            help=f"chance of going on from {text} (default: %(default)s)",
        )
    config = StreamConfig()
    sim.add_argument(
        "--late-fraction",
        type=float,
        default=config.late_fraction,
        help="fraction of events whose event time is older (default: %(default)s)",
    )
    sim.add_argument(
        "--late-max-seconds",
        type=float,
        default=config.late_max_seconds,
        help="a late event is older by up to this many seconds (default: %(default)s)",
    )
    sim.add_argument(
        "--out-of-order-fraction",
        type=float,
        default=config.out_of_order_fraction,
        help="fraction of events held back and sent later (default: %(default)s)",
    )
    sim.add_argument(
        "--out-of-order-max-delay",
        type=int,
        default=config.out_of_order_max_delay,
        help="held-back events go out up to this many positions later (default: %(default)s)",
    )
    sim.add_argument(
        "--malformed-fraction",
        type=float,
        default=config.malformed_fraction,
        help="fraction of malformed records: bad JSON, missing field, wrong type, unknown schema_version (default: %(default)s)",
    )

    report = parser.add_argument_group("reporting")
    report.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        help="seconds between progress lines on stderr, 0 for none (default: %(default)s)",
    )
    report.add_argument("--totals-json", type=Path, help="also write the totals as JSON to this file")
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _note(text: str) -> None:
    print(f"clickgen: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator with command-line ``argv``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # librdkafka's warnings and errors (e.g. a broker going away) go to stderr while we run.
    kafka_log = logging.getLogger(KAFKA_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("clickgen: kafka: %(message)s"))
    kafka_log.addHandler(handler)
    kafka_log.setLevel(logging.WARNING)
    try:
        return _main(args)
    except ConfigError as exc:
        _note(f"error: {exc}")
        return EXIT_USAGE
    except KafkaUnavailableError as exc:
        _note(f"error: {exc}")
        return EXIT_UNREACHABLE
    finally:
        kafka_log.removeHandler(handler)


def _main(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 0:
        raise ConfigError(f"--count {args.count} is negative; fix: pass --count 0 or more")
    workers = parse_workers(args.workers)
    dry_run = args.dry_run or args.output is not None
    if workers > 1 and dry_run:
        raise ConfigError(
            f"--workers {workers} does not work with --dry-run or --output: the events of several "
            "processes cannot go to one output in a reproducible order; fix: drop --workers "
            "(a dry run is one process), or send to Kafka"
        )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    start_ms = parse_start(args.start) if args.start else int(time.time() * 1000)
    profile = make_profile(
        args.profile,
        args.rate,
        seed=seed,
        start_ms=start_ms,
        diurnal_amplitude=args.diurnal_amplitude,
        diurnal_period=args.diurnal_period,
        diurnal_peak_hour=args.diurnal_peak_hour,
        burst_factor=args.burst_factor,
        burst_seconds=args.burst_seconds,
        burst_gap=args.burst_gap,
    )
    config = StreamConfig(
        seed=seed,
        start_ms=start_ms,
        users=args.users,
        sessions=args.sessions,
        funnel=Funnel(args.funnel_product, args.funnel_cart, args.funnel_checkout, args.funnel_purchase),
        late_fraction=args.late_fraction,
        late_max_seconds=args.late_max_seconds,
        out_of_order_fraction=args.out_of_order_fraction,
        out_of_order_max_delay=args.out_of_order_max_delay,
        malformed_fraction=args.malformed_fraction,
    )
    if workers > 1:
        return _main_workers(args, config, profile, workers)
    stream = ClickStream(config, profile)
    sink: Sink
    if dry_run:
        sink = JsonLinesSink(args.output)
        where = str(args.output) if args.output else "stdout"
    else:
        bootstrap = args.bootstrap or default_bootstrap()
        sink = KafkaSink(bootstrap, args.topic, **kafka_settings(args))
        where = f"Kafka {bootstrap} topic {args.topic} ({sink.partitions} partitions)"
    _note(_start_line(args, where, config, stream.sessions))
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        totals = run(
            stream,
            sink,
            count=args.count,
            duration=args.duration,
            pace=not args.unthrottled,
            progress=sys.stderr if args.progress_every > 0 else None,
            progress_every=args.progress_every,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _finish(totals, args)


def kafka_settings(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of the generator's :class:`KafkaSink` besides bootstrap and topic."""
    return {
        "connect_timeout": args.connect_timeout,
        "compression": args.compression,
        "linger_ms": args.linger_ms,
        "batch_messages": args.batch_messages,
        "delivery_timeout": args.delivery_timeout,
    }


def kafka_sink_factory(args: argparse.Namespace, bootstrap: str) -> Callable[[], Sink]:
    """What each worker process calls to make its own sink (a producer must not cross processes)."""
    return functools.partial(KafkaSink, bootstrap, args.topic, **kafka_settings(args))


def _start_line(args: argparse.Namespace, where: str, config: StreamConfig, sessions: int, workers: int = 1) -> str:
    limit = []
    if args.count is not None:
        limit.append(f"{args.count:,} events")
    if args.duration is not None:
        limit.append(f"{args.duration:g} s")
    processes = f", {workers} worker processes" if workers > 1 else ""
    return (
        f"to {where}: {'unthrottled' if args.unthrottled else f'{args.rate:g} events/s'} "
        f"({args.profile}), {' or '.join(limit) or 'until Ctrl-C'}; seed {config.seed}, "
        f"start {iso_millis(config.start_ms or 0)}, {config.users:,} users, {sessions:,} sessions at once"
        f"{processes}"
    )


# Exit status of a failed worker, by the class name of its error.
_WORKER_EXITS = {KafkaUnavailableError.__name__: EXIT_UNREACHABLE, ConfigError.__name__: EXIT_USAGE}


def _main_workers(args: argparse.Namespace, config: StreamConfig, profile: RateProfile, workers: int) -> int:
    """Run the generator in ``workers`` processes (see :mod:`spotlake_dev.clickgen.workers`)."""
    bootstrap = args.bootstrap or default_bootstrap()
    plan = WorkerPlan(
        config,
        profile,
        workers,
        kafka_sink_factory(args, bootstrap),
        count=args.count,
        duration=args.duration,
        pace=not args.unthrottled,
    )
    sessions = sum(plan.stream(index).sessions for index in range(workers))  # checks --users too
    cpus = os.cpu_count() or 1
    if workers > cpus:
        _note(f"note: {workers} workers on {cpus} CPUs share them; more workers than CPUs adds no speed")

    def ready(partitions: list[int | None]) -> None:
        known = f" ({partitions[0]} partitions)" if partitions[0] is not None else ""
        where = f"Kafka {bootstrap} topic {args.topic}{known}"
        _note(_start_line(args, where, config, sessions, workers))

    try:
        totals = run_workers(
            plan,
            progress=sys.stderr if args.progress_every > 0 else None,
            progress_every=args.progress_every,
            on_ready=ready,
        )
    except WorkerFailedError as exc:
        if exc.totals is not None:  # sending had started: what the other workers did
            _finish(exc.totals, args)
        _note(f"error: {exc}")
        return _WORKER_EXITS.get(exc.kind, EXIT_UNDELIVERED)
    return _finish(totals, args)


def _finish(totals: RunTotals, args: argparse.Namespace) -> int:
    for line in totals.summary().splitlines():
        _note(line)
    if args.totals_json is not None:
        args.totals_json.write_text(json.dumps(totals.as_dict(), indent=2) + "\n")
    if totals.stopped_by and "broken pipe" in totals.stopped_by:
        # Keep the interpreter from failing again when it flushes stdout on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    if totals.stopped_by:
        return EXIT_INTERRUPTED
    return EXIT_OK if totals.ok else EXIT_UNDELIVERED
