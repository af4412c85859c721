"""Rate profiles (when each event is due) and the pacer that holds them on the wall clock.

A profile yields the *schedule*: the offset in seconds, from the start of the run,
of each successive event. Event times are the start time plus these offsets, so
the data do not depend on how fast the machine is; the :class:`Pacer` then
sleeps so that event ``k`` leaves no earlier than its offset after the start.

- :class:`ConstantRate`: evenly spaced events, ``rate`` per second;
- :class:`DiurnalRate`: a daily cycle around ``rate``,
  ``rate * (1 + amplitude * cos(2π (time of day - peak hour) / 24 h))``;
- :class:`BurstyRate`: ``rate`` with bursts of ``rate * factor`` lasting
  ``burst_seconds``, starting at random with ``mean_gap_seconds`` between them.

Rates may be fractional (0.2 is one event every 5 s).

:class:`RateShare` is one of several equal shares of a profile, the schedule of
one worker process when several generate a stream together (``--workers``).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from spotlake.errors import ConfigError

PROFILES: tuple[str, ...] = ("constant", "diurnal", "bursty")


def _check_rate(rate: float) -> None:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ConfigError(
            f"rate {rate!r} events/s is not a positive number; "
            "fix: pass --rate with a value above 0, e.g. --rate 1000 or --rate 0.5"
        )


@dataclass(frozen=True)
class ConstantRate:
    """``rate`` events per second, evenly spaced."""

    rate: float

    def __post_init__(self) -> None:
        _check_rate(self.rate)

    def rate_at(self, offset: float) -> float:
        """The instantaneous rate (events/s) ``offset`` seconds after the start."""
        return self.rate

    def offsets(self) -> Iterator[float]:
        """The schedule: offset in seconds of each successive event (``k * interval`` for event ``k``)."""
        interval = 1.0 / self.rate
        # The same values as a generator yielding k * interval, but made in C: a generator
        # step costs about as much as the rest of an event's timing.
        return map(interval.__mul__, itertools.count())


@dataclass(frozen=True)
class DiurnalRate:
    """A daily cycle: quietest at ``peak_hour - 12``, busiest at ``peak_hour`` (UTC).

    The cycle starts at the UTC hour of day of ``start_ms`` and a whole day passes
    in ``period`` seconds: 86,400 for a real day, less to compress the day for
    demonstrations (with 600, a run started at 08:00 UTC reaches the 20:00 peak
    after 300 s).
    """

    rate: float
    start_ms: int
    amplitude: float = 0.6
    period: float = 86_400.0
    peak_hour: float = 20.0

    def __post_init__(self) -> None:
        _check_rate(self.rate)
        if not 0 <= self.amplitude < 1:
            raise ConfigError(
                f"diurnal amplitude {self.amplitude!r} is outside [0, 1); the rate would "
                "reach zero; fix: pass --diurnal-amplitude between 0 and 0.95"
            )
        if not self.period > 0:
            raise ConfigError(
                f"diurnal period {self.period!r} s is not positive; "
                "fix: pass --diurnal-period 86400 (one day) or a shorter positive value"
            )
        if not 0 <= self.peak_hour < 24:
            raise ConfigError(
                f"diurnal peak hour {self.peak_hour!r} is outside [0, 24); fix: pass --diurnal-peak-hour between 0 and 23.99"
            )

    def rate_at(self, offset: float) -> float:
        start_of_day = (self.start_ms / 1000.0) % 86_400.0 / 86_400.0
        phase = start_of_day + offset / self.period - self.peak_hour / 24.0
        return self.rate * (1.0 + self.amplitude * math.cos(2.0 * math.pi * phase))

    def offsets(self) -> Iterator[float]:
        rate_at = self.rate_at
        offset = 0.0
        while True:
            yield offset
            offset += 1.0 / rate_at(offset)


@dataclass(frozen=True)
class BurstyRate:
    """``rate`` events/s, with bursts of ``rate * factor`` at random moments.

    Gaps between bursts are exponentially distributed with mean
    ``mean_gap_seconds``; each burst lasts ``burst_seconds``. The burst times
    come from ``seed``, so the same seed gives the same bursts.
    """

    rate: float
    seed: int
    factor: float = 5.0
    burst_seconds: float = 5.0
    mean_gap_seconds: float = 60.0

    def __post_init__(self) -> None:
        _check_rate(self.rate)
        if not self.factor >= 1:
            raise ConfigError(f"burst factor {self.factor!r} is below 1; fix: pass --burst-factor 1 or more, e.g. 5")
        if not (self.burst_seconds > 0 and self.mean_gap_seconds > 0):
            raise ConfigError(
                f"burst length {self.burst_seconds!r} s and mean gap {self.mean_gap_seconds!r} s "
                "must both be positive; fix: pass --burst-seconds and --burst-gap above 0"
            )

    def bursts(self) -> Iterator[tuple[float, float]]:
        """The (start, end) offsets of successive bursts."""
        rng = random.Random(f"{self.seed}:bursts")
        end = 0.0
        while True:
            start = end + rng.expovariate(1.0 / self.mean_gap_seconds)
            end = start + self.burst_seconds
            yield start, end

    def rate_at(self, offset: float) -> float:
        for start, end in self.bursts():
            if offset < start:
                return self.rate
            if offset < end:
                return self.rate * self.factor
        raise AssertionError("unreachable: bursts() never ends")

    def offsets(self) -> Iterator[float]:
        bursts = self.bursts()
        start, end = next(bursts)
        base_step = 1.0 / self.rate
        burst_step = base_step / self.factor
        offset = 0.0
        while True:
            yield offset
            while offset >= end:
                start, end = next(bursts)
            offset += burst_step if offset >= start else base_step


RateProfile = ConstantRate | DiurnalRate | BurstyRate


@dataclass(frozen=True)
class RateShare:
    """Share ``index`` (0-based) of ``of`` equal shares of the profile ``whole``.

    Its rate is ``whole``'s divided by ``of`` at every moment (the same daily cycle,
    the same bursts at the same times), and its schedule starts ``index`` events of
    ``whole`` later (``index / whole.rate_at(0)`` seconds), so that the ``of``
    shares together interleave like ``whole`` rather than all firing at once: for a
    constant rate ``r``, share ``i`` is due at ``(k * of + i) / r`` for ``k = 0, 1, ...``,
    exactly the slots of ``whole`` numbered ``i`` modulo ``of``.
    """

    whole: RateProfile
    index: int
    of: int

    def __post_init__(self) -> None:
        if not (isinstance(self.of, int) and self.of >= 1 and isinstance(self.index, int) and 0 <= self.index < self.of):
            raise ConfigError(
                f"rate share {self.index!r} of {self.of!r} is not a share: the count must be a positive "
                "integer and the index between 0 and count - 1; fix: pass --workers 2 or another integer of 1 or more"
            )

    @property
    def rate(self) -> float:
        """The share's base rate, events/s (the whole's divided by the number of shares)."""
        return self.whole.rate / self.of

    @property
    def phase(self) -> float:
        """Seconds from the start of the whole to this share's first event."""
        return self.index / self.whole.rate_at(0.0)

    def rate_at(self, offset: float) -> float:
        return self.whole.rate_at(offset - self.phase) / self.of

    def offsets(self) -> Iterator[float]:
        scaled = replace(self.whole, rate=self.rate).offsets()
        phase = self.phase
        # map() keeps the constant profile's schedule made in C (see ConstantRate.offsets)
        return map(phase.__add__, scaled) if phase else scaled


class Pacer:
    """Hold a schedule of offsets on a clock: :meth:`wait` returns when an offset is due.

    ``sleep`` may return early (a Kafka sink's ``idle`` does, after serving a
    delivery report); the pacer sleeps again until the offset is due. It never
    sleeps for less than ``min_sleep`` seconds (sleeps that short overshoot), so
    at high rates events leave in clumps of about a millisecond, which keeps the
    per-second rate exact; and it sleeps at most ``max_sleep`` at a time. When the
    sender has fallen behind it does not sleep at all until it has caught up.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_sleep: float = 0.001,
        max_sleep: float = 0.2,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.origin = clock()

    def restart(self) -> None:
        """Make offset 0 due now."""
        self.origin = self.clock()

    def wait(self, offset: float) -> None:
        """Block until ``offset`` seconds after the origin."""
        due = self.origin + offset
        ahead = due - self.clock()
        while ahead >= self.min_sleep:
            self.sleep(ahead if ahead < self.max_sleep else self.max_sleep)
            ahead = due - self.clock()

    def elapsed(self) -> float:
        """Seconds since the origin."""
        return self.clock() - self.origin


def make_profile(
    name: str,
    rate: float,
    *,
    seed: int = 0,
    start_ms: int = 0,
    diurnal_amplitude: float = 0.6,
    diurnal_period: float = 86_400.0,
    diurnal_peak_hour: float = 20.0,
    burst_factor: float = 5.0,
    burst_seconds: float = 5.0,
    burst_gap: float = 60.0,
) -> RateProfile:
    """Build the profile called ``name`` (one of :data:`PROFILES`)."""
    if name == "constant":
        return ConstantRate(rate)
    if name == "diurnal":
        return DiurnalRate(
            rate,
            start_ms=start_ms,
            amplitude=diurnal_amplitude,
            period=diurnal_period,
            peak_hour=diurnal_peak_hour,
        )
    if name == "bursty":
        return BurstyRate(
            rate,
            seed=seed,
            factor=burst_factor,
            burst_seconds=burst_seconds,
            mean_gap_seconds=burst_gap,
        )
    raise ConfigError(f"unknown rate profile {name!r}; fix: pass --profile with one of {', '.join(PROFILES)}")
