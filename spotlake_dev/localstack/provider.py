"""Local clusters: each is one Apache Livy server process over pip's PySpark.

Launching starts the process on a free port; the cluster is dead when the
process is gone or Livy stops answering. Killing the process is a real
cluster death, which is how tests inject one.

:class:`LocalProvider` runs the processes; :class:`LocalClusterProvider` offers
them to the fleet as a :class:`~spotlake.providers.base.ClusterProvider`.
"""

from __future__ import annotations

import fcntl
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psutil

from spotlake import maven
from spotlake.errors import SpotlakeError
from spotlake.providers.base import (
    Cause,
    ClusterHealth,
    ClusterProvider,
    InstanceUsage,
    LaunchedCluster,
    LaunchFailed,
    Liveness,
    Probe,
    RunningCluster,
    decode_instances,
)
from spotlake.stack import StackLayout
from spotlake_dev.localstack import livy_server
from spotlake_dev.localstack.process import Supervisor, free_port

if TYPE_CHECKING:
    from spotlake.pools import PoolConfig
    from spotlake.registry import Cluster


@dataclass(frozen=True)
class LocalCluster:
    cluster_id: str
    endpoint: str
    pid: int


class LocalProvider:
    name = "local"

    def __init__(self, layout: StackLayout | None = None) -> None:
        self.layout = layout or StackLayout.default()
        self.supervisor = Supervisor(self.layout)

    def _free_port(self) -> int:
        return free_port(int(self.layout.setting("SPOTLAKE_LIVY_BASE_PORT", "18998")))

    def launch(self, cluster_id: str, master: str = "local[2]") -> LocalCluster:

        maven.resolve_jars(self.layout, "livy")
        maven.resolve_jars(self.layout, "spark")
        self._sweep_dead_clusters()
        # One launch at a time picks a port and starts its server: two pools launching at the same
        # moment (two fleet tasks) would otherwise both find the same port free, and one cluster die.
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.run_dir / "livy-launch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            port = self._free_port()
            pid = self.supervisor.start(livy_server.livy_spec(self.layout, cluster_id, port, master=master))
        return LocalCluster(cluster_id, f"http://127.0.0.1:{port}", pid)

    def _sweep_dead_clusters(self) -> None:
        """Remove the Spark scratch space of clusters whose Livy process is gone: a killed
        cluster's batches leave a few hundred MB there that nothing else cleans up."""
        for home in (self.layout.data_dir / "livy").glob("*"):
            if home.is_dir() and not self.supervisor.is_running(f"livy-{home.name}"):
                shutil.rmtree(home / "spark-local", ignore_errors=True)

    def terminate(self, cluster_id: str) -> None:
        self.supervisor.stop(f"livy-{cluster_id}")

    def running(self, pool: str) -> list[tuple[str, int, datetime | None]]:
        """The pool's clusters whose Livy process runs: (cluster id, PID, when it started)."""
        found = []
        for pid_file in sorted(self.layout.run_dir.glob(f"livy-{pool}-*.pid")):
            cluster_id = pid_file.stem.removeprefix("livy-")
            if not re.fullmatch(rf"{re.escape(pool)}-\d{{4,}}", cluster_id):
                continue  # another pool's whose name starts with this one's
            pid = self.supervisor.pid(pid_file.stem)
            if pid is None:
                continue
            try:
                started: datetime | None = datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
            except psutil.Error:
                started = None
            found.append((cluster_id, pid, started))
        return found

    def kill(self, cluster_id: str) -> None:
        self.supervisor.kill(f"livy-{cluster_id}")


class LocalClusterProvider(ClusterProvider):
    """Local pools: one Livy server process per cluster, Spark master from the pool's ``local`` shape.

    Health: the process runs and Livy answers ``GET /batches`` with 200; anything else is a
    failed check (counted by the fleet toward the pool's ``failure_threshold``).
    """

    name = "local"

    def __init__(self, processes: LocalProvider | None = None, *, probe: Probe) -> None:
        self._processes = processes
        self.probe = probe

    @property
    def processes(self) -> LocalProvider:
        if self._processes is None:
            self._processes = LocalProvider()
        return self._processes

    def launch(self, pool: PoolConfig, cluster_id: str) -> LaunchedCluster:
        if pool.local is None:
            raise LaunchFailed(f"pool '{pool.name}' has no 'local' shape in config/pools.yaml; add one")
        try:
            launched = self.processes.launch(cluster_id, master=pool.local.master)
        except SpotlakeError as exc:
            self.processes.terminate(cluster_id)
            raise LaunchFailed(f"Livy server for cluster {cluster_id} of pool '{pool.name}' did not start: {exc}") from exc
        return LaunchedCluster(cluster_id, provider_id=str(launched.pid), endpoint=launched.endpoint)

    def health(self, cluster: Cluster) -> ClusterHealth:
        if not self.processes.supervisor.is_running(f"livy-{cluster.cluster_id}"):
            # The process is gone: as final as EMR's TERMINATED, no need to count checks.
            return ClusterHealth(
                Liveness.DEAD,
                reason=f"Livy process livy-{cluster.cluster_id} is not running",
                cause=Cause.INSTANCE_FAILURE,
                definitive=True,
            )
        if not cluster.endpoint:
            return ClusterHealth.booting(f"Livy process livy-{cluster.cluster_id} runs; endpoint not recorded yet")
        failure = self.probe(cluster.endpoint)
        if failure:
            return ClusterHealth.failed(failure)
        return ClusterHealth.ok(cluster.endpoint)

    def endpoint(self, cluster: Cluster) -> str | None:
        return cluster.endpoint or None

    def terminate(self, cluster: Cluster, reason: str) -> None:
        self.processes.terminate(cluster.cluster_id)

    def gone(self, cluster: Cluster) -> bool:
        return not self.processes.supervisor.is_running(f"livy-{cluster.cluster_id}")

    def running(self, pool: PoolConfig) -> list[RunningCluster]:
        """The pool's Livy processes of this stack (its run folder: one registry per stack)."""
        return [
            RunningCluster(cluster_id, pool.name, str(pid), started, "RUNNING")
            for cluster_id, pid, started in self.processes.running(pool.name)
        ]

    def instances(self, pool: PoolConfig, cluster: Cluster) -> list[InstanceUsage]:
        """One instance of the pool's configured ``local.instance_type`` and ``market``, from its Livy
        process's start; once the process is gone, as last recorded (or from the launch); open
        either way: the ledger ends it when the fleet confirmed the cluster gone."""
        shape = pool.local
        if shape is None:
            return []
        started = next((at for cid, _, at in self.processes.running(pool.name) if cid == cluster.cluster_id), None)
        if started is None and cluster.instances:
            return decode_instances(cluster.instances)  # gone: as recorded while it ran
        start = started.isoformat(timespec="milliseconds") if started else cluster.launched_at
        if not start:
            return []
        return [InstanceUsage(shape.instance_type, shape.market, "MASTER", start)]

    def terminate_running(self, found: RunningCluster, reason: str) -> None:
        self.processes.terminate(found.cluster_id)
