"""A pool's clusters in the registry, and Livy servers that take batches in memory: what the
batch operators' completion tests run against (no Livy, no Spark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.providers.apache.livy.hooks.livy import BatchState

from spotlake import job_dependencies
from spotlake.registry import Cluster, ClusterState, Registry


def endpoint_of(cluster_id: str) -> str:
    return f"http://{cluster_id}:8998"


def ready(registry: Registry, cluster_id: str, pool: str = "small") -> Cluster:
    """A new cluster of ``pool``, READY and the pool's active one."""
    cluster = Cluster(pool=pool, cluster_id=cluster_id, provider="local", state="")
    registry.put_launching(cluster)
    return registry.mark_ready(cluster, endpoint_of(cluster_id))


def replace(
    registry: Registry,
    old: str,
    new: str,
    pool: str = "small",
    reason: str = "spot instance reclaimed",
) -> Cluster:
    """As the fleet heals a pool: cluster ``old`` DEAD, ``new`` READY in its place."""
    cluster = registry.get_cluster(pool, old)
    assert cluster is not None, f"no cluster {old} in pool {pool}"
    registry.transition_cluster(cluster, ClusterState.DEAD, reason)
    return ready(registry, new, pool)


@dataclass
class BatchLivy:
    """One cluster's Livy as the operators' sync hook sees it: batches get ids from ``next_id`` on,
    run in ``state``; ``log`` is every batch's log; an unreachable one raises on every call."""

    endpoint: str
    log: list[str] = field(default_factory=list)
    state: str = "running"
    next_id: int = 100
    unreachable: bool = False
    posted: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)

    def _answer(self) -> None:
        if self.unreachable:
            raise ConnectionError(f"Livy at {self.endpoint} did not answer: connection refused")

    def post_batch(self, **body: Any) -> int:
        self._answer()
        self.posted.append(body)
        self.next_id += 1
        return self.next_id - 1

    def get_batch_state(self, batch_id: int, retry_args: Any = None) -> BatchState:
        self._answer()
        return BatchState(self.state)

    def get_batch_logs(self, batch_id: int, start: int, size: int) -> dict[str, Any]:
        self._answer()
        # as Livy pages a log: from < 0 is its last `size` lines
        start = max(0, len(self.log) - size) if start < 0 else start
        return {"id": batch_id, "from": start, "total": len(self.log), "log": self.log[start : start + size]}

    def delete_batch(self, batch_id: int) -> None:
        self._answer()
        self.deleted.append(batch_id)


class Livys(dict[str, BatchLivy]):
    """The Livy of each endpoint, made on first use; stands in for an operator's ``livy(endpoint)``."""

    def __call__(self, endpoint: str) -> BatchLivy:
        return self.setdefault(endpoint, BatchLivy(endpoint))


def publish_fake_dependencies(root: Path) -> None:
    """Job dependencies published under ``root`` (a jar and an archive that are not real), so that
    job code can be published there as a task does before it submits."""
    jar, archive = root.parent / "jobs.jar", root.parent / "pydeps.tar.gz"
    jar.write_bytes(b"not a real jar")
    archive.write_bytes(b"not a real archive")
    job_dependencies.publish(str(root), [jar], archive)
