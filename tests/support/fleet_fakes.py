"""A cluster provider whose clusters come up at once and die when told to, and a pool's config."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from spotlake.pools import LocalShape, PoolConfig
from spotlake.providers.base import (
    Cause,
    ClusterHealth,
    ClusterProvider,
    InstanceUsage,
    LaunchedCluster,
    Liveness,
    RunningCluster,
)
from spotlake.registry import Cluster


class FakeProvider(ClusterProvider):
    """Clusters that come up at once (or boot for a while), and die when told to."""

    name = "fake"

    def __init__(self, boot_checks: int = 0) -> None:
        self.boot_checks = boot_checks
        self.launched: list[str] = []
        self.terminated: list[tuple[str, str]] = []
        self.health_of: dict[str, ClusterHealth] = {}
        self.checks: dict[str, int] = {}
        self.fail_launch: Exception | None = None
        self.on_launch: Any = None
        self.fail_terminate: Exception | None = None  # the next terminate raises it (every one: keep_failing)
        self.keep_failing = False
        self.stopped: set[str] = set()
        self.created: dict[str, datetime] = {}  # launches made behind the registry's back: when
        self.usage: dict[str, list[InstanceUsage]] = {}  # each cluster's instances, as the test sets them
        self.instance_calls: list[str] = []
        self.fail_instances: Exception | None = None

    def launch(self, pool: PoolConfig, cluster_id: str) -> LaunchedCluster:
        if self.on_launch is not None:
            self.on_launch(cluster_id)
        if self.fail_launch is not None:
            raise self.fail_launch
        self.launched.append(cluster_id)
        return LaunchedCluster(cluster_id, provider_id=f"fake-{cluster_id}", endpoint=None)

    def health(self, cluster: Cluster) -> ClusterHealth:
        if cluster.cluster_id in self.health_of:
            return self.health_of[cluster.cluster_id]
        if cluster.cluster_id not in self.launched:
            return ClusterHealth.failed(f"no cluster {cluster.cluster_id}")
        self.checks[cluster.cluster_id] = self.checks.get(cluster.cluster_id, 0) + 1
        if self.checks[cluster.cluster_id] <= self.boot_checks:
            return ClusterHealth.booting("starting")
        return ClusterHealth.ok(f"http://{cluster.cluster_id}:8998")

    def endpoint(self, cluster: Cluster) -> str | None:
        health = self.health(cluster)
        return health.endpoint

    def terminate(self, cluster: Cluster, reason: str) -> None:
        if self.fail_terminate is not None:
            error, self.fail_terminate = self.fail_terminate, (self.fail_terminate if self.keep_failing else None)
            raise error
        self.terminated.append((cluster.cluster_id, reason))
        self.stopped.add(cluster.cluster_id)
        self.health_of[cluster.cluster_id] = ClusterHealth(
            Liveness.DEAD,
            f"terminated ({reason})",
            Cause.OWN_TERMINATION,
            own_termination=True,
            definitive=True,
        )

    def gone(self, cluster: Cluster) -> bool:
        said = self.health_of.get(cluster.cluster_id)
        if said is not None and said.definitive:
            return True  # the provider said so (EMR: TERMINATED)
        return cluster.cluster_id not in self.launched or cluster.cluster_id in self.stopped

    def running(self, pool: PoolConfig) -> list[RunningCluster]:
        return [
            RunningCluster(c, pool.name, f"fake-{c}", self.created.get(c), "RUNNING")
            for c in self.launched
            if c not in self.stopped and c.startswith(f"{pool.name}-")
        ]

    def instances(self, pool: PoolConfig, cluster: Cluster) -> list[InstanceUsage]:
        self.instance_calls.append(cluster.cluster_id)
        if self.fail_instances is not None:
            raise self.fail_instances
        return list(self.usage.get(cluster.cluster_id, []))

    def terminate_running(self, found: RunningCluster, reason: str) -> None:
        self.terminate(Cluster(pool=found.pool, cluster_id=found.cluster_id, provider=self.name, state=""), reason)

    def fail(self, cluster_id: str, reason: str = "Livy at http://x did not answer: connection refused") -> None:
        self.health_of[cluster_id] = ClusterHealth.failed(reason)


def pool_config(**overrides: Any) -> PoolConfig:
    values: dict[str, Any] = {
        "name": "small",
        "max_age": timedelta(hours=6),
        "drain_deadline": timedelta(minutes=30),
        "health_check_interval": timedelta(seconds=15),
        "failure_threshold": 3,
        "launch_timeout": timedelta(minutes=20),
        "local": LocalShape("local[2]"),
    }
    return PoolConfig(**{**values, **overrides})
