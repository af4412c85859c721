"""Livy hooks bound to a cluster's endpoint rather than to a stored connection.

A cluster's Livy endpoint lives in the registry and changes whenever the fleet
replaces the cluster, so these subclasses of the provider's hooks build their
connection from the endpoint instead of looking one up by id. Everything else
(request building, retries, state parsing) is the provider's.
"""

from __future__ import annotations

from typing import Any

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

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        return _connection(self.endpoint)


class EndpointLivyAsyncHook(LivyAsyncHook):
    """The provider's :class:`LivyAsyncHook` talking to ``endpoint``."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(livy_conn_id="spotlake_livy_endpoint", **kwargs)
        self.endpoint = endpoint

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        return _connection(self.endpoint)

    async def aget_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        return _connection(self.endpoint)
