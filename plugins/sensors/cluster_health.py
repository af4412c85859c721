"""The fleet of a pool, watching without a worker slot: detects dead clusters and acts.

:class:`ClusterHealthSensor` is the one task of a ``fleet_<pool>`` run. It makes one whole fleet
pass (:meth:`spotlake.fleet.Fleet.tend`: launch and promote, rotate and drain, health checks until
a failing cluster is DEAD or healthy again, heal: re-queue its jobs and launch the replacement),
then defers on :class:`triggers.fleet.PoolWatchTrigger`, which looks at the pool every
``health_check_interval`` in the triggerer (the registry, and a health probe of each cluster
through its provider) and wakes the task only when the fleet must act: a failed check, no
READY cluster, a cluster launching or draining, a rotation due. So a healthy pool costs no worker
slot and starts no task process between passes, and a dead cluster is seen within one interval.
The run ends after ``watch_for`` (the DAG's schedule interval), when the next run takes over:
a success, whether or not a pass had to act. Each pass logs every look at the pool's clusters
(each one's id, state and health) and what it did (which cluster, why, which jobs it re-queued);
a pass re-queues jobs only when it declares a cluster dead or drains one past its deadline. A
pass that could not do its job (a launch or termination failed) fails the task after the rest of
the pass ran, so the UI shows it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from hooks import aws
from spotlake import pools
from spotlake.fleet import Fleet
from spotlake.providers.base import ClusterProvider
from spotlake.registry import Registry
from triggers.fleet import PoolWatchTrigger


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
        return aws.registry(self.aws_conn_id)

    @cached_property
    def provider(self) -> ClusterProvider:
        return aws.cluster_provider(self.pools_config.provider, self.aws_conn_id)

    @cached_property
    def fleet(self) -> Fleet:
        return Fleet(self.registry, self.provider)


class ClusterHealthSensor(PoolFleetMixin, BaseSensorOperator):
    template_fields = ("pool_name",)
    ui_color = "#f6e3c8"

    def __init__(
        self,
        *,
        pool_name: str,
        aws_conn_id: str | None = "aws_default",
        watch_for: timedelta = timedelta(minutes=5),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.aws_conn_id = aws_conn_id
        self.watch_for = watch_for

    def tend(self) -> dict[str, Any]:
        """One whole fleet pass, logged (each look at the clusters, each action); fails the task if
        the pass could not do its job."""
        report = self.fleet.tend(self.pool_config)
        for line in report.log_lines():
            self.log.info("%s", line)
        if report.errors:
            raise AirflowException(f"pool {self.pool_name}: " + "; ".join(report.errors))
        return report.to_dict()

    def poke(self, context: Any) -> PokeReturnValue:
        """One whole pass, done: a pass that did its job is a success (one that could not fails the
        task). The watch itself is :meth:`execute`, which defers between passes."""
        return PokeReturnValue(is_done=True, xcom_value=self.tend())

    def execute(self, context: Any, until: str | None = None) -> Any:
        report = self.tend()
        if until is None:
            start = context.get("logical_date") or datetime.now(UTC)
            until = max(start + self.watch_for, datetime.now(UTC) + timedelta(seconds=30)).isoformat()
        if datetime.now(UTC) >= datetime.fromisoformat(until):
            return report
        interval = self.pool_config.health_check_interval.total_seconds()
        self.defer(
            trigger=PoolWatchTrigger(
                pool_name=self.pool_name,
                until=until,
                interval=interval,
                hold=max(60.0, interval),
                aws_conn_id=self.aws_conn_id,
                registry_prefix=self.registry.prefix,
            ),
            method_name="resume",
            kwargs={"until": until},
        )

    def resume(self, context: Any, event: dict[str, Any], until: str) -> Any:
        """Woken by the watch: at its end, the run is done (a success); when the fleet must act,
        another pass."""
        if event.get("status") == "done":
            self.log.info("pool %s: watched until %s, nothing to act on since the last pass", self.pool_name, until)
            return {"pool": self.pool_name, "watched_until": until}
        self.log.info("pool %s: woken: %s", self.pool_name, event.get("reason"))
        return self.execute(context, until=until)
