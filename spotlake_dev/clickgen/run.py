"""The loop that sends a click stream into a sink, paced or flat out, and totals it.

:func:`run` takes records from a :class:`~spotlake_dev.clickgen.behaviour.ClickStream`,
waits for each one's slot (unless ``pace=False``), hands it to a sink, reports
progress on a text stream every few seconds, and on the way out (end of the
stream, Ctrl-C, or the output going away) closes the sink, which waits for the
outstanding delivery reports, and returns the :class:`RunTotals`.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from spotlake_dev.clickgen.behaviour import LATE, MALFORMED, MALFORMED_FLAGS, OUT_OF_ORDER, ClickStream, Record
from spotlake_dev.clickgen.delivery import DeliveryTotals, Sink
from spotlake_dev.clickgen.events import MALFORMED_KINDS
from spotlake_dev.clickgen.rate import Pacer

_KIND_OF_FLAG = {flag: kind for kind, flag in MALFORMED_FLAGS.items()}


@dataclass
class RunTotals:
    """What one run sent and what became of it."""

    sent: int = 0
    late: int = 0
    out_of_order: int = 0
    malformed: Counter[str] = field(default_factory=lambda: Counter({kind: 0 for kind in MALFORMED_KINDS}))
    send_seconds: float = 0.0
    seconds: float = 0.0
    stopped_by: str | None = None
    delivery: DeliveryTotals = field(default_factory=DeliveryTotals)

    @classmethod
    def combined(cls, parts: Iterable[RunTotals], seconds: float) -> RunTotals:
        """The totals of runs that went on side by side (worker processes) and took ``seconds`` in all.

        Counts add up; ``send_seconds`` is the longest part's; ``stopped_by`` and the
        first delivery error are the first part's that has one.
        """
        total = cls(seconds=seconds)
        d = total.delivery
        for part in parts:
            total.sent += part.sent
            total.late += part.late
            total.out_of_order += part.out_of_order
            total.malformed.update(part.malformed)
            total.send_seconds = max(total.send_seconds, part.send_seconds)
            total.stopped_by = total.stopped_by or part.stopped_by
            p = part.delivery
            d.produced += p.produced
            d.delivered += p.delivered
            d.failed += p.failed
            d.errors.update(p.errors)
            d.first_error = d.first_error or p.first_error
        return total

    @property
    def rate(self) -> float:
        """Events sent per second while sending (before the final flush)."""
        return self.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Every record sent was acknowledged by the sink, and nothing interrupted the run."""
        d = self.delivery
        return self.stopped_by is None and d.failed == 0 and d.delivered == self.sent

    def as_dict(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "sent": self.sent,
            "delivered": d.delivered,
            "failed": d.failed,
            "unacknowledged": d.unacknowledged,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "malformed": dict(self.malformed),
            "malformed_total": sum(self.malformed.values()),
            "send_seconds": round(self.send_seconds, 3),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "stopped_by": self.stopped_by,
            "delivery_errors": dict(d.errors),
            "first_delivery_error": d.first_error,
        }

    def summary(self) -> str:
        """The totals as a few lines for people."""
        d = self.delivery
        malformed = ", ".join(f"{kind} {self.malformed[kind]:,}" for kind in MALFORMED_KINDS)
        lines = [
            f"sent {self.sent:,} events in {self.send_seconds:.2f} s ({self.rate:,.0f} events/s); "
            f"delivered {d.delivered:,}, failed {d.failed:,}, unacknowledged {d.unacknowledged:,}"
            f" (all done after {self.seconds:.2f} s)",
            f"late {self.late:,}, out of order {self.out_of_order:,}, malformed {sum(self.malformed.values()):,} ({malformed})",
        ]
        if d.errors:
            errors = ", ".join(f"{name} {n:,}" for name, n in d.errors.most_common())
            lines.append(f"delivery errors: {errors}; first: {d.first_error}")
        if self.stopped_by:
            lines.append(f"stopped early: {self.stopped_by}")
        return "\n".join(lines)


class Progress:
    """Prints a progress line on ``out`` every ``every`` seconds (never if ``out`` is None).

    The send loops call :meth:`report` once ``due``; the parent of several worker
    processes calls :meth:`line` with their sums (see :mod:`spotlake_dev.clickgen.workers`).
    """

    def __init__(self, out: TextIO | None, every: float, started: float) -> None:
        self.out = out
        self.every = every
        self.started = started
        self.last_time = started
        self.last_sent = 0
        self.due = started + every if out is not None and every > 0 else math.inf

    def report(self, now: float, sent: int, sink: Sink) -> None:
        d = sink.totals
        self.line(now, sent, d.delivered, d.failed, d.first_error, sink.pending())

    def line(self, now: float, sent: int, delivered: int, failed: int, first_error: str | None, queued: int) -> None:
        elapsed = now - self.started
        window = now - self.last_time
        recent = (sent - self.last_sent) / window if window > 0 else 0.0
        overall = sent / elapsed if elapsed > 0 else 0.0
        errors = f" (first error: {first_error})" if failed else ""
        print(
            f"clickgen: {elapsed:8.1f} s  sent {sent:,}  delivered {delivered:,}  "
            f"failed {failed:,}{errors}  queued {queued:,}  "
            f"rate {overall:,.0f} events/s (last {window:.1f} s: {recent:,.0f})",
            file=self.out,
            flush=True,
        )
        self.last_time, self.last_sent = now, sent
        self.due = now + self.every


class _Reporter:
    """Calls ``callback(sent, sink)`` every ``every`` seconds (instead of printing a progress line)."""

    def __init__(self, callback: Callable[[int, Sink], None], every: float, started: float) -> None:
        self.callback = callback
        self.every = every
        self.due = started + every if every > 0 else math.inf

    def report(self, now: float, sent: int, sink: Sink) -> None:
        self.callback(sent, sink)
        self.due = now + self.every


class _Tally:
    """Counts kept by the send loops; written back even when a loop is interrupted."""

    def __init__(self, malformed: Counter[str]) -> None:
        self.sent = 0
        self.late = 0
        self.out_of_order = 0
        self.malformed = malformed


def _send_paced(records: Iterator[Record], sink: Sink, pacer: Pacer, ticker: Progress | _Reporter, tally: _Tally) -> None:
    send, wait, clock, malformed = sink.send, pacer.wait, pacer.clock, tally.malformed
    sent = late = out_of_order = 0
    try:
        for key, value, slot, flags in records:
            wait(slot)
            send(key, value)
            sent += 1
            if flags:
                late += flags & LATE
                out_of_order += (flags & OUT_OF_ORDER) >> 1
                if flags & MALFORMED:
                    malformed[_KIND_OF_FLAG[flags & MALFORMED]] += 1
            now = clock()
            if now >= ticker.due:
                ticker.report(now, sent, sink)
    finally:
        tally.sent, tally.late, tally.out_of_order = sent, late, out_of_order


def _send_flat_out(
    records: Iterator[Record], sink: Sink, clock: Callable[[], float], ticker: Progress | _Reporter, tally: _Tally
) -> None:
    send, malformed = sink.send, tally.malformed
    sent = late = out_of_order = 0
    look_at = 1024  # look at the clock every 1,024 records only (a comparison is cheaper than sent & 1023)
    try:
        for key, value, _slot, flags in records:
            send(key, value)
            sent += 1
            if flags:
                late += flags & LATE
                out_of_order += (flags & OUT_OF_ORDER) >> 1
                if flags & MALFORMED:
                    malformed[_KIND_OF_FLAG[flags & MALFORMED]] += 1
            if sent == look_at:
                look_at += 1024
                now = clock()
                if now >= ticker.due:
                    ticker.report(now, sent, sink)
    finally:
        tally.sent, tally.late, tally.out_of_order = sent, late, out_of_order


def run(
    stream: ClickStream,
    sink: Sink,
    *,
    count: int | None = None,
    duration: float | None = None,
    pace: bool = True,
    pacer: Pacer | None = None,
    progress: TextIO | None = sys.stderr,
    progress_every: float = 5.0,
    flush_timeout: float | None = None,
    report: Callable[[int, Sink], None] | None = None,
) -> RunTotals:
    """Send ``stream`` into ``sink`` until ``count`` events or ``duration`` seconds of schedule.

    With ``pace`` each record waits for its slot (the rate profile); without, records
    go as fast as the sink takes them (event times still follow the schedule).
    ``duration`` is always schedule time, so runs are reproducible; paced, it is
    also the wall-clock length of the run. Ctrl-C (``KeyboardInterrupt``) and a
    closed output (``BrokenPipeError``) stop the run; either way the sink is
    closed (outstanding deliveries awaited up to ``flush_timeout``; a second
    Ctrl-C drops them) and the totals are returned with ``stopped_by`` set.

    Every ``progress_every`` seconds a line goes to ``progress``; or, with ``report``,
    ``report(sent so far, sink)`` is called instead (a worker process tells its
    parent how far it got). ``report`` may raise ``KeyboardInterrupt`` to stop the run.
    """
    totals = RunTotals()
    tally = _Tally(totals.malformed)
    if pace and pacer is None:
        pacer = Pacer(sleep=sink.idle)
    clock = pacer.clock if pacer is not None else time.monotonic
    records = stream.records(count, duration)
    started = clock()

    def ticker() -> Progress | _Reporter:
        if report is not None:
            return _Reporter(report, progress_every, started)
        return Progress(progress, progress_every, started)

    try:
        if pacer is not None and pace:
            pacer.restart()
            started = pacer.origin
            _send_paced(records, sink, pacer, ticker(), tally)
        else:
            _send_flat_out(records, sink, clock, ticker(), tally)
    except KeyboardInterrupt:
        totals.stopped_by = "interrupted (Ctrl-C or SIGTERM)"
    except BrokenPipeError:
        totals.stopped_by = "the reader of the output went away (broken pipe)"
    finally:
        records.close()
        totals.sent, totals.late, totals.out_of_order = tally.sent, tally.late, tally.out_of_order
        totals.send_seconds = clock() - started
        try:
            totals.delivery = sink.close(flush_timeout)
        except KeyboardInterrupt:
            totals.stopped_by = "interrupted twice; undelivered messages were dropped"
            totals.delivery = sink.abandon()
        totals.seconds = clock() - started
    return totals
