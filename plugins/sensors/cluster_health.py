"""Detect a dead cluster of a pool, as its own task in the UI.

Every poke is one health check of the pool's LAUNCHING, READY and DRAINING
clusters (:meth:`spotlake.fleet.Fleet.check_health`): failed checks are counted in
the registry, and a cluster that reaches the pool's ``failure_threshold`` (or that
its provider reports gone) is marked DEAD and its SUBMITTED jobs are re-queued.
The sensor then succeeds with the dead cluster ids and the report in its XCom;
when the pool stays healthy it times out and, with ``soft_fail``, is skipped.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from operators.fleet import PoolFleetMixin


class ClusterHealthSensor(PoolFleetMixin, BaseSensorOperator):
    template_fields = ("pool_name",)
    ui_color = "#f6e3c8"

    def __init__(self, *, pool_name: str, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.aws_conn_id = aws_conn_id

    def poke(self, context: Any) -> bool | PokeReturnValue:
        report = self.fleet.check_health(self.pool_config)
        for line in report.lines() if report.events else []:
            self.log.info("%s", line)
        for message in report.errors:
            self.log.warning("pool %s: %s (checked again next poke)", self.pool_name, message)
        if report.dead:
            self.log.warning("pool %s: dead cluster(s) %s", self.pool_name, ", ".join(report.dead))
            return PokeReturnValue(is_done=True, xcom_value=report.to_dict())
        return False
