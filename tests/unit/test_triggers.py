"""The triggers (triggers.livy, triggers.fleet): what Airflow stores of a deferred task's trigger
rebuilds the same trigger, under the new class path and the old one; and each event each trigger
yields, driven by a scripted Livy hook, moto's registry and a scripted fleet."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.models.trigger import Trigger
from airflow.providers.apache.livy.hooks.livy import BatchState
from airflow.triggers.base import BaseTrigger
from moto import mock_aws

import triggers.livy
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from triggers.fleet import PoolWatchTrigger
from triggers.livy import LivyBatchTrigger, LivyStatementTrigger

IN_AN_HOUR = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

# Each trigger class with every argument set away from its default.
TRIGGERS: list[BaseTrigger] = [
    LivyBatchTrigger(
        endpoint="http://c1:8998",
        batch_id=5,
        job_key="shop_orders#w1",
        poll_interval=3.0,
        unreachable_timeout=12.5,
        pool="small",
        cluster_id="c1",
        aws_conn_id="aws_spotlake",
        registry_prefix="t",
        not_before="2026-01-01T00:00:15+00:00",
    ),
    LivyStatementTrigger(
        endpoint="http://c1:8998",
        session_id=3,
        statement_id=7,
        job_key="shop_orders#w1",
        deadline="2026-01-01T00:00:00+00:00",
        poll_interval=0.5,
        unreachable_timeout=30.0,
        pool="small",
        cluster_id="c1",
        aws_conn_id=None,
        registry_prefix="t",
    ),
    PoolWatchTrigger(
        pool_name="small",
        until="2026-01-01T00:05:00+00:00",
        interval=5.0,
        hold=30.0,
        aws_conn_id="aws_spotlake",
        registry_prefix="t",
    ),
]


def ids(trigger: BaseTrigger) -> str:
    return type(trigger).__name__


# ---------------------------------------------------------------- what Airflow stores


@pytest.mark.parametrize("trigger", TRIGGERS, ids=ids)
def test_a_trigger_rebuilt_from_what_the_database_stores_serializes_the_same(trigger: BaseTrigger) -> None:
    """Airflow stores (class path, kwargs) of a deferred task's trigger (kwargs encoded as the
    metadata database keeps them) and the triggerer builds the trigger from them, maybe in
    another process, maybe more than once."""
    path, kwargs = trigger.serialize()
    stored = Trigger.from_object(trigger)
    assert (stored.classpath, stored.kwargs) == (path, kwargs)
    rebuilt = type(trigger)(**stored.kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert type(rebuilt)(**rebuilt.serialize()[1]).serialize() == (path, kwargs)


@pytest.mark.parametrize("trigger", TRIGGERS, ids=ids)
def test_the_class_path_imports_the_class_itself(trigger: BaseTrigger) -> None:
    path, _ = trigger.serialize()
    module, _, name = path.rpartition(".")
    assert module in ("triggers.livy", "triggers.fleet")
    assert getattr(importlib.import_module(module), name) is type(trigger)


@pytest.mark.parametrize("trigger", TRIGGERS, ids=ids)
def test_a_task_deferred_before_the_move_resumes_through_the_old_module(trigger: BaseTrigger) -> None:
    """Tasks deferred by an earlier release name spotlake.triggers.<Class>: that path still builds
    the same trigger, which serializes under its new path from then on."""
    path, kwargs = trigger.serialize()
    old = importlib.import_module("spotlake.triggers")
    cls = getattr(old, type(trigger).__name__)
    assert cls is type(trigger)
    assert cls(**kwargs).serialize() == (path, kwargs)


def test_every_trigger_class_is_covered_here_and_by_the_old_module() -> None:
    defined = {
        name
        for module in ("triggers.livy", "triggers.fleet")
        for name, value in vars(importlib.import_module(module)).items()
        if isinstance(value, type) and issubclass(value, BaseTrigger) and value.__module__ == module
    }
    assert defined - {"JobTrigger"} == {ids(t) for t in TRIGGERS}  # JobTrigger: their base, never deferred on
    assert defined <= set(importlib.import_module("spotlake.triggers").__all__)


# ---------------------------------------------------------------- a scripted Livy


class ScriptedLivy:
    """Answers as the provider's LivyAsyncHook gives them; each path answers its script in turn
    and then its last answer forever. An answer that is an exception is raised."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Any]] = {}
        self.endpoints: list[str] = []
        self.asked: list[str] = []

    def __call__(self, endpoint: str) -> ScriptedLivy:  # stands in for EndpointLivyAsyncHook(endpoint)
        self.endpoints.append(endpoint)
        return self

    def script(self, path: str, *answers: Any) -> None:
        self.scripts[path] = list(answers)

    def _next(self, path: str) -> Any:
        self.asked.append(path)
        script = self.scripts[path]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def get_batch_state(self, batch_id: int) -> Any:
        return self._next(f"/batches/{batch_id}/state")

    async def run_method(self, endpoint: str, method: str = "GET", **kwargs: Any) -> Any:
        assert method == "GET", "a trigger only looks"
        return self._next(endpoint)


def batch_state(state: str) -> dict[str, Any]:
    return {"batch_state": BatchState(state), "response": "successfully fetched the batch state.", "status": "success"}


def http_error(code: int, message: str = "Not Found") -> dict[str, Any]:
    return {"Response": {message}, "Status Code": {code}, "status": "error"}


def batch_error(code: int, message: str = "Not Found") -> dict[str, Any]:
    return {"batch_state": "error", "response": http_error(code, message), "status": "error"}


def ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "response": body}


REFUSED = ConnectionRefusedError("connect call failed ('10.0.0.5', 8998)")


@pytest.fixture
def livy(monkeypatch: pytest.MonkeyPatch) -> ScriptedLivy:
    scripted = ScriptedLivy()
    monkeypatch.setattr(triggers.livy, "EndpointLivyAsyncHook", scripted)
    return scripted


def first_event(trigger: BaseTrigger, timeout: float = 5.0) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


def batch_trigger(**overrides: Any) -> LivyBatchTrigger:
    return LivyBatchTrigger(
        **{
            "endpoint": "http://c1:8998",
            "batch_id": 5,
            "job_key": "shop_orders#w1",
            "poll_interval": 0.001,
            "unreachable_timeout": 30.0,
            **overrides,
        }
    )


def statement_trigger(**overrides: Any) -> LivyStatementTrigger:
    return LivyStatementTrigger(
        **{
            "endpoint": "http://c1:8998",
            "session_id": 3,
            "statement_id": 7,
            "job_key": "shop_orders#w1",
            "deadline": IN_AN_HOUR,
            "poll_interval": 0.001,
            "unreachable_timeout": 30.0,
            **overrides,
        }
    )


STATEMENT, SESSION = "/sessions/3/statements/7", "/sessions/3"


# ---------------------------------------------------------------- the batch trigger


@pytest.mark.parametrize(
    ("final", "status"), [("success", "success"), ("dead", "failed"), ("killed", "failed"), ("error", "failed")]
)
def test_a_batch_that_ends_is_success_or_failed_with_livys_state(livy: ScriptedLivy, final: str, status: str) -> None:
    livy.script("/batches/5/state", batch_state("starting"), batch_state("running"), batch_state(final))
    event = first_event(batch_trigger())
    assert event == {"status": status, "batch_id": 5, "job_key": "shop_orders#w1", "endpoint": "http://c1:8998", "state": final}
    assert livy.endpoints == ["http://c1:8998"] and len(livy.asked) == 3


def test_no_event_is_yielded_before_not_before(livy: ScriptedLivy) -> None:
    # A task resumed seconds after it deferred can be failed by Airflow's scheduler
    # (apache/airflow#72716): the operators defer with not_before = now + MIN_DEFERRAL.
    livy.script("/batches/5/state", batch_state("success"))
    held = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    started = time.monotonic()
    assert first_event(batch_trigger(not_before=held))["status"] == "success"
    assert time.monotonic() - started >= 1.4
    livy.script("/batches/5/state", batch_state("success"))
    started = time.monotonic()
    assert first_event(batch_trigger(not_before="2020-01-01T00:00:00+00:00"))["status"] == "success"
    assert time.monotonic() - started < 1.0  # a moment passed: at once
    assert datetime.fromisoformat(triggers.livy.not_before()) - datetime.now(UTC) > triggers.livy.MIN_DEFERRAL - timedelta(
        seconds=1
    )


def test_a_batch_livy_does_not_know_is_lost(livy: ScriptedLivy) -> None:
    livy.script("/batches/5/state", batch_state("running"), batch_error(404, "Session '5' not found."))
    event = first_event(batch_trigger())
    assert event["status"] == "lost" and event["reason"] == "Livy at http://c1:8998 does not know batch 5"


def test_a_livy_that_stops_answering_is_unreachable_after_the_timeout_with_its_last_error(livy: ScriptedLivy) -> None:
    livy.script("/batches/5/state", batch_state("running"), batch_error(503, "Service Unavailable"), REFUSED)
    started = time.monotonic()
    event = first_event(batch_trigger(unreachable_timeout=0.05))
    assert time.monotonic() - started >= 0.05
    assert event["status"] == "unreachable"
    assert event["reason"].startswith("Livy at http://c1:8998 has not answered for 0 s: ")
    assert "ConnectionRefusedError" in event["reason"]


class TenSecondsACall:
    """A monotonic clock that moves 10 s each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now


def test_an_answer_between_failures_starts_the_unreachable_clock_again(
    livy: ScriptedLivy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two failures in a row stay within 25 s on this clock; four, counted from the first, would not."""
    monkeypatch.setattr(triggers.livy, "time", TenSecondsACall())
    livy.script("/batches/5/state", REFUSED, REFUSED, batch_state("running"), REFUSED, REFUSED, batch_state("success"))
    assert first_event(batch_trigger(unreachable_timeout=25))["status"] == "success"
    monkeypatch.setattr(triggers.livy, "time", TenSecondsACall())
    livy.script("/batches/5/state", REFUSED, REFUSED, REFUSED, REFUSED, batch_state("success"))
    assert first_event(batch_trigger(unreachable_timeout=25))["status"] == "unreachable"


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        yield reg


def submitted(registry: Registry, **job: Any) -> Cluster:
    """Cluster c1 of pool small, READY, running shop_orders#w1 (batch 5 unless ``job`` says otherwise)."""
    cluster = Cluster(pool="small", cluster_id="c1", provider="local", state="")
    registry.put_launching(cluster)
    cluster = registry.mark_ready(cluster, "http://c1:8998")
    claimed = registry.claim_job("shop_orders#w1", "small", cluster, "run-1", None)
    registry.update_job(claimed, **{"batch_id": 5, **job})
    return cluster


def watching(trigger: BaseTrigger, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> BaseTrigger:
    monkeypatch.setattr(trigger, "_registry", lambda: registry)
    return trigger


def test_a_batch_whose_job_the_fleet_requeued_is_requeued_with_the_fleets_reason(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted(registry)
    livy.script("/batches/5/state", batch_state("running"))
    trigger = watching(batch_trigger(pool="small", cluster_id="c1"), registry, monkeypatch)
    registry.update_job(
        registry.get_job("shop_orders#w1"), state=JobState.REQUEUED, reason="cluster c1 DEAD: failed 3 health checks"
    )
    event = first_event(trigger)
    assert event["status"] == "requeued" and event["reason"] == "cluster c1 DEAD: failed 3 health checks"
    assert livy.asked == []  # the registry is asked first: no poll of a batch that runs no more


def test_a_batch_whose_job_another_batch_runs_now_is_requeued(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted(registry, batch_id=6)  # a re-run submitted batch 6 for the job
    livy.script("/batches/5/state", batch_state("running"))
    event = first_event(watching(batch_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))
    assert event["status"] == "requeued" and event["reason"] == "job shop_orders#w1 was re-queued"


def test_a_batch_whose_job_runs_on_another_cluster_now_is_requeued_even_under_the_same_batch_id(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Livy server numbers its batches from 0: the job's batch 5 on c2 is not this batch 5 on c1."""
    submitted(registry, endpoint="http://c2:8998", cluster_id="c2")
    livy.script("/batches/5/state", batch_state("running"))
    event = first_event(watching(batch_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))
    assert event["status"] == "requeued" and event["reason"] == "job shop_orders#w1 was re-queued"


@pytest.mark.parametrize("state", [ClusterState.DEAD, ClusterState.TERMINATED])
def test_a_batch_whose_cluster_is_dead_or_terminated_is_requeued(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch, state: ClusterState
) -> None:
    cluster = submitted(registry)
    livy.script("/batches/5/state", batch_state("running"))
    registry.transition_cluster(cluster, state, "spot instance reclaimed")
    event = first_event(watching(batch_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))
    assert event == {
        "status": "requeued",
        "batch_id": 5,
        "job_key": "shop_orders#w1",
        "endpoint": "http://c1:8998",
        "reason": f"cluster c1 is {state}: spot instance reclaimed",
    }


def test_a_registry_that_cannot_be_read_does_not_stop_the_watch(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    submitted(registry)
    livy.script("/batches/5/state", batch_state("running"), batch_state("success"))
    trigger = watching(batch_trigger(pool="small", cluster_id="c1"), registry, monkeypatch)

    def throttled(job_key: str) -> None:
        raise OSError("throttled")

    monkeypatch.setattr(registry, "get_job", throttled)
    assert first_event(trigger)["status"] == "success"
    assert "registry check of shop_orders#w1 failed: throttled" in capsys.readouterr().out  # Airflow's log


def test_without_a_pool_the_registry_is_not_asked(livy: ScriptedLivy, monkeypatch: pytest.MonkeyPatch) -> None:
    livy.script("/batches/5/state", batch_state("success"))
    trigger = batch_trigger()
    monkeypatch.setattr(trigger, "_registry", lambda: pytest.fail("the registry was asked"))
    assert first_event(trigger)["status"] == "success"


# ---------------------------------------------------------------- the statement trigger


@pytest.mark.parametrize("final", ["available", "error", "cancelled"])
def test_a_statement_that_ends_is_done_and_carries_the_statement(livy: ScriptedLivy, final: str) -> None:
    ended = {"id": 7, "state": final, "output": {"status": "ok", "data": {"text/plain": "SPOTLAKE_EXIT: 0"}}}
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}), ok(ended))
    livy.script(SESSION, ok({"id": 3, "state": "busy"}))
    event = first_event(statement_trigger())
    assert event == {
        "status": "done",
        "session_id": 3,
        "statement_id": 7,
        "deadline": IN_AN_HOUR,
        "job_key": "shop_orders#w1",
        "endpoint": "http://c1:8998",
        "statement": ended,
    }


def test_a_statement_livy_does_not_know_is_lost(livy: ScriptedLivy) -> None:
    livy.script(STATEMENT, http_error(404, "Statement not found"))
    event = first_event(statement_trigger())
    assert event["status"] == "lost"
    assert event["reason"] == "Livy at http://c1:8998 does not know statement 7 of session 3"


@pytest.mark.parametrize("gone", ["dead", "killed", "error", "shutting_down", "success"])
def test_a_running_statement_of_a_session_that_ended_is_lost(livy: ScriptedLivy, gone: str) -> None:
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}))
    livy.script(SESSION, ok({"id": 3, "state": "busy"}), ok({"id": 3, "state": gone}))
    event = first_event(statement_trigger())
    assert event["status"] == "lost" and event["reason"] == f"session 3 on http://c1:8998 is {gone}"


@pytest.mark.parametrize(
    ("session", "said"),
    [(http_error(404, "Session '3' not found."), "unknown to Livy"), (ok({"id": 3, "state": "dead"}), "dead")],
)
def test_a_statement_error_of_a_session_that_is_gone_is_lost(livy: ScriptedLivy, session: Any, said: str) -> None:
    livy.script(STATEMENT, http_error(500, "java.lang.IllegalStateException: Session is in state dead"))
    livy.script(SESSION, session)
    event = first_event(statement_trigger())
    assert event["status"] == "lost" and event["reason"] == f"session 3 on http://c1:8998 is {said}"


def test_a_livy_that_stops_answering_about_a_statement_is_unreachable(livy: ScriptedLivy) -> None:
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}), REFUSED)
    livy.script(SESSION, ok({"id": 3, "state": "busy"}), REFUSED)
    event = first_event(statement_trigger(unreachable_timeout=0.05))
    assert event["status"] == "unreachable"
    assert event["reason"].startswith("Livy at http://c1:8998 has not answered for 0 s: ConnectionRefusedError")


def test_a_statement_still_running_at_its_deadline_times_out(livy: ScriptedLivy) -> None:
    deadline = (datetime.now(UTC) + timedelta(milliseconds=50)).isoformat()
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}))
    livy.script(SESSION, ok({"id": 3, "state": "busy"}))
    event = first_event(statement_trigger(deadline=deadline))
    assert event["status"] == "timeout"
    assert event["reason"] == f"statement 7 of session 3 still running at {deadline}"
    assert datetime.now(UTC) >= datetime.fromisoformat(deadline)


@pytest.mark.parametrize(
    "elsewhere",
    [{"statement_id": 8}, {"session_id": 4}, {"endpoint": "http://c2:8998"}],
    ids=["another statement", "another session", "another cluster"],
)
def test_a_statement_whose_job_runs_elsewhere_now_is_requeued(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch, elsewhere: dict[str, Any]
) -> None:
    submitted(registry, batch_id=-1, **{"session_id": 3, "statement_id": 7, "slot": "0", **elsewhere})
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}))
    livy.script(SESSION, ok({"id": 3, "state": "busy"}))
    event = first_event(watching(statement_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))
    assert event["status"] == "requeued" and event["reason"] == "job shop_orders#w1 was re-queued"


def test_a_statement_still_running_its_job_is_not_requeued(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted(registry, batch_id=-1, session_id=3, statement_id=7, slot="0")
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}), ok({"id": 7, "state": "available"}))
    livy.script(SESSION, ok({"id": 3, "state": "busy"}))
    assert first_event(watching(statement_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))["status"] == "done"


def test_a_statement_whose_cluster_died_is_requeued(
    livy: ScriptedLivy, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = submitted(registry, batch_id=-1, session_id=3, statement_id=7, slot="0")
    registry.transition_cluster(cluster, ClusterState.DEAD, "failed 3 health checks")
    livy.script(STATEMENT, ok({"id": 7, "state": "running"}))
    event = first_event(watching(statement_trigger(pool="small", cluster_id="c1"), registry, monkeypatch))
    assert event["status"] == "requeued" and event["reason"] == "cluster c1 is DEAD: failed 3 health checks"


# ---------------------------------------------------------------- the pool watch


class ScriptedFleet:
    """Fleet.attention's answers in turn, then the last forever; an exception is raised."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked = 0

    def attention(self, pool: Any) -> tuple[str, str]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def watch(fleet: ScriptedFleet, monkeypatch: pytest.MonkeyPatch, until: str = IN_AN_HOUR, hold: float = 60.0) -> PoolWatchTrigger:
    trigger = PoolWatchTrigger(pool_name="small", until=until, interval=0.001, hold=hold)
    monkeypatch.setattr(trigger, "_fleet", lambda: (fleet, "the pool's config"))
    return trigger


def test_the_watch_wakes_at_once_when_the_fleet_must_act(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = ScriptedFleet(("", ""), ("", ""), ("urgent", "cluster c1 failed a health check: refused"))
    event = first_event(watch(fleet, monkeypatch))
    assert event == {"status": "attention", "kind": "urgent", "reason": "cluster c1 failed a health check: refused"}
    assert fleet.asked == 3


def test_a_periodic_need_wakes_the_watch_only_after_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = ScriptedFleet(("periodic", "cluster c2 is launching"))
    started = time.monotonic()
    event = first_event(watch(fleet, monkeypatch, hold=0.5))
    assert time.monotonic() - started >= 0.5 and fleet.asked > 1
    assert event == {"status": "attention", "kind": "periodic", "reason": "cluster c2 is launching"}


def test_the_watch_ends_done_at_until_and_a_failed_look_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = ScriptedFleet(OSError("registry throttled"), ("", ""))
    # far enough ahead for the first look to come before it on a busy machine
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert first_event(watch(fleet, monkeypatch, until=until)) == {"status": "done"}
    assert fleet.asked > 1
    assert "pool small: look at the pool failed: registry throttled" in capsys.readouterr().out  # Airflow's log


def test_a_watch_resumed_after_until_is_done_without_looking(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = ScriptedFleet(("urgent", "never asked"))
    until = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert first_event(watch(fleet, monkeypatch, until=until)) == {"status": "done"}
    assert fleet.asked == 0
