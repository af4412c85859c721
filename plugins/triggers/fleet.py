"""The fleet's watch: looks at a pool from the triggerer and wakes its task only when the fleet must act.

A trigger has no side effects (it may run more than once, on any triggerer): it
only observes and yields one event; the sensor acts on the event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class PoolWatchTrigger(BaseTrigger):
    """Watches one pool for its fleet: every ``interval`` seconds, a read-only look at the pool
    (:meth:`spotlake.fleet.Fleet.attention`: its clusters in the registry, a health probe of each
    through the provider). Yields ``{"status": "attention", "kind", "reason"}`` as soon as the
    fleet must act (``periodic`` needs, such as a cluster launching or draining, only after
    ``hold`` seconds), or ``{"status": "done"}`` at ``until`` (an ISO time). No side effects."""

    def __init__(
        self,
        pool_name: str,
        until: str,
        interval: float = 15.0,
        hold: float = 60.0,
        aws_conn_id: str | None = "aws_default",
        registry_prefix: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger.__init__ has no annotations
        self.pool_name = pool_name
        self.until = until
        self.interval = interval
        self.hold = hold
        self.aws_conn_id = aws_conn_id
        self.registry_prefix = registry_prefix

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pool_name": self.pool_name,
                "until": self.until,
                "interval": self.interval,
                "hold": self.hold,
                "aws_conn_id": self.aws_conn_id,
                "registry_prefix": self.registry_prefix,
            },
        )

    def _fleet(self) -> tuple[Any, Any]:
        from hooks import aws
        from spotlake import pools
        from spotlake.fleet import Fleet

        config = pools.load()
        fleet = Fleet(
            aws.registry(self.aws_conn_id, self.registry_prefix),
            aws.cluster_provider(config.provider, self.aws_conn_id),
        )
        return fleet, config.get(self.pool_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from datetime import UTC, datetime

        until = datetime.fromisoformat(self.until)
        started = time.monotonic()
        fleet, pool = await asyncio.to_thread(self._fleet)
        while datetime.now(UTC) < until:
            try:
                kind, reason = await asyncio.to_thread(fleet.attention, pool)
            except Exception as exc:  # noqa: BLE001 - the registry or provider is asked again next time
                self.log.warning("pool %s: look at the pool failed: %s", self.pool_name, exc)
                kind, reason = "", ""
            if kind == "urgent" or (kind == "periodic" and time.monotonic() - started >= self.hold):
                yield TriggerEvent({"status": "attention", "kind": kind, "reason": reason})
                return
            await asyncio.sleep(self.interval)
        yield TriggerEvent({"status": "done"})
