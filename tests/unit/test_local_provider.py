"""The local cluster provider's launches: one port per Livy server, even when two pools launch at once."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spotlake.registry import Cluster
from spotlake.stack import StackLayout
from spotlake_dev.localstack import provider as local
from spotlake_dev.localstack.process import free_port
from tests.support.fleet_fakes import pool_config


def test_two_pools_launching_at_once_get_two_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each launch finds a free port, then starts a server that binds it a while later (Livy takes
    seconds); two launches at the same moment (two fleet tasks) must not pick the same port."""
    base = free_port(30500)
    layout = StackLayout(root=tmp_path / ".stack", project=tmp_path, settings={"SPOTLAKE_LIVY_BASE_PORT": str(base)})
    servers: list[socket.socket] = []
    lock = threading.Lock()

    def start(spec: Any) -> int:
        time.sleep(0.3)  # the server's start-up, before it listens
        server = socket.socket()
        server.bind(("127.0.0.1", spec))  # fails (EADDRINUSE) if the other launch took this port
        server.listen()
        with lock:
            servers.append(server)
        return 1000 + spec

    monkeypatch.setattr(local.maven, "resolve_jars", lambda *args: None)
    monkeypatch.setattr(local.livy_server, "livy_spec", lambda layout, cluster_id, port, master: port)
    provider = local.LocalProvider(layout)
    monkeypatch.setattr(provider.supervisor, "start", start)
    launched: list[Any] = []
    errors: list[BaseException] = []

    def launch(cluster_id: str) -> None:
        try:
            launched.append(provider.launch(cluster_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(name,)) for name in ("small-0001", "large-0001")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert not errors, errors
        assert len({cluster.endpoint for cluster in launched}) == 2, [cluster.endpoint for cluster in launched]
    finally:
        for server in servers:
            server.close()


def test_the_pools_running_clusters_are_its_livy_processes(tmp_path: Path) -> None:
    """What the fleet's sweep looks at: the pool's Livy PID files whose process runs (this test's
    own process stands in for a Livy server), not another pool's nor a dead one's."""
    layout = StackLayout(root=tmp_path / ".stack", project=tmp_path, settings={})
    layout.run_dir.mkdir(parents=True)
    for name, pid in (("small-0003", os.getpid()), ("small_x-0001", os.getpid()), ("small-0004", 2**22 + 1)):
        (layout.run_dir / f"livy-{name}.pid").write_text(str(pid))
    provider = local.LocalClusterProvider(local.LocalProvider(layout), probe=lambda endpoint: None)
    pool = pool_config()
    (found,) = provider.running(pool)
    assert (found.cluster_id, found.pool, found.provider_id) == ("small-0003", "small", str(os.getpid()))
    assert found.created_at is not None and found.created_at <= datetime.now(UTC)
    gone = Cluster(pool="small", cluster_id="small-0004", provider="local", state="DEAD")
    assert provider.gone(gone) and not provider.gone(
        Cluster(pool="small", cluster_id="small-0003", provider="local", state="DEAD")
    )


def test_a_local_cluster_is_metered_as_one_instance_of_the_pools_configured_type(tmp_path: Path) -> None:
    """The cost ledger's instance-hours for a local cluster: its Livy process (this test's own
    process stands in for it) as one instance of ``local.instance_type`` on ``local.market``."""
    import psutil

    from spotlake.pools import LocalShape

    layout = StackLayout(root=tmp_path / ".stack", project=tmp_path, settings={})
    layout.run_dir.mkdir(parents=True)
    (layout.run_dir / "livy-small-0003.pid").write_text(str(os.getpid()))
    provider = local.LocalClusterProvider(local.LocalProvider(layout), probe=lambda endpoint: None)
    pool = pool_config(local=LocalShape("local[2]", instance_type="r5.xlarge", market="SPOT"))
    running = Cluster(
        pool="small", cluster_id="small-0003", provider="local", state="READY", launched_at="2026-12-06T10:00:00.000+00:00"
    )
    (usage,) = provider.instances(pool, running)
    started = datetime.fromtimestamp(psutil.Process(os.getpid()).create_time(), UTC)
    assert (usage.instance_type, usage.market, usage.role, usage.end) == ("r5.xlarge", "SPOT", "MASTER", "")
    assert usage.start == started.isoformat(timespec="milliseconds")
    # its process gone: from its launch, still open (the ledger ends it when the fleet confirmed it gone)
    (usage,) = provider.instances(
        pool, Cluster(pool="small", cluster_id="small-0009", provider="local", state="DEAD", launched_at=running.launched_at)
    )
    assert (usage.start, usage.end) == (running.launched_at, "")
