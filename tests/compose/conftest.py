"""The compose tier (make compose-test): its own stack under Podman, never the native one."""

from __future__ import annotations

import json

import pytest

from tests.compose.podman_stack import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The run's times: images (each rebuilt or reused), the stack's start, each check, the tear-down."""
    if not REPORT.exists():
        return
    report = json.loads(REPORT.read_text())
    images = ", ".join(f"{i['name']} {i['seconds']:.0f} s{' (built)' if i['rebuilt'] else ''}" for i in report["images"])
    terminalreporter.write_line(f"compose tier images: {images}")
    terminalreporter.write_line(
        "compose tier stack: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["stack"].items() if "started" not in name)
    )
    terminalreporter.write_line(f"compose tier times: {REPORT}")
