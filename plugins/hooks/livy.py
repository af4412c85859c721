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
        self.extra_options = {"check_response": False, "timeout": timeout}
        try:
            response = self.run_method("batches", data={"size": 0})
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


def probe_livy(endpoint: str, timeout: float = 5.0) -> str | None:
    """The cluster providers' health probe: :meth:`EndpointLivyHook.probe` of ``endpoint``."""
    return EndpointLivyHook(endpoint).probe(timeout)
