"""Fleet steps as Airflow tasks: thin wrappers over :class:`spotlake.fleet.Fleet`.

Each operator runs one idempotent step for one pool, logs the step's report
(which cluster, why, which jobs moved) and returns it as its XCom. A step that
could not do its job (a launch or termination failed) fails the task after the
rest of the step ran, so the UI shows it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from spotlake import pools
from spotlake.fleet import Fleet, FleetReport
from spotlake.providers.base import ClusterProvider, provider_for
from spotlake.registry import Registry


class PoolFleetMixin:
    """The pool, registry, provider and fleet of a fleet task, built on first use."""

    pool_name: str
    aws_conn_id: str | None

    @cached_property
    def pools_config(self) -> pools.PoolsConfig:
        return pools.load()

    @cached_property
    def pool_config(self) -> pools.PoolConfig:
        # Not `pool`: on an operator that is Airflow's worker-slot pool.
        return self.pools_config.get(self.pool_name)

    @cached_property
    def registry(self) -> Registry:
        return Registry.from_connection(self.aws_conn_id)

    @cached_property
    def provider(self) -> ClusterProvider:
        return provider_for(self.pools_config.provider, aws_conn_id=self.aws_conn_id)

    @cached_property
    def fleet(self) -> Fleet:
        return Fleet(self.registry, self.provider)


class FleetStepOperator(PoolFleetMixin, BaseOperator):
    """Base of the fleet's steps; subclasses name the step."""

    template_fields = ("pool_name",)
    ui_color = "#e8f0d8"

    def __init__(self, *, pool_name: str, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.aws_conn_id = aws_conn_id

    def run_step(self) -> FleetReport:
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        report = self.run_step()
        for line in report.lines():
            self.log.info("%s", line)
        if report.errors:
            raise AirflowException(f"pool {self.pool_name}: " + "; ".join(report.errors))
        return report.to_dict()


class LaunchClusterOperator(FleetStepOperator):
    """Make LAUNCHING clusters that are up READY; launch one if the pool has no live cluster."""

    def run_step(self) -> FleetReport:
        return self.fleet.launch(self.pool_config)


class HealPoolOperator(FleetStepOperator):
    """Re-queue jobs left on dead clusters and launch the pool's replacement cluster."""

    def run_step(self) -> FleetReport:
        return self.fleet.heal(self.pool_config)


class RotatePoolOperator(FleetStepOperator):
    """Replace the cluster past max_age; stop drained clusters, or overdue ones re-queueing their jobs."""

    def run_step(self) -> FleetReport:
        return self.fleet.rotate(self.pool_config)
