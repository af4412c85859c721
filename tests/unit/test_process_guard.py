"""The pure unit tier's guard: an unmarked test that starts a process fails naming it and the
markers; a marked one is left alone; nothing stays patched after a phase. No process is started
here: the guard refuses before one would be."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.process_guard import ProcessGuard, StartedAProcess, targets


@dataclass
class Item:
    nodeid: str = "tests/unit/test_x.py::test_y"
    markers: set[str] = field(default_factory=set)

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.markers else None


def current() -> list[Any]:
    return [getattr(owner, attr) for owner, attr, _ in targets()]


def run_phase(guard: ProcessGuard, item: Item, body: Any) -> None:
    phase: Iterator[None] = guard.phase(item)
    next(phase)
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - as pluggy does: the phase's error is thrown into the wrapper
        try:
            phase.throw(exc)
        except StopIteration:
            return
        raise AssertionError("the phase swallowed the error") from None
    with pytest.raises(StopIteration):
        next(phase)


@pytest.mark.parametrize(
    "start",
    [
        lambda: subprocess.run(["java", "-version"], check=False),
        lambda: os.system("mvn -v"),  # noqa: S605 - refused before any shell starts
        lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    ],
    ids=["subprocess", "os.system", "multiprocessing spawn"],
)
def test_an_unmarked_test_starting_a_process_fails_naming_it_and_the_markers(start: Any) -> None:
    before = current()
    with pytest.raises(StartedAProcess) as refused:
        run_phase(ProcessGuard(), Item(), start)
    message = str(refused.value)
    assert message.startswith("tests/unit/test_x.py::test_y started a process")
    assert "@pytest.mark.tools" in message and "@pytest.mark.spark" in message
    assert current() == before  # restored: the next phase starts from the real functions


def test_the_command_line_is_in_the_message() -> None:
    with pytest.raises(StartedAProcess, match=r"\(subprocess: java -version\)"):
        run_phase(ProcessGuard(), Item(), lambda: subprocess.run(["java", "-version"], check=False))


def test_a_refusal_the_code_under_test_swallowed_still_fails_the_test() -> None:
    def falls_back() -> None:
        try:
            subprocess.run(["java", "-version"], check=False)
        except BaseException:  # noqa: BLE001, S110 - as a too-broad fallback in the code under test would
            pass

    with pytest.raises(pytest.fail.Exception, match="started a process"):
        run_phase(ProcessGuard(), Item(), falls_back)


@pytest.mark.parametrize("marker", ["spark", "tools"])
def test_a_marked_test_is_left_alone(marker: str) -> None:
    before = current()
    seen: list[list[Any]] = []
    run_phase(ProcessGuard(), Item(markers={marker}), lambda: seen.append(current()))
    assert seen == [before]


def test_a_phase_without_a_process_passes_and_restores_everything() -> None:
    before = current()
    guard = ProcessGuard()
    run_phase(guard, Item(), lambda: None)
    assert current() == before and guard.seen == [] and guard.item is None
