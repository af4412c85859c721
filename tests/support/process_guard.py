"""The pure unit tier starts no process: while an unmarked unit test runs, every way of
starting one fails the test, naming the process and the markers that allow it.

``tests/unit/conftest.py`` runs each phase (setup, call, teardown) of each unit test through
:meth:`ProcessGuard.phase`. A test marked ``spark`` (a local Spark JVM) or ``tools`` (another
program: Maven, Java, compose, pip, a shell, a CLI, worker processes) is left alone.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

PROCESS_MARKERS = ("spark", "tools")


class StartedAProcess(BaseException):  # not an Exception: `except Exception` fallbacks must not hide it
    """An unmarked unit test started a process."""


class GuardedItem(Protocol):
    nodeid: str

    def get_closest_marker(self, name: str) -> Any: ...


def _program(name: str, args: tuple[Any, ...]) -> str:
    """The command line a process-starting call was given, as far as it shows."""
    try:
        if name in ("subprocess", "multiprocessing"):  # fork_exec(args, executable_list, ...)
            argv = [a.decode() if isinstance(a, bytes) else str(a) for a in args[0] or args[1]]
            return " ".join(argv)[:200]
        if name.startswith("os.posix_spawn"):  # posix_spawn(path, argv, env, ...)
            return " ".join(str(a) for a in args[1])[:200]
        if name == "os.system":
            return str(args[0])[:200]
    except (IndexError, TypeError):
        pass
    return "no command line"


def targets() -> list[tuple[Any, str, str]]:
    """(owner, attribute, name in the message) of each function that starts a process:
    subprocess's fork_exec (every Popen, asyncio's subprocesses, pyspark's JVM), the one
    multiprocessing's spawn calls, os.fork (multiprocessing's fork), os.system, os.posix_spawn."""
    found = [(subprocess, "_fork_exec", "subprocess"), (_posixsubprocess, "fork_exec", "multiprocessing")]
    found += [
        (os, attr, f"os.{attr}") for attr in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp") if hasattr(os, attr)
    ]
    return found


class ProcessGuard:
    """While an unmarked test's phase runs, a call that would start a process raises
    :class:`StartedAProcess` instead; a phase whose code caught it fails all the same."""

    def __init__(self) -> None:
        self.item: GuardedItem | None = None
        self.seen: list[str] = []

    def _refusing(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            item = self.item
            if item is None:
                return real(*args, **kwargs)
            message = (
                f"{item.nodeid} started a process ({name}: {_program(name, args)}); a pure unit test "
                "starts none. Mark it `@pytest.mark.tools` if it runs another program (Maven, Java, "
                "compose, pip, a CLI, worker processes) or `@pytest.mark.spark` if it starts a local "
                "Spark JVM, or give the code under test a fake"
            )
            self.seen.append(message)
            raise StartedAProcess(message)

        return refuse

    def phase(self, item: GuardedItem) -> Iterator[None]:
        """A hook wrapper's body: yields once, around the phase of ``item``."""
        if any(item.get_closest_marker(marker) for marker in PROCESS_MARKERS):
            yield
            return
        saved = [(owner, attr, name, getattr(owner, attr)) for owner, attr, name in targets()]
        for owner, attr, name, real in saved:
            setattr(owner, attr, self._refusing(name, real))
        self.item, first = item, len(self.seen)
        try:
            yield
        finally:
            self.item = None
            for owner, attr, _, real in saved:
                setattr(owner, attr, real)
        if len(self.seen) > first:  # raised, then caught by the code under test
            pytest.fail(self.seen[first], pytrace=False)
