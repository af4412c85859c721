"""What the fleet's Airflow tasks share: the pool, registry, provider and
:class:`spotlake.fleet.Fleet` of a task, built on first use (see
:class:`sensors.cluster_health.ClusterHealthSensor`)."""

from __future__ import annotations

from functools import cached_property

from spotlake import pools
from spotlake.fleet import Fleet
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
