"""Livy hooks bound to a cluster's endpoint rather than to a stored connection.

A cluster's Livy endpoint lives in the registry and changes whenever the fleet
replaces the cluster, so these subclasses of the provider's hooks build their
connection from the endpoint instead of looking one up by id. Everything else
(request building, retries, state parsing) is the provider's. Every call spotlake makes to Livy
goes through these hooks: batches, interactive sessions and statements, and the health probe.
"""

from __future__ import annotations

from typing import Any

import requests
from airflow.providers.apache.livy.hooks.livy import BatchState, LivyAsyncHook, LivyHook
from airflow.sdk import Connection

from spark_jobs.common.contract import ERROR_MARK, last_marked
from spotlake.errors import SpotlakeError
from spotlake.stream_supervisor.decisions import BatchProbe, ProbeFailure

TERMINAL_STATES = frozenset(LivyHook.TERMINAL_STATES)
LIVE_STATES = frozenset(s for s in BatchState if s not in TERMINAL_STATES)


def _connection(endpoint: str) -> Connection:
    return Connection(conn_id="spotlake_livy_endpoint", conn_type="livy", host=endpoint.rstrip("/"))


class EndpointLivyHook(LivyHook):
    """The provider's :class:`LivyHook` talking to ``endpoint`` (``http://host:port``)."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(livy_conn_id="spotlake_livy_endpoint", **kwargs)
        self.endpoint = endpoint

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]  # a classmethod in Airflow
        return _connection(self.endpoint)

    def probe(self, timeout: float = 5.0) -> str | None:
        """Ask Livy for its batch list: None when it answers 200, else why the check failed."""
        # The hook's own session (connection, headers) without HttpHook.run, which logs a warning for
        # every refused connection: a probe expects those (a cluster starting or gone) and says why.
        session = self.get_conn()
        try:
            response = session.get(f"{self.base_url}/batches", params={"size": 0}, timeout=timeout)
        except requests.exceptions.Timeout as exc:
            return f"Livy at {self.endpoint} did not answer within {timeout:.0f} s: {exc}"
        except requests.exceptions.RequestException as exc:
            return f"Livy at {self.endpoint} did not answer: {exc}"
        if response.status_code == 200:
            return None
        return f"Livy at {self.endpoint} answered HTTP {response.status_code} {response.reason} on GET /batches"


class EndpointLivyAsyncHook(LivyAsyncHook):
    """The provider's :class:`LivyAsyncHook` talking to ``endpoint``."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(livy_conn_id="spotlake_livy_endpoint", **kwargs)
        self.endpoint = endpoint

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]  # a classmethod in Airflow
        return _connection(self.endpoint)

    async def aget_connection(self, conn_id: str) -> Connection:  # type: ignore[override]  # a classmethod in Airflow
        return _connection(self.endpoint)

    async def get_batch_state(self, session_id: int | str) -> Any:
        """The provider's poll of a batch's state: the same request and the same answer, its lines at
        DEBUG. The batch trigger polls every few seconds, and the provider logs each poll at INFO
        ("Fetching info for batch session ...", "Successfully fetched the batch state."): in the
        task's log they would bury the task's own lines."""
        self._validate_session_id(session_id)
        self.log.debug("Fetching info for batch session %s", session_id)
        result = await self.run_method(
            endpoint=f"{self.endpoint_prefix}/batches/{session_id}/state", method="GET", headers=self.extra_headers
        )
        if result["status"] == "error":
            self.log.debug("%s", result)
            return {"batch_state": "error", "response": result, "status": "error"}
        if "state" not in result["response"]:
            self.log.debug("batch_state: error with as it is unable to get state for batch with id: %s", session_id)
            return {
                "batch_state": "error",
                "response": f"Unable to get state for batch with id: {session_id}",
                "status": "error",
            }
        self.log.debug("Successfully fetched the batch state.")
        return {
            "batch_state": BatchState(result["response"]["state"]),
            "response": "successfully fetched the batch state.",
            "status": "success",
        }


def probe_livy(endpoint: str, timeout: float = 5.0) -> str | None:
    """The cluster providers' health probe: :meth:`EndpointLivyHook.probe` of ``endpoint``."""
    return EndpointLivyHook(endpoint).probe(timeout)


class LivyBatchControl:
    """The stream supervisor's hold on a batch (:class:`spotlake.stream_supervisor.BatchControl`)
    through :class:`EndpointLivyHook`: its state, its error line, and deleting it."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.hook = EndpointLivyHook(self.endpoint)
        self.hook.extra_options = {"check_response": False, "timeout": timeout}

    def probe(self, batch_id: int) -> BatchProbe:
        try:
            response = self.hook.run_method(f"batches/{batch_id}/state")
        except requests.RequestException as exc:
            return BatchProbe(ProbeFailure.UNREACHABLE, f"{type(exc).__name__}")
        if response.status_code == 404:
            return BatchProbe(ProbeFailure.LOST, "HTTP 404")
        if response.status_code != 200:
            return BatchProbe(ProbeFailure.UNREACHABLE, f"HTTP {response.status_code}")
        return BatchProbe(str(response.json().get("state", "")))

    def error_line(self, batch_id: int) -> str:
        try:
            response = self.hook.run_method(f"batches/{batch_id}/log", data={"from": 0, "size": 2000})
            lines = response.json().get("log", []) if response.status_code == 200 else []
        except (requests.RequestException, ValueError):
            return ""
        return last_marked(lines, ERROR_MARK) or ""

    def delete(self, batch_id: int) -> None:
        response = self.hook.run_method(f"batches/{batch_id}", "DELETE")
        if response.status_code not in (200, 404):
            raise SpotlakeError(
                f"Livy at {self.endpoint} refused to delete batch {batch_id}: HTTP {response.status_code} {response.text[:200]}"
            )
