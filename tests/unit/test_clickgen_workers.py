"""The generator in several processes (``--workers``), without Kafka: shares, splitting, orchestration, signals."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from spotlake.errors import ConfigError
from spotlake_dev.clickgen import cli
from spotlake_dev.clickgen.behaviour import LATE, MALFORMED, OUT_OF_ORDER, ClickStream, Record, Share, StreamConfig
from spotlake_dev.clickgen.delivery import DeliveryTotals, KafkaUnavailableError, NullSink
from spotlake_dev.clickgen.events import VALID, classify
from spotlake_dev.clickgen.rate import BurstyRate, ConstantRate, DiurnalRate, RateShare
from spotlake_dev.clickgen.run import RunTotals
from spotlake_dev.clickgen.workers import WorkerFailedError, WorkerPlan, run_workers, split_count

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
LATE_FRACTION, OOO_FRACTION, MALFORMED_FRACTION = 0.05, 0.03, 0.04


def config(seed: int = 1, **overrides: object) -> StreamConfig:
    settings: dict[str, object] = {
        "seed": seed,
        "start_ms": START_MS,
        "users": 2_000,
        "late_fraction": LATE_FRACTION,
        "out_of_order_fraction": OOO_FRACTION,
        "malformed_fraction": MALFORMED_FRACTION,
    }
    settings.update(overrides)
    return StreamConfig(**settings)  # type: ignore[arg-type]


def shares(seed: int, workers: int, count: int, rate: float = 50.0) -> list[list[Record]]:
    """The records of each worker of a run of ``count`` events, made here as each worker makes them."""
    plan = WorkerPlan(config(seed), ConstantRate(rate), workers, NullSink, count=count)
    return [list(plan.stream(index).records(count=plan.count_of(index))) for index in range(workers)]


# ---------------------------------------------------------------- splitting and validation


def test_count_split_adds_up_with_the_first_workers_one_larger() -> None:
    assert split_count(10, 3) == [4, 3, 3]
    assert split_count(11, 3) == [4, 4, 3]
    assert split_count(2, 4) == [1, 1, 0, 0]
    assert split_count(0, 2) == [0, 0]
    for count, workers in itertools.product(range(30), range(1, 7)):
        parts = split_count(count, workers)
        assert sum(parts) == count and max(parts) - min(parts) <= 1 and parts == sorted(parts, reverse=True)


def test_workers_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for bad, problem in (
        ("0", "--workers 0 is less than 1"),
        ("-2", "--workers -2 is less than 1"),
        ("two", "--workers 'two' is not a whole number"),
        ("1.5", "--workers '1.5' is not a whole"),
    ):
        assert cli.main(["--bootstrap", "127.0.0.1:1", "--workers", bad, "--count", "1"]) == 2
        err = capsys.readouterr().err
        assert problem in err and "fix: pass --workers 1" in err, err
    assert cli.main(["--dry-run", "--workers", "2", "--count", "1"]) == 2
    assert "fix: drop --workers" in capsys.readouterr().err
    assert cli.main(["--output", "never-written.jsonl", "--workers", "2", "--count", "1"]) == 2
    assert "fix: drop --workers" in capsys.readouterr().err
    assert cli.main(["--bootstrap", "127.0.0.1:1", "--workers", "3", "--users", "2", "--count", "1"]) == 2
    assert "--users 2 is fewer than --workers 3" in capsys.readouterr().err
    assert cli.main(["--bootstrap", "127.0.0.1:1", "--workers", "3", "--sessions", "2", "--count", "1"]) == 2
    assert "--sessions 2 is fewer than --workers 3" in capsys.readouterr().err
    assert cli.parse_workers(" 4 ") == 4


def test_share_and_plan_checks() -> None:
    with pytest.raises(ConfigError, match="fix: pass --workers"):
        Share(0, 0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Share(2, 2)
    with pytest.raises(ConfigError, match="fix: pass --workers"):
        WorkerPlan(config(), ConstantRate(10.0), 0, NullSink)


# ---------------------------------------------------------------- the shares of a stream


def test_a_share_of_one_is_the_whole_stream() -> None:
    whole = list(ClickStream(config(7), ConstantRate(100.0)).records(count=3_000))
    assert list(ClickStream(config(7), ConstantRate(100.0), Share(0, 1)).records(count=3_000)) == whole


def test_two_workers_partition_users_with_unique_ids_and_the_configured_fractions() -> None:
    count = 20_001
    parts = shares(seed=3, workers=2, count=count)
    assert [len(p) for p in parts] == [10_001, 10_000]
    assert shares(seed=3, workers=2, count=count) == parts  # same seed and workers: same records
    assert shares(seed=4, workers=2, count=count)[0] != parts[0]

    ids: list[str] = []
    prefixes: list[set[str]] = [set(), set()]
    users_of: list[set[str]] = [set(), set()]
    country: dict[str, str] = {}
    for index, records in enumerate(parts):
        for key, value, _, flags in records:
            user = key.decode()
            users_of[index].add(user)
            assert int(user[1:]) % 2 == index  # worker w has the users u with u % 2 == w
            if classify(value) == VALID:
                event = json.loads(value)
                ids.append(event["event_id"])
                prefixes[index].add(event["event_id"][:24])
                assert event["user_id"] == user
                assert country.setdefault(user, event["country"]) == event["country"]
            else:
                assert flags & MALFORMED
    assert not users_of[0] & users_of[1]
    assert len(ids) == len(set(ids))  # unique across the workers
    # one id prefix per worker, differing from the other's in the first 12 hex digits (the worker index)
    assert len(prefixes[0]) == len(prefixes[1]) == 1
    assert next(iter(prefixes[0]))[:13] != next(iter(prefixes[1]))[:13]
    assert next(iter(prefixes[0]))[13:] == next(iter(prefixes[1]))[13:]

    # a user's country is the one the single-process stream gives the same user
    single = ClickStream(config(3), ConstantRate(50.0)).records(count=count)
    for key, value, _, _ in single:
        user = key.decode()
        if user in country and classify(value) == VALID:
            assert json.loads(value)["country"] == country[user]

    # the configured fractions, per worker and so overall
    for records in parts:
        n = len(records)
        assert abs(sum(1 for *_, f in records if f & LATE) / n - LATE_FRACTION) < 0.008
        assert abs(sum(1 for *_, f in records if f & OUT_OF_ORDER) / n - OOO_FRACTION) < 0.007
        assert abs(sum(1 for *_, f in records if f & MALFORMED) / n - MALFORMED_FRACTION) < 0.007


def test_a_workers_sessions_stay_in_order() -> None:
    """Apart from records held back on purpose, a session's events leave a worker in session order."""
    for records in shares(seed=5, workers=3, count=9_000):
        last: dict[str, int] = defaultdict(lambda: -1)
        for _, value, _, flags in records:
            if flags & OUT_OF_ORDER or classify(value) != VALID:
                continue
            event = json.loads(value)
            assert event["session_seq"] > last[event["session_id"]]
            last[event["session_id"]] = event["session_seq"]


def test_sessions_are_split_between_workers() -> None:
    plan = WorkerPlan(config(users=1_000), ConstantRate(20.0), 3, NullSink)
    assert [plan.stream(i).sessions for i in range(3)] == [100, 100, 100]  # 20/3 events/s x 15 s, rounded up
    plan = WorkerPlan(config(users=1_000, sessions=10), ConstantRate(20.0), 4, NullSink)
    assert [plan.stream(i).sessions for i in range(4)] == [3, 3, 2, 2]
    plan = WorkerPlan(config(users=5), ConstantRate(1_000.0), 2, NullSink)
    assert [plan.stream(i).sessions for i in range(2)] == [3, 2]  # every user of the share


def test_rate_shares_interleave_into_the_whole_schedule() -> None:
    whole = ConstantRate(1_000.0)
    union = sorted(
        itertools.chain.from_iterable(itertools.islice(RateShare(whole, index, 4).offsets(), 2_500) for index in range(4))
    )
    assert union == pytest.approx(list(itertools.islice(whole.offsets(), 10_000)), abs=1e-9)
    diurnal = DiurnalRate(100.0, start_ms=START_MS, amplitude=0.5, period=1_000.0, peak_hour=0.0)
    share = RateShare(diurnal, 1, 2)
    assert share.rate == 50.0 and share.rate_at(250.0 + share.phase) == pytest.approx(diurnal.rate_at(250.0) / 2)
    bursty = BurstyRate(100.0, seed=4, factor=5.0, burst_seconds=5.0, mean_gap_seconds=20.0)
    start, end = next(bursty.bursts())
    shared = RateShare(bursty, 1, 3)
    assert shared.rate_at(start + 1.0 + shared.phase) == pytest.approx(500.0 / 3)  # the same bursts
    assert shared.rate_at(start - 1.0 + shared.phase) == pytest.approx(100.0 / 3)


def test_run_totals_combine() -> None:
    a = RunTotals(sent=10, late=1, out_of_order=2, send_seconds=1.5, delivery=DeliveryTotals(10, 9, 1))
    a.malformed["bad_json"] = 3
    a.delivery.errors["_MSG_TIMED_OUT"] = 1
    a.delivery.first_error = "timed out"
    b = RunTotals(sent=5, late=2, out_of_order=0, send_seconds=2.0, stopped_by="interrupted", delivery=DeliveryTotals(5, 5, 0))
    b.malformed["wrong_type"] = 1
    total = RunTotals.combined([a, b], seconds=3.0)
    assert (total.sent, total.late, total.out_of_order, total.seconds, total.send_seconds) == (15, 3, 2, 3.0, 2.0)
    assert total.malformed == Counter({"bad_json": 3, "wrong_type": 1, "missing_field": 0, "unknown_schema_version": 0})
    assert total.as_dict()["malformed_total"] == 4 and total.stopped_by == "interrupted"
    d = total.delivery
    assert (d.produced, d.delivered, d.failed, d.first_error, dict(d.errors)) == (15, 14, 1, "timed out", {"_MSG_TIMED_OUT": 1})


# ---------------------------------------------------------------- worker processes (spawned; NullSink)


class BrokenSink(NullSink):
    """A sink that fails after a few hundred records, in worker 1 only."""

    def send(self, key: bytes, value: str) -> None:
        super().send(key, value)
        if multiprocessing.current_process().name.endswith("-1") and self.totals.produced == 300:
            raise RuntimeError("disk on fire")


def unreachable() -> NullSink:
    raise KafkaUnavailableError("cannot reach Kafka at 127.0.0.1:1; fix: make up")


@pytest.mark.tools
def test_workers_run_a_paced_stream_and_the_parent_sums_their_totals_and_progress() -> None:
    out = io.StringIO()
    started: list[list[int | None]] = []
    plan = WorkerPlan(config(2), ConstantRate(4_000.0), 2, NullSink, duration=0.5)
    totals = run_workers(plan, progress=out, progress_every=0.12, on_ready=started.append)
    assert started == [[None, None]]
    assert totals.sent == 2_000 and totals.ok  # worker w has slots (2k + w) / 4000 s < 0.5 s: 1,000 each
    assert totals.delivery.delivered == 2_000 and totals.stopped_by is None
    assert abs(totals.late / 2_000 - LATE_FRACTION) < 0.03 and sum(totals.malformed.values()) > 0
    assert 0.45 < totals.send_seconds < 1.5 and totals.seconds >= totals.send_seconds
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 6, lines  # one line per interval with the sums, not one per worker
    assert all(line.startswith("clickgen: ") and " sent " in line and "events/s" in line for line in lines)


@pytest.mark.tools
def test_a_worker_that_fails_stops_the_others_and_the_parent_raises() -> None:
    started = time.monotonic()
    plan = WorkerPlan(config(1), ConstantRate(1_000.0), 2, BrokenSink, pace=False)  # endless unless stopped
    with pytest.raises(WorkerFailedError) as caught:
        run_workers(plan, progress=None)
    assert time.monotonic() - started < 20
    error = caught.value
    assert (error.worker, error.kind) == (1, "RuntimeError")
    assert "worker 1 of 2" in str(error) and "disk on fire" in str(error)
    assert error.totals is not None and error.totals.sent > 0  # worker 0 was stopped and reported
    assert "worker 1 of 2 failed" in (error.totals.stopped_by or "")


@pytest.mark.tools
def test_a_worker_that_cannot_start_fails_the_run_before_anything_is_sent() -> None:
    plan = WorkerPlan(config(1), ConstantRate(1_000.0), 2, unreachable, count=100)
    with pytest.raises(WorkerFailedError, match="worker . of 2: cannot reach Kafka") as caught:
        run_workers(plan, progress=None, on_ready=lambda partitions: pytest.fail("must not start"))
    assert caught.value.kind == "KafkaUnavailableError" and caught.value.totals is None


@pytest.mark.tools
def test_cli_with_workers_reports_a_down_broker(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--bootstrap", "127.0.0.1:1", "--workers", "2", "--count", "10", "--connect-timeout", "1"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert re.search(r"error: worker [01] of 2: cannot reach Kafka at 127\.0\.0\.1:1 within 1 s", err), err
    assert "sent " not in err  # nothing started, so no totals


# The CLI with each worker's Kafka sink replaced by a NullSink, run in a process group of its own.
NULL_SINK_CLI = """
import sys
from spotlake_dev.clickgen import cli
from spotlake_dev.clickgen.delivery import NullSink
if __name__ == "__main__":
    cli.kafka_sink_factory = lambda args, bootstrap: NullSink
    sys.exit(cli.main(sys.argv[1:]))
"""


def stop_cli_midway(tmp_path: Path, stop: signal.Signals, whole_group: bool) -> tuple[int, str, Path]:
    script = tmp_path / "null_sink_cli.py"
    script.write_text(NULL_SINK_CLI)
    totals = tmp_path / "totals.json"
    argv = [
        sys.executable,
        str(script),
        "--workers",
        "2",
        "--rate",
        "2000",
        "--progress-every",
        "0.2",
        "--seed",
        "3",
        "--totals-json",
        str(totals),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stderr is not None
        seen = ""
        while " sent " not in seen:  # the first progress line: the workers are sending
            line = proc.stderr.readline()
            assert line, f"the generator ended early: {seen}"
            seen += line
        if whole_group:  # as a terminal's Ctrl-C does
            os.killpg(proc.pid, stop)
        else:
            proc.send_signal(stop)
        err = seen + proc.stderr.read()
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5  # multiprocessing's resource tracker may take a moment to go
    while live := live_processes_in_group(proc.pid):
        assert time.monotonic() < deadline, f"processes {live} of the generator outlived it"
        time.sleep(0.05)
    return code, err, totals


def live_processes_in_group(group: int) -> list[str]:
    """The processes of a process group that have not ended (zombies waiting for init do not count)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after its ")"
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            live.append(stat.parent.name)
    return live


@pytest.mark.tools
@pytest.mark.parametrize(
    ("stop", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c to the process group", "sigterm to the parent"],
)
def test_cli_workers_stop_cleanly_and_report_totals(tmp_path: Path, stop: signal.Signals, whole_group: bool) -> None:
    code, err, totals_file = stop_cli_midway(tmp_path, stop, whole_group)
    assert code == cli.EXIT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert "2 worker processes" in err and "stopped early: interrupted (Ctrl-C or SIGTERM)" in err
    totals = json.loads(totals_file.read_text())
    assert totals["sent"] > 0 and totals["delivered"] == totals["sent"]
    assert totals["stopped_by"] == "interrupted (Ctrl-C or SIGTERM)"
    assert err.count("clickgen: sent ") == 1  # one summary, the sum of the workers'


@pytest.mark.tools
def test_bench_measures_generation_with_worker_processes() -> None:
    argv = [
        sys.executable,
        "bench/clickgen_bench.py",
        "--generate-only",
        "--workers",
        "1,2",
        "--events",
        "20000",
        "--repetitions",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "20,000" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"], done.stdout


def test_a_worker_lost_without_its_totals_is_named_even_when_nothing_else_stopped_the_run() -> None:
    from spotlake_dev.clickgen.workers import _Parent

    plan = WorkerPlan(config(1), ConstantRate(50.0), 2, NullSink, count=10)
    parent = _Parent(plan, messages=None)
    parent.processes = [object(), object()]  # type: ignore[list-item]
    parent.totals[0] = RunTotals(sent=5)
    parent.lost[1] = "its process ended with exit status -9 without reporting its totals"
    totals = parent.outcome(started=time.monotonic())
    assert totals.sent == 5
    assert totals.stopped_by is not None and totals.stopped_by.startswith("interrupted")
    assert "not counted: worker 1 of 2: its process ended with exit status -9" in totals.stopped_by


def test_a_sigterm_after_the_sink_closed_leaves_the_workers_totals_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM landing just as ``run()`` returns must not turn a finished run into "nothing sent"."""
    import queue as queue_module
    import threading

    from spotlake_dev.clickgen import workers

    real_run = workers.run

    def run_then_sigterm(*args: object, **kwargs: object) -> RunTotals:
        totals = real_run(*args, **kwargs)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this function returns
        return totals

    monkeypatch.setattr(workers, "run", run_then_sigterm)
    plan = WorkerPlan(config(1), ConstantRate(50.0), 1, NullSink, count=500, pace=False)
    messages: queue_module.Queue[tuple[object, ...]] = queue_module.Queue()
    go = threading.Event()
    go.set()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        workers.worker_main(plan, 0, messages, go, report_every=60.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    kinds = []
    while not messages.empty():
        kinds.append(messages.get_nowait())
    done = [m for m in kinds if m[0] == "done"]
    assert len(done) == 1, kinds
    totals = done[0][2]
    assert isinstance(totals, RunTotals)
    assert totals.sent == 500 and totals.delivery.delivered == 500 and totals.stopped_by is None


def test_a_worker_is_stoppable_until_its_sink_closes() -> None:
    from spotlake_dev.clickgen.workers import _Stopper

    for end in ("close", "abandon"):
        stopper = _Stopper()
        inner = NullSink()
        sink = stopper.wrap(inner)
        sink.send(b"k", "v")
        assert inner.totals.produced == 1 and sink.pending() == 0
        with pytest.raises(KeyboardInterrupt):
            stopper.on_signal(signal.SIGTERM, None)
        totals = getattr(sink, end)()
        assert totals.delivered == 1
        stopper.on_signal(signal.SIGTERM, None)  # ignored: the totals are final
