"""The core library's decision and state enums are the strings logs, reports, XCom, trigger events and
stored records had before they were enums: they compare, format, hash and serialise as those strings."""

from __future__ import annotations

import json
from enum import StrEnum

import pytest

from spotlake import aws_setup, freshness, sessions
from spotlake.fleet import Attention, FleetAction, FleetReport
from spotlake.stream_status import StreamState, StreamStatus
from spotlake.stream_supervisor import Decision, ProbeFailure

PREVIOUS_STRINGS: list[tuple[type[StrEnum], list[str]]] = [
    (
        FleetAction,
        [
            "launching",
            "launch-failed",
            "booting",
            "ready",
            "draining",
            "failed-check",
            "recovered",
            "dead",
            "terminated",
            "requeued",
            "lost-race",
            "still-running",
            "confirmed",
            "untracked",
            "swept",
        ],
    ),
    (Attention, ["urgent", "periodic", ""]),
    (Decision, ["live", "wait", "start", "restart", "move"]),
    (ProbeFailure, ["lost", "unreachable"]),
    (StreamState, ["RUNNING", "STARTED", "RESTARTED", "MOVED", "WAITING", "BACKED_OFF"]),
    (sessions.StatementOutcome, ["running", "success", "failed", "cancelled"]),
    (freshness.FreshnessStatus, ["fresh", "STALE", "FAILING", "loading", "never run"]),
    (aws_setup.Outcome, ["created", "exists", "updated", "would create", "would update"]),
]


@pytest.mark.parametrize(("enum", "strings"), PREVIOUS_STRINGS, ids=lambda e: getattr(e, "__name__", ""))
def test_each_member_is_its_previous_string(enum: type[StrEnum], strings: list[str]) -> None:
    assert [m.value for m in enum] == strings
    for member, text in zip(enum, strings, strict=True):
        assert member == text and hash(member) == hash(text) and text in {member}
        assert str(member) == f"{member}" == "%s" % member == text  # noqa: UP031 - the logs' %-formatting
        assert json.dumps(member) == json.dumps(text)


def test_the_previous_module_constants_are_still_there() -> None:
    assert (freshness.FRESH, freshness.STALE, freshness.FAILING, freshness.LOADING, freshness.NEVER) == (
        "fresh",
        "STALE",
        "FAILING",
        "loading",
        "never run",
    )
    assert (aws_setup.CREATED, aws_setup.EXISTS, aws_setup.WOULD_CREATE) == ("created", "exists", "would create")


def test_livy_states_of_sessions_and_statements_are_matched_as_plain_strings() -> None:
    assert {"shutting_down", "error", "dead", "killed", "success"} == sessions.SESSION_GONE
    assert {"idle", "busy"} == sessions.SESSION_LIVE and {"not_started", "starting"} == sessions.SESSION_STARTING
    assert {"waiting", "running", "cancelling"} == sessions.STATEMENT_PENDING
    assert {"available", "error", "cancelled"} == sessions.STATEMENT_DONE
    assert "dead" in sessions.SESSION_GONE and "available" in sessions.STATEMENT_DONE


def test_reports_and_records_carry_plain_strings() -> None:
    report = FleetReport("small")
    report.add("small-0001", FleetAction.LOST_RACE, "another fleet run has claimed this vacancy")
    assert report.to_dict()["events"][0]["action"] == "lost-race"
    assert type(report.to_dict()["events"][0]["action"]) is str
    status = StreamStatus("clicks", state=StreamState.BACKED_OFF)
    assert json.loads(status.to_doc())["state"] == "BACKED_OFF"
