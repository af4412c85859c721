"""The Livy hooks bound to a cluster's endpoint: the batch trigger's polls log at DEBUG, so a
deferred task's log keeps its own lines; what a poll asks and answers is the provider's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from airflow.providers.apache.livy.hooks.livy import BatchState, LivyAsyncHook

from hooks.livy import EndpointLivyAsyncHook
from tests.support.task_logs import lines

OURS = "hooks.livy.EndpointLivyAsyncHook"  # its logger (the async hooks log under their class's own name)
POLL_LINES = ["Fetching info for batch session 7", "Successfully fetched the batch state."]


def answering(hook: LivyAsyncHook, answer: dict[str, Any]) -> list[str]:
    """Make ``hook`` answer every request with ``answer``; the endpoints it asked are returned."""
    asked: list[str] = []

    async def run_method(endpoint: str, method: str | None = None, data: Any = None, headers: Any = None) -> Any:
        asked.append(f"{method} {endpoint}")
        return answer

    hook.run_method = run_method  # type: ignore[method-assign]
    return asked


def test_a_batch_state_poll_logs_at_debug_what_the_provider_logs_at_info(task_log: pytest.LogCaptureFixture) -> None:
    ours, providers = EndpointLivyAsyncHook("http://c1:8998"), LivyAsyncHook()
    for hook in (ours, providers):
        asked = answering(hook, {"status": "success", "response": {"id": 7, "state": "running"}})
        result = asyncio.run(hook.get_batch_state(7))
        assert result == {
            "batch_state": BatchState.RUNNING,
            "response": "successfully fetched the batch state.",
            "status": "success",
        }
        assert asked == ["GET /batches/7/state"]
    assert lines(task_log, logging.DEBUG, OURS) == POLL_LINES
    assert lines(task_log, logging.INFO, OURS) == []
    # the provider's own hook says the same at INFO, every poll
    assert lines(task_log, logging.INFO, "airflow.providers.apache.livy.hooks.livy.LivyAsyncHook") == POLL_LINES


def test_a_failed_poll_answers_as_the_providers_and_says_why_at_debug(task_log: pytest.LogCaptureFixture) -> None:
    hook = EndpointLivyAsyncHook("http://c1:8998")
    error = {"Response": {"Not Found"}, "Status Code": {404}, "status": "error"}
    answering(hook, error)
    assert asyncio.run(hook.get_batch_state(7)) == {"batch_state": "error", "response": error, "status": "error"}
    answering(hook, {"status": "success", "response": {"id": 7}})
    assert asyncio.run(hook.get_batch_state(7))["response"] == "Unable to get state for batch with id: 7"
    assert lines(task_log, logging.INFO, OURS) == []
    assert str(error) in lines(task_log, logging.DEBUG, OURS)
