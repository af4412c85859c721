"""Several worker processes that generate one click stream together (``--workers N``).

One Python process makes about 450,000 events/s and hands about 240,000 a second
to Kafka (see ``docs/benchmarks/clickgen.md``); the producer alone could take
about twice that. :func:`run_workers` starts ``N`` worker processes; worker ``i`` (0-based)
runs share ``i`` of ``N`` of the stream (:class:`~spotlake_dev.clickgen.behaviour.Share`):

- the users ``u`` with ``u % N == i``, so each user's events come from one
  process, in order, into the user's partition (messages are keyed by user);
- the rate profile divided by ``N``, offset so that the shares interleave
  (:class:`~spotlake_dev.clickgen.rate.RateShare`); ``--count`` split so that the
  parts add up (the first ``count % N`` workers make one more); the same
  ``--duration``; the same late, out-of-order and malformed fractions;
- its own sink (producer), made in the worker from the picklable
  :attr:`WorkerPlan.make_sink`.

The parent makes no producer. It waits until every worker is ready (its sink
made: a Kafka sink has checked the broker and the topic by then), starts them
together, prints progress lines with the workers' sums and returns the sum of
their :class:`~spotlake_dev.clickgen.run.RunTotals`.

Stopping. The workers ignore SIGINT; the parent turns every SIGINT (Ctrl-C,
which the terminal sends to the whole foreground process group) and SIGTERM it
gets into one SIGTERM to each worker, which stops the worker's run as Ctrl-C
stops a single-process one: its sink is flushed and its totals reported. A
second Ctrl-C makes the workers drop what they still hold; a third kills them.
A worker that fails (an error, or its process dies) makes the parent stop the
others and raise :class:`WorkerFailedError`. A worker whose parent has gone
stops by itself within a second or so.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TextIO, cast

from spotlake.errors import SpotlakeError
from spotlake_dev.clickgen.behaviour import ClickStream, Record, Share, StreamConfig, check_limits
from spotlake_dev.clickgen.delivery import KAFKA_LOGGER, DeliveryTotals, Sink
from spotlake_dev.clickgen.rate import RateProfile
from spotlake_dev.clickgen.run import Progress, RunTotals, run

# "spawn": each worker is a fresh interpreter. librdkafka runs threads and holds locks,
# and a forked copy of a process with a Producer inherits them in whatever state they
# were in (the threads themselves are not copied), so "fork" is unsafe once a producer
# exists in the parent, and even without one it copies whatever the parent has loaded
# (under Airflow or pytest, a lot). "forkserver" would be safe too, but keeps a server
# process around between runs; spawn's start-up cost (about half a second per worker,
# paid before the workers start together) does not count in the run's rates.
START_METHOD = "spawn"

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
# While the parent waits, it looks at its queue, its signals and its workers this often (s).
TICK = 0.1
# A worker tells its parent how far it got twenty times per progress line, at most
# REPORT_EVERY and at least REPORT_FLOOR seconds apart (a progress line's sums are
# that much behind at most). The reports also let a worker notice that its parent has gone.
REPORT_EVERY, REPORT_FLOOR = 0.25, 0.02
# A worker's messages are in the pipe before its process ends, but the parent may see the
# end before it reads them: it reads the queue again for this long (s) before it decides
# that the worker ended without a word.
LAST_WORDS = 0.3


class WorkerFailedError(SpotlakeError):
    """A worker failed; the message names the worker and its error.

    ``kind`` is the class name of the worker's exception (``KafkaUnavailableError``,
    ``ConfigError``, ...) or ``"exit"`` when its process ended without a report;
    ``totals`` holds the sum of the other workers' totals when sending had started,
    else None.
    """

    def __init__(self, message: str, *, worker: int, kind: str, totals: RunTotals | None) -> None:
        super().__init__(message)
        self.worker = worker
        self.kind = kind
        self.totals = totals


@dataclass(frozen=True)
class WorkerPlan:
    """What the workers run. It is pickled to every worker process, so ``make_sink`` must be
    picklable: a class or module-level function, or a ``functools.partial`` of one."""

    config: StreamConfig
    profile: RateProfile  # the whole stream's
    workers: int
    make_sink: Callable[[], Sink]
    count: int | None = None  # of the whole stream
    duration: float | None = None
    pace: bool = True
    flush_timeout: float | None = None

    def __post_init__(self) -> None:
        Share(0, self.workers)  # checks the number of workers
        check_limits(self.count, self.duration)

    def share(self, index: int) -> Share:
        return Share(index, self.workers)

    def stream(self, index: int) -> ClickStream:
        """Worker ``index``'s share of the stream."""
        return ClickStream(self.config, self.profile, self.share(index))

    def count_of(self, index: int) -> int | None:
        """How many events worker ``index`` makes (None: no limit)."""
        return None if self.count is None else self.share(index).part(self.count)


def split_count(count: int, workers: int) -> list[int]:
    """``count`` split into ``workers`` parts that add up, the first ``count % workers`` one larger."""
    return [Share(index, workers).part(count) for index in range(workers)]


# ---------------------------------------------------------------- in a worker process


class _Stopper:
    """SIGTERM stops a worker until its sink is closed; from then on its totals are final and
    must reach the parent, so a late SIGTERM (say, one landing just as ``run()`` returns) is ignored.

    The sink handed to ``run()`` is wrapped so that its ``close()`` and ``abandon()`` mark the
    end; sending goes straight to the real sink (``send`` and the rest are looked up on it).
    """

    def __init__(self) -> None:
        self.closed = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.closed:
            raise KeyboardInterrupt

    def wrap(self, sink: Sink) -> Sink:
        return cast(Sink, _ClosingSink(sink, self))


class _ClosingSink:
    def __init__(self, sink: Sink, stopper: _Stopper) -> None:
        self._sink = sink
        self._stopper = stopper

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def close(self, timeout: float | None = None) -> DeliveryTotals:
        totals = self._sink.close(timeout)
        self._stopper.closed = True
        return totals

    def abandon(self) -> DeliveryTotals:
        totals = self._sink.abandon()
        self._stopper.closed = True
        return totals


class _Prepared:
    """A stream whose users and first sessions are set up already, so that the workers start together."""

    def __init__(self, stream: ClickStream, count: int | None, duration: float | None) -> None:
        self._records = stream.records(count, duration)

    def records(self, count: int | None = None, duration: float | None = None) -> Iterator[Record]:
        return self._records


def _log_kafka_to_stderr(index: int, workers: int) -> None:
    """librdkafka's warnings and errors to stderr, as the single-process CLI has them, naming the worker."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"clickgen: worker {index} of {workers}: kafka: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def worker_main(plan: WorkerPlan, index: int, messages: Any, go: Any, report_every: float) -> None:
    """The body of worker process ``index``: make its share and sink, wait for ``go``, run, report.

    Messages to the parent, on the queue ``messages``: ``("ready", index, partitions)``,
    ``("progress", index, sent, delivered, failed, first_error, queued)``,
    ``("done", index, RunTotals)`` or ``("failed", index, kind, message)``.
    """
    stopper = _Stopper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C comes from the parent, as SIGTERM
    signal.signal(signal.SIGTERM, stopper.on_signal)
    parent = os.getppid()
    _log_kafka_to_stderr(index, plan.workers)

    def check_parent() -> None:
        if os.getppid() != parent:  # the parent is gone: nobody will stop this worker or read its totals
            raise KeyboardInterrupt

    def report(sent: int, sink: Sink) -> None:
        check_parent()
        d = sink.totals
        messages.put(("progress", index, sent, d.delivered, d.failed, d.first_error, sink.pending()))

    sink: Sink | None = None
    totals: RunTotals | None = None
    try:
        stream = _Prepared(plan.stream(index), plan.count_of(index), plan.duration)
        sink = stopper.wrap(plan.make_sink())
        messages.put(("ready", index, getattr(sink, "partitions", None)))
        while not go.wait(0.5):
            check_parent()
        totals = run(
            cast(ClickStream, stream),
            sink,
            count=plan.count_of(index),
            duration=plan.duration,
            pace=plan.pace,
            progress=None,
            progress_every=report_every,
            flush_timeout=plan.flush_timeout,
            report=report,
        )
    except KeyboardInterrupt:
        pass  # stopped before or after the run (during it, run() returns the totals)
    except SpotlakeError as exc:  # ConfigError, KafkaUnavailableError: the message says what to do
        messages.put(("failed", index, type(exc).__name__, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - any other failure is reported to the parent, which stops the rest
        traceback.print_exc()
        messages.put(("failed", index, type(exc).__name__, f"{type(exc).__name__}: {exc} (traceback above)"))
        return
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on, nothing may stop the report
    if totals is None:
        totals = RunTotals(stopped_by=INTERRUPTED)
        if sink is not None:
            totals.delivery = sink.abandon()  # nothing was sent
    if os.getppid() == parent:
        messages.put(("done", index, totals))


# ---------------------------------------------------------------- in the parent


@dataclass
class _Snapshot:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    first_error: str | None = None
    queued: int = 0


class _Parent:
    """The parent's view of its workers while they run (see :func:`run_workers`)."""

    def __init__(self, plan: WorkerPlan, messages: Any) -> None:
        self.plan = plan
        self.processes: list[BaseProcess] = []  # set once started
        self.messages = messages
        self.ready: dict[int, int | None] = {}  # worker -> partitions of its topic
        self.totals: dict[int, RunTotals] = {}
        self.lost: dict[int, str] = {}  # workers that ended without totals after they were ready, and why
        self.unstarted: set[int] = set()  # workers stopped while starting up: they sent nothing
        self.failure: tuple[int, str, str] | None = None  # (worker, kind, message), the first
        self.snapshots = [_Snapshot() for _ in range(plan.workers)]
        self.ended_at: dict[int, float] = {}
        self.signals = 0  # SIGINT and SIGTERM received
        self.forwarded = 0
        self.stopping = False

    # -- state

    def finished(self, index: int) -> bool:
        return (
            index in self.totals
            or index in self.lost
            or index in self.unstarted
            or (self.failure is not None and self.failure[0] == index)
        )

    def all_finished(self) -> bool:
        return all(self.finished(index) for index in range(len(self.processes)))

    def all_ready(self) -> bool:
        return all(index in self.ready or self.finished(index) for index in range(len(self.processes)))

    # -- events

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def handle(self, message: tuple[Any, ...]) -> None:
        what, index, *rest = message
        if what == "ready":
            self.ready[index] = rest[0]
        elif what == "progress":
            self.snapshots[index] = _Snapshot(*rest)
        elif what == "done":
            totals: RunTotals = rest[0]
            self.totals[index] = totals
            d = totals.delivery
            self.snapshots[index] = _Snapshot(totals.sent, d.delivered, d.failed, d.first_error, 0)
        elif what == "failed":
            kind, text = rest
            if self.failure is None:
                self.failure = (index, kind, f"worker {index} of {len(self.processes)}: {text}")
            else:
                self.lost[index] = text

    def signal_workers(self, *, kill: bool = False) -> None:
        for index, process in enumerate(self.processes):
            if not self.finished(index) and process.exitcode is None:
                if kill:
                    process.kill()
                else:
                    process.terminate()

    def forward_signals(self) -> None:
        """One SIGTERM to each worker per signal received; SIGKILL from the third on."""
        while self.forwarded < self.signals:
            self.forwarded += 1
            self.signal_workers(kill=self.forwarded >= 3)

    def check_processes(self, now: float) -> None:
        """Workers whose process ended without a report (once its last message had time to come)."""
        for index, process in enumerate(self.processes):
            if self.finished(index) or process.exitcode is None:
                continue
            ended = self.ended_at.setdefault(index, now)
            if now - ended < LAST_WORDS:
                continue
            why = f"its process ended with exit status {process.exitcode} without reporting its totals"
            if (self.forwarded or self.stopping) and index not in self.ready:
                self.unstarted.add(index)  # a SIGTERM before its handler was set: it had not begun
            elif self.forwarded or self.stopping:
                self.lost[index] = why
            elif self.failure is None:
                self.failure = (index, "exit", f"worker {index} of {len(self.processes)}: {why} (see above)")

    # -- the loop

    def wait(self, until: Callable[[], bool], tick: Callable[[float], None] | None = None) -> None:
        """Serve messages, signals and failures until ``until()`` or every worker has finished."""
        while not (until() or self.all_finished()):
            self.forward_signals()
            try:
                self.handle(self.messages.get(timeout=TICK))
                while True:
                    self.handle(self.messages.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            self.check_processes(now)
            if self.failure is not None and not self.stopping:
                self.stopping = True
                self.signal_workers()
            if tick is not None:
                tick(now)

    def progress(self, out: TextIO | None, every: float, started: float) -> Callable[[float], None]:
        """A ``tick`` for :meth:`wait` that prints the workers' sums every ``every`` seconds."""
        printer = Progress(out, every, started)

        def tick(now: float) -> None:
            if now >= printer.due:
                shots = self.snapshots
                first_error = next((s.first_error for s in shots if s.first_error), None)
                printer.line(
                    now,
                    sum(s.sent for s in shots),
                    sum(s.delivered for s in shots),
                    sum(s.failed for s in shots),
                    first_error,
                    sum(s.queued for s in shots),
                )

        return tick

    def outcome(self, started: float | None) -> RunTotals:
        """The sum of the workers' totals, or :class:`WorkerFailedError` raised."""
        n = len(self.processes)
        parts = [self.totals[index] for index in sorted(self.totals)]
        totals = RunTotals.combined(parts, time.monotonic() - started if started is not None else 0.0)
        lost = "; ".join(f"worker {index} of {n}: {why}" for index, why in sorted(self.lost.items()))
        not_counted = f"; not counted: {lost}" if lost else ""
        if self.failure is not None:
            index, kind, message = self.failure
            totals.stopped_by = f"worker {index} of {n} failed; the totals are the other workers'{not_counted}"
            raise WorkerFailedError(message, worker=index, kind=kind, totals=totals if started is not None else None)
        if not_counted or (self.forwarded and not totals.stopped_by):
            totals.stopped_by = f"{totals.stopped_by or INTERRUPTED}{not_counted}"
        return totals


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handling_signals(parent: _Parent) -> Iterator[None]:
    """SIGINT and SIGTERM counted by ``parent`` (forwarded to the workers), then restored."""
    if not _in_main_thread():  # signal handlers can only be set there; the caller stops us then
        yield
        return
    previous = {sig: signal.signal(sig, parent.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(plan: WorkerPlan, context: Any, messages: Any, go: Any, report_every: float, processes: list[BaseProcess]) -> None:
    """Start the worker processes, appended to ``processes`` (so that they are stopped if a later one fails to start)."""
    processes += [
        context.Process(
            target=worker_main,
            args=(plan, index, messages, go, report_every),
            name=f"clickgen-worker-{index}",
            daemon=True,  # if the parent dies of an exception, multiprocessing ends the workers
        )
        for index in range(plan.workers)
    ]
    # Started with SIGINT ignored, which a new interpreter keeps (it installs its Ctrl-C
    # handler only over the default): a Ctrl-C while a worker is still starting up must not
    # kill it with a traceback. The parent's own handler is back right after (a Ctrl-C in
    # the few milliseconds between is lost).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _in_main_thread() else None
    try:
        for process in processes:
            process.start()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_workers(
    plan: WorkerPlan,
    *,
    progress: TextIO | None = sys.stderr,
    progress_every: float = 5.0,
    on_ready: Callable[[list[int | None]], None] | None = None,
) -> RunTotals:
    """Run ``plan`` in ``plan.workers`` processes and return the sum of their totals.

    ``on_ready`` is called with the partition count each worker's sink reported
    (None for sinks other than Kafka) once every worker is ready, just before they
    start. ``seconds`` of the totals is the wall time from that start until every
    worker has finished (flushed); ``send_seconds`` is the longest worker's. Raises
    :class:`WorkerFailedError` when a worker fails (the others are stopped first).
    Ctrl-C and SIGTERM stop the workers (see the module documentation); the totals
    then have ``stopped_by`` set.
    """
    context = multiprocessing.get_context(START_METHOD)
    messages = context.Queue()
    go = context.Event()
    report_every = min(max(progress_every / 20, REPORT_FLOOR), REPORT_EVERY) if progress_every > 0 else REPORT_EVERY
    parent = _Parent(plan, messages)
    started: float | None = None
    try:
        with _handling_signals(parent):
            _start(plan, context, messages, go, report_every, parent.processes)
            parent.wait(lambda: parent.all_ready() or parent.failure is not None or parent.forwarded > 0)
            # (A failure or a signal before the start has already stopped the workers.)
            if parent.failure is None and parent.forwarded == 0 and not parent.all_finished():
                if on_ready is not None:
                    on_ready([parent.ready.get(index) for index in range(plan.workers)])
                started = time.monotonic()
                go.set()
            ticker = parent.progress(progress, progress_every if progress is not None else 0.0, started or 0.0)
            parent.wait(lambda: False, ticker if started is not None else None)
            return parent.outcome(started)
    except WorkerFailedError:
        raise
    except BaseException:  # a bug here, or on_ready failed: the workers must not wait for a start
        for process in parent.processes:
            if process.pid is not None and process.exitcode is None:
                process.terminate()
        raise
    finally:
        _reap(parent.processes)
        messages.close()


def _reap(processes: list[BaseProcess]) -> None:
    """Wait for the worker processes to end (they do once they have reported); kill stragglers."""
    deadline = time.monotonic() + 10.0
    for process in processes:
        if process.pid is None:
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(5.0)
