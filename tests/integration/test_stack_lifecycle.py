"""The stack's own commands: up twice is harmless, down leaves no process, and bad
situations (a taken port, a service that dies or never gets ready) say what is wrong.

Runs a second, separate core stack (own folder and ports) so the shared one is untouched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psutil
import pyarrow as pa
import pytest

from spark_jobs.common.lake_state import LakeState, WindowRecord
from spotlake import config
from spotlake import lake as spotlake_lake
from spotlake.errors import StackError
from spotlake.stack import PROJECT_ROOT, StackLayout, aws_env, read_stack_env
from spotlake_dev.localstack.process import ServiceSpec, Supervisor, free_port

PORT_SETTINGS = (
    "SPOTLAKE_MYSQL_PORT",
    "SPOTLAKE_POSTGRES_PORT",
    "SPOTLAKE_KAFKA_PORT",
    "SPOTLAKE_KAFKA_CONTROLLER_PORT",
    "SPOTLAKE_MOTO_PORT",
    "SPOTLAKE_S3_PORT",
)


def free_ports(start: int = 31000) -> dict[str, str]:
    """A free port for each service of the second stack, all below Linux's ephemeral range
    (32768-60999): a port in that range can be taken at any moment by an outgoing connection."""
    chosen: dict[str, str] = {}
    for setting in PORT_SETTINGS:
        port = free_port(start)
        assert port < 32768, f"no free port between {start} and 32767"
        chosen[setting] = str(port)
        start = port + 1
    return chosen


@pytest.fixture
def second_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        **free_ports(),
        "SPOTLAKE_STACK_DIR": str(tmp_path / "stack"),
        "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}",
    }
    # the second stack reuses the resolved jars of the first one
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "jars").symlink_to(StackLayout.default().jars_dir)
    yield env
    subprocess.run([sys.executable, "-m", "spotlake_dev.localstack", "down"], env=env, check=False)


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotlake_dev.localstack", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )


def pids(run_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid") if p.stem != "mariadbd"}


def test_up_twice_is_harmless_and_down_leaves_no_process(second_stack: dict[str, str]) -> None:
    run_dir = Path(second_stack["SPOTLAKE_STACK_DIR"]) / "run"
    first = stack(second_stack, "up", "core")
    assert first.returncode == 0, first.stderr
    started = pids(run_dir)
    assert set(started) == {"mariadb", "postgres", "s3", "moto", "kafka"}
    children = {pid: [c.pid for c in psutil.Process(pid).children(recursive=True)] for pid in started.values()}
    again = stack(second_stack, "up", "core")
    assert again.returncode == 0, again.stderr
    assert pids(run_dir) == started  # nothing restarted
    for port in (second_stack[setting] for setting in PORT_SETTINGS):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) == 0, f"nothing listens on {port}"
    down = stack(second_stack, "down")
    assert down.returncode == 0 and "stopped:" in down.stdout
    for pid in [*started.values(), *(c for cs in children.values() for c in cs)]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    assert pids(run_dir) == {}


def test_the_lake_and_the_registry_survive_down_and_up(second_stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An Iceberg table (catalog in PostgreSQL, files on the local S3) and the registry (moto,
    saved on down, restored on up) read back whole after a restart of the stack."""
    assert stack(second_stack, "up", "core").returncode == 0
    layout = StackLayout(
        root=Path(second_stack["SPOTLAKE_STACK_DIR"]),
        project=PROJECT_ROOT,
        settings={**read_stack_env(), **{k: v for k, v in second_stack.items() if k.startswith("SPOTLAKE_")}},
    )
    for key, value in aws_env(layout).items():
        monkeypatch.setenv(key, value)
    from spotlake_dev import demo

    demo.aws_resources(layout)  # the lake bucket, the catalog's secret, the registry tables
    store = LakeState(boto3.client("dynamodb"), "spotlake")
    store.ensure("orders", False, datetime(2026, 12, 5, tzinfo=UTC))
    store.plan_window(
        WindowRecord(pipeline="orders", window="w1", job_key="orders#w1", start="s", end="e", read_from="r", planned_at="p")
    )
    lake = config.Lake(
        catalog="lake", secret_id=demo.CATALOG_SECRET_ID, warehouse=f"s3://{demo.LAKE_BUCKET}/warehouse", namespace="restart"
    )
    rows = pa.table({"id": pa.array(range(1000), pa.int64()), "name": [f"row {i}" for i in range(1000)]})
    catalog = spotlake_lake.catalog(lake)
    catalog.create_namespace("restart")
    catalog.create_table("restart.orders", schema=rows.schema).append(rows)
    registry_before = (store.get("orders"), store.windows("orders"))

    down = stack(second_stack, "down")
    assert down.returncode == 0 and "registry: saved" in down.stdout, down.stdout
    up = stack(second_stack, "up", "core")
    assert up.returncode == 0 and "registry: restored" in up.stdout, up.stdout + up.stderr

    table = spotlake_lake.catalog(lake).load_table("restart.orders")
    assert table.scan().to_arrow().sort_by("id") == rows
    assert (store.get("orders"), store.windows("orders")) == registry_before


def test_taken_port_names_the_port_and_the_holder(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = ServiceSpec(name="probe", argv=[sys.executable, "-c", "pass"], ports=[port], ready=lambda: True)
        with pytest.raises(StackError) as err:
            Supervisor(layout).start(spec)
    message = str(err.value)
    assert f"port 127.0.0.1:{port} is already taken by pid {os.getpid()}" in message
    assert "Fix: stop that process" in message


def test_service_that_dies_while_starting_shows_its_log(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    spec = ServiceSpec(
        name="crash",
        argv=[sys.executable, "-c", "import sys; print('bad config line 3'); sys.exit(3)"],
        ports=[],
        ready=lambda: False,
        ready_timeout=30,
    )
    with pytest.raises(StackError, match=r"crash exited with code 3 while starting(.|\n)*bad config line 3"):
        Supervisor(layout).start(spec)


def test_service_not_ready_in_time_is_stopped_and_reported_with_its_log(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    spec = ServiceSpec(
        name="slow",
        argv=[sys.executable, "-c", "import time; print('warming up', flush=True); time.sleep(60)"],
        ports=[],
        ready=lambda: False,
        ready_timeout=2,
        stop_timeout=5,
    )
    supervisor = Supervisor(layout)
    with pytest.raises(StackError, match=r"slow did not become ready within 2 s(.|\n)*warming up"):
        supervisor.start(spec)
    assert not supervisor.is_running("slow")
