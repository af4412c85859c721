"""Cluster death and rotation on the local stack: real Livy clusters launched by the
fleet, real extraction batches (the initial snapshot of a 2,000,000-row table), a real kill
of the cluster's processes mid-batch. The lake is compared with MySQL row by row."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pymysql
import pytest

from hooks.livy import probe_livy
from spark_jobs.common.lake_state import snapshot_job_key
from spotlake import ledger, prices
from spotlake.fleet import Fleet
from spotlake.pools import LocalShape, PoolConfig, PoolsConfig
from spotlake.providers.base import decode_instances
from spotlake.registry import ClusterState, JobState
from spotlake.stack import StackLayout
from spotlake_dev.localstack.process import Supervisor, wait_for
from spotlake_dev.localstack.provider import LocalClusterProvider, LocalProvider
from tests.support.cluster_loss import ROWS, FleetLoop, big_table, run_in_thread
from tests.support.extraction_harness import ExtractionEnv, aws_connection, run_operator

pytestmark = pytest.mark.e2e

FIVE = timedelta(minutes=5)
SNAPSHOT_ROWS = 2_000_000
CHUNK_ROWS = 250_000
DRIVER_PEAK_LIMIT_MIB = 2048  # Livy's batches run with spark.driver.memory 768m (livy_server.livy_spark_defaults)


@pytest.fixture
def fleet_env(
    mysql: dict[str, str], moto_endpoint: str, catalog_secret: str, layout: StackLayout, supervisor: Supervisor, tmp_path: Path
) -> Iterator[tuple[ExtractionEnv, Fleet, Callable[..., PoolConfig]]]:
    saved = {
        k: os.environ.get(k)
        for k in (
            "SPOTLAKE_PIPELINES",
            "SPOTLAKE_REGISTRY_PREFIX",
            "SPOTLAKE_POOLS",
            "AIRFLOW_CONN_AWS_DEFAULT",
            "SPOTLAKE_LIVY_BASE_PORT",
        )
    }
    # A registry and lake of its own; its clusters come from the fleet, not from a fixture.
    env = ExtractionEnv(mysql, moto_endpoint, livy_url="", tmp=tmp_path, catalog_secret=catalog_secret, register_cluster=False)
    os.environ.update(
        {
            **env.environ(),
            "SPOTLAKE_LIVY_BASE_PORT": layout.setting("SPOTLAKE_LIVY_E2E_BASE_PORT", "25998"),
            "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(moto_endpoint),
        }
    )
    e2e_layout = StackLayout.default()
    fleet = Fleet(env.registry, LocalClusterProvider(LocalProvider(e2e_layout), probe=probe_livy))

    def pool(**changes: Any) -> PoolConfig:
        fields = {
            "name": env.pool,
            "max_age": timedelta(hours=6),
            "drain_deadline": timedelta(minutes=10),
            "health_check_interval": timedelta(seconds=2),
            "failure_threshold": 2,
            "launch_timeout": timedelta(minutes=3),
            "local": LocalShape(master="local[2]"),
        }
        return PoolConfig(**{**fields, **changes})

    yield env, fleet, pool
    for cluster in env.registry.clusters(env.pool):
        supervisor.stop(f"livy-{cluster.cluster_id}")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def assert_lake_equals_mysql(env: ExtractionEnv, pipeline: str, table: str) -> None:
    """Row by row, in key order: the current-state table (pyiceberg) against MySQL (pymysql, streamed)."""
    columns = ("id", "customer", "status", "amount", "updated_at", "deleted_at")
    lake = env.lake_table(pipeline).select(list(columns)).sort_by("id")
    conn = env.connect()
    checked = 0
    with conn.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        for batch in lake.to_batches(max_chunksize=50_000):
            for got in zip(*(batch.column(c).to_pylist() for c in columns), strict=True):
                want = cur.fetchone()
                assert want is not None, f"the lake has more rows than MySQL (from id {got[0]})"
                got = tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in got)
                assert got == tuple(want), (got, want)
                checked += 1
        assert cur.fetchone() is None, "MySQL has rows the lake lacks"
    conn.close()
    assert checked == lake.num_rows


class PeakMemory:
    """The peak resident memory of the Spark drivers a Livy server started (spark-submit's JVM,
    which runs the local executors, and its Python process)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                try:
                    if "org.apache.spark.deploy.SparkSubmit" not in " ".join(proc.info["cmdline"] or []):
                        continue
                    rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                    self.peak_mib = max(self.peak_mib, rss / 2**20)
                except psutil.Error:
                    continue
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait_running(env: ExtractionEnv, job_key: str, timeout: float = 180) -> Any:
    def running() -> bool:
        job = env.registry.get_job(job_key)
        return job is not None and job.batch_id >= 0 and job.state == JobState.SUBMITTED

    assert wait_for(running, timeout), f"{job_key} was never submitted"
    return env.registry.get_job(job_key)


def test_a_cluster_killed_in_the_initial_snapshot_resumes_on_the_replacement_from_its_last_chunk(
    fleet_env: tuple[ExtractionEnv, Fleet, Callable[..., PoolConfig]], supervisor: Supervisor
) -> None:
    env, fleet, make_pool = fleet_env
    pool = make_pool()
    fleet.launch(pool)
    first = env.registry.ready_cluster(env.pool)
    assert first is not None
    table, w = big_table(env, "kill", SNAPSHOT_ROWS)
    pipeline = env.add_pipeline(f"kill_{env.tag}", table, read={"snapshot_chunk_rows": CHUNK_ROWS})
    job_key = snapshot_job_key(pipeline)

    with FleetLoop(fleet, pool) as loop, PeakMemory(supervisor) as memory:
        thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
        job = wait_running(env, job_key)
        assert job.cluster_id == first.cluster_id
        # Kill the cluster once two chunks are committed: the worst moment is any moment.
        assert wait_for(lambda: getattr(env.lake_state.get(pipeline), "snapshot_chunks", 0) >= 2, 600)
        killed_at = time.monotonic()
        committed_before_kill = env.state(pipeline).snapshot_chunks
        supervisor.kill(f"livy-{first.cluster_id}")
        thread.join(timeout=1200)
    assert out and not isinstance(out[0], BaseException), out
    print(
        f"peak resident memory of the snapshot's Spark driver: {memory.peak_mib:.0f} MiB "
        f"({SNAPSHOT_ROWS:,} rows in chunks of {CHUNK_ROWS:,})"
    )
    assert 0 < memory.peak_mib < DRIVER_PEAK_LIMIT_MIB

    dead = env.registry.get_cluster(env.pool, first.cluster_id)
    assert dead.state == ClusterState.DEAD
    replacement = env.registry.ready_cluster(env.pool)
    assert replacement is not None and replacement.cluster_id != first.cluster_id
    job = env.registry.get_job(job_key)
    assert (job.state, job.cluster_id, job.moves, job.attempt) == (JobState.SUCCEEDED, replacement.cluster_id, 1, 2)
    detected = loop.first(f"{first.cluster_id} dead")
    assert (
        detected is not None
        and detected - killed_at <= pool.health_check_interval.total_seconds() * (pool.failure_threshold + 1) + 5
    )
    state = env.state(pipeline)
    assert (state.snapshot, state.snapshot_rows) == ("DONE", SNAPSHOT_ROWS)
    # Resumed from its last chunk: what attempt 1 committed was not read again.
    attempts = env.lake_table(pipeline, changes=True).group_by("_chunk").aggregate([("_attempt", "distinct")])
    by_chunk = {
        c: set(a)
        for c, a in zip(attempts.column("_chunk").to_pylist(), attempts.column("_attempt_distinct").to_pylist(), strict=True)
    }
    assert all(by_chunk[c] == {1} for c in range(1, committed_before_kill + 1)), by_chunk
    assert all(a == {2} for c, a in by_chunk.items() if c > committed_before_kill + 1), by_chunk
    assert_lake_equals_mysql(env, pipeline, table)


def test_rotation_replaces_first_and_running_batch_finishes_on_the_old_cluster(
    fleet_env: tuple[ExtractionEnv, Fleet, Callable[..., PoolConfig]],
) -> None:
    env, fleet, make_pool = fleet_env
    fleet.launch(make_pool())
    fleet.meter(make_pool())  # as each fleet pass does (the cost ledger, checked at the end)
    old = env.registry.ready_cluster(env.pool)
    table, w = big_table(env, "rotate", ROWS)
    pipeline = env.add_pipeline(f"rotate_{env.tag}", table)
    job_key = snapshot_job_key(pipeline)

    thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
    wait_running(env, job_key)
    # The cluster is now past its max age (1 s here): one fleet run rotates it while the batch
    # runs. Replacement first: it becomes READY and takes over; only then does the old drain.
    report = fleet.rotate(make_pool(max_age=timedelta(seconds=1)))
    assert {e.action for e in report.events if e.cluster_id == old.cluster_id} == {"draining"}, report.lines()
    new = env.registry.ready_cluster(env.pool)
    assert new is not None and new.cluster_id != old.cluster_id
    assert env.registry.get_cluster(env.pool, old.cluster_id).state == ClusterState.DRAINING
    fleet.meter(make_pool())
    ready_seen: list[str] = []
    with FleetLoop(fleet, make_pool()) as loop:
        while thread.is_alive():
            active = env.registry.ready_cluster(env.pool)
            ready_seen.append(active.cluster_id if active else "")
            thread.join(timeout=0.5)
        # the old cluster, idle now, is terminated by the drain step
        assert wait_for(lambda: env.registry.get_cluster(env.pool, old.cluster_id).state == ClusterState.TERMINATED, 60), (
            loop.events
        )
    assert out and not isinstance(out[0], BaseException), out
    # The pool had its new READY cluster taking work throughout: never a gap.
    assert set(ready_seen) == {new.cluster_id}, ready_seen
    job = env.registry.get_job(job_key)
    assert (job.state, job.cluster_id, job.moves, job.attempt) == (JobState.SUCCEEDED, old.cluster_id, 0, 1)
    assert env.state(pipeline).snapshot_rows == ROWS
    # the task's next job, its window, ran on the new cluster
    window = env.registry.get_job(f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}")
    assert (window.state, window.cluster_id) == (JobState.SUCCEEDED, new.cluster_id)
    assert out[0]["current_rows"] == ROWS
    assert_lake_equals_mysql(env, pipeline, table)
    assert datetime.fromisoformat(new.launched_at) > datetime.fromisoformat(old.launched_at)
    check_the_ledger_by_hand(env, fleet, make_pool(), old.cluster_id, new.cluster_id, job_key, window.job_key)


def check_the_ledger_by_hand(
    env: ExtractionEnv, fleet: Fleet, pool: PoolConfig, old_id: str, new_id: str, snapshot_key: str, window_key: str
) -> None:
    """The cost ledger of this run, figure by figure: each cluster's hours × config/prices.yaml's
    m5.xlarge price (the pool's local shape counts as one m5.xlarge on demand), each job's slot
    time × that price / the pool's 2 slots, Glue's 2 DPUs × the job's time (at least a minute)."""
    assert fleet.settle(pool).clusters("confirmed") == [old_id]  # the rotated cluster's end, confirmed
    now = datetime.now(UTC)
    table = prices.load()
    table = replace(table, glue=replace(table.glue, pools={pool.name: prices.GlueJob("G.1X", 2)}))
    book = ledger.read(env.registry, PoolsConfig(Path("pools.yaml"), "local", (pool,)), table, now.date(), now)
    hourly = 0.192 + 0.048  # m5.xlarge on demand + EMR, config/prices.yaml
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)

    def hours(start: str, end: datetime) -> float:
        return (end - max(datetime.fromisoformat(start), midnight)).total_seconds() / 3600

    old, new = env.registry.get_cluster(env.pool, old_id), env.registry.get_cluster(env.pool, new_id)
    (old_usage,) = decode_instances(old.instances)
    (new_usage,) = decode_instances(new.instances)
    assert (old_usage.instance_type, old_usage.market) == ("m5.xlarge", "ON_DEMAND")
    # the instance started with the cluster's Livy process, at its launch
    started = datetime.fromisoformat(old_usage.start) - datetime.fromisoformat(old.launched_at)
    assert abs(started.total_seconds()) < 60, (old.launched_at, old_usage.start)
    (pool_cost,) = book.pools
    rows = {c.cluster_id: c for c in pool_cost.clusters}
    old_hours = hours(old_usage.start, datetime.fromisoformat(old.terminated_at))
    assert rows[old_id].hours == {"m5.xlarge on-demand": pytest.approx(old_hours)}
    assert rows[old_id].cost == pytest.approx(old_hours * hourly)
    assert rows[new_id].cost == pytest.approx(hours(new_usage.start, now) * hourly, rel=1e-3)
    assert pool_cost.cost == pytest.approx(rows[old_id].cost + rows[new_id].cost, rel=1e-3)
    work = {r.job_key: r for r in book.work}
    for key, cluster_id in ((snapshot_key, old_id), (window_key, new_id)):
        job = env.registry.get_job(key)
        seconds = (datetime.fromisoformat(job.updated_at) - datetime.fromisoformat(job.submitted_at)).total_seconds()
        assert work[key].clusters == [cluster_id] and work[key].seconds == pytest.approx(seconds, abs=0.01)
        assert work[key].cost == pytest.approx(seconds / 3600 * hourly / 2, rel=1e-3)
        assert work[key].glue == pytest.approx(2 * max(seconds, 60) / 3600 * 0.44)
    assert pool_cost.unattributed == pytest.approx(pool_cost.cost - pool_cost.work)


def test_a_livy_cluster_started_behind_the_registrys_back_is_swept_and_its_end_confirmed(
    fleet_env: tuple[ExtractionEnv, Fleet, Callable[..., PoolConfig]], supervisor: Supervisor
) -> None:
    """A real Livy server of the pool that the registry never launched (a leftover of a lost
    registry, a launch by hand): the fleet's sweep terminates it once past sweep_grace, records it,
    and the next pass confirms it gone; the pool's own READY cluster is left alone."""
    env, fleet, make_pool = fleet_env
    pool = make_pool(sweep_grace=timedelta(seconds=20))
    fleet.launch(pool)
    ours = env.registry.ready_cluster(env.pool)
    assert ours is not None
    rogue = f"{env.pool}-0042"
    processes = fleet.provider.processes  # type: ignore[attr-defined]
    processes.launch(rogue, master="local[1]")
    assert {c.cluster_id for c in fleet.provider.running(pool)} == {ours.cluster_id, rogue}

    report = fleet.sweep(pool)
    assert report.clusters("untracked") == [rogue] and supervisor.is_running(f"livy-{rogue}")  # within its grace
    assert wait_for(lambda: rogue in fleet.sweep(pool).clusters("swept"), 60, interval=2), "the untracked cluster was not swept"
    assert not supervisor.is_running(f"livy-{rogue}")
    swept = env.registry.get_cluster(env.pool, rogue)
    assert swept.state == ClusterState.TERMINATED and swept.reason.startswith(f"swept: cluster {rogue}")
    assert fleet.settle(pool).clusters("confirmed") == [rogue]
    assert env.registry.get_cluster(env.pool, rogue).terminated_at
    still = env.registry.ready_cluster(env.pool)
    assert supervisor.is_running(f"livy-{ours.cluster_id}") and still is not None and still.cluster_id == ours.cluster_id
    assert fleet.sweep(pool).events == [] and fleet.vacancy(pool) is None
