"""Recovery time after a cluster kill, on the local stack.

For each of N kills: the fleet launches a local cluster (one Livy server), the
initial snapshot of a 300,000-row table starts on it, the cluster's process is SIGKILLed
mid-batch, and the fleet's loop (health checks every interval, heal) detects the
death, re-queues the job and launches a replacement; the operator resubmits the
job there, it resumes after its last committed chunk and commits. Timestamps come from polling the registry every 0.1 s.

    PYTHONPATH=plugins:. .venv/bin/python bench/recovery_bench.py --kills 5

Needs the core services running (`make up`, or `python -m spotlake_dev.localstack up core`).
Writes docs/benchmarks/recovery.md unless --print-only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from hooks.livy import probe_livy
from spark_jobs.common.lake_state import snapshot_job_key
from spotlake import stack
from spotlake.fleet import Fleet
from spotlake.pools import LocalShape, PoolConfig
from spotlake.registry import ClusterState, JobState
from spotlake.stack import StackLayout
from spotlake_dev.demo import CATALOG_SECRET_ID
from spotlake_dev.localstack.process import Supervisor, wait_for
from spotlake_dev.localstack.provider import LocalClusterProvider, LocalProvider
from tests.support.cluster_loss import ROWS, FleetLoop, big_table, run_in_thread
from tests.support.extraction_harness import (
    ExtractionEnv,
    aws_connection,
    run_operator,
)

ROOT = Path(__file__).resolve().parents[1]

FIVE = timedelta(minutes=5)


def one_kill(env: ExtractionEnv, fleet: Fleet, pool: PoolConfig, supervisor: Supervisor, n: int) -> dict[str, float]:
    fleet.launch(pool)
    first = env.registry.ready_cluster(pool.name)
    table, w = big_table(env, f"recov{n}", ROWS)
    pipeline = env.add_pipeline(f"recov{n}_{env.tag}", table, pool=pool.name, read={"snapshot_chunk_rows": 50_000})
    job_key = snapshot_job_key(pipeline)
    marks: dict[str, float] = {}
    with FleetLoop(fleet, pool):
        thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
        assert wait_for(lambda: (j := env.registry.get_job(job_key)) is not None and j.batch_id >= 0, 180)
        time.sleep(8)
        marks["kill"] = time.monotonic()
        supervisor.kill(f"livy-{first.cluster_id}")
        while thread.is_alive():
            now = time.monotonic()
            cluster = env.registry.get_cluster(pool.name, first.cluster_id)
            if "detected" not in marks and cluster.state == ClusterState.DEAD:
                marks["detected"] = now
            clusters = [c for c in env.registry.clusters(pool.name) if c.cluster_id != first.cluster_id]
            if "launch" not in marks and clusters:
                marks["launch"] = now
            if "ready" not in marks and any(c.state == ClusterState.READY for c in clusters):
                marks["ready"] = now
            job = env.registry.get_job(job_key)
            if (
                "resubmitted" not in marks
                and job.cluster_id != first.cluster_id
                and job.batch_id >= 0
                and job.state == JobState.SUBMITTED
            ):
                marks["resubmitted"] = now
            thread.join(timeout=0.1)
        marks["committed"] = time.monotonic()
    if not out or isinstance(out[0], BaseException):
        raise RuntimeError(f"kill {n}: the extraction did not finish: {out}")
    for cluster in env.registry.clusters(pool.name):
        supervisor.stop(f"livy-{cluster.cluster_id}")
    k = marks["kill"]
    return {
        "detect_s": marks["detected"] - k,
        "replacement_boot_s": marks["ready"] - marks["launch"],
        "resubmit_after_ready_s": marks["resubmitted"] - marks["ready"],
        "kill_to_resubmit_s": marks["resubmitted"] - k,
        "kill_to_commit_s": marks["committed"] - k,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--health-check-interval", type=float, default=15.0)
    parser.add_argument("--failure-threshold", type=int, default=3)
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()

    layout = StackLayout.default()
    supervisor = Supervisor(layout)
    mysql = stack.mysql_settings(layout)
    os.environ.update(stack.aws_env(layout))
    endpoint = stack.moto_endpoint(layout)
    tmp = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    env = ExtractionEnv(mysql, endpoint, livy_url="", tmp=tmp, catalog_secret=CATALOG_SECRET_ID, register_cluster=False)
    os.environ.update(
        {
            **env.environ(),
            "SPOTLAKE_LIVY_BASE_PORT": os.environ.get("SPOTLAKE_LIVY_E2E_BASE_PORT", "25998"),
            "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(endpoint),
        }
    )
    fleet = Fleet(env.registry, LocalClusterProvider(LocalProvider(StackLayout.default()), probe=probe_livy))
    runs = []
    for n in range(args.kills):
        # each kill on a pool of its own: a fresh first cluster, a fresh vacancy
        pool = PoolConfig(
            name=f"{env.pool}k{n}",
            max_age=timedelta(hours=6),
            drain_deadline=timedelta(minutes=10),
            health_check_interval=timedelta(seconds=args.health_check_interval),
            failure_threshold=args.failure_threshold,
            launch_timeout=timedelta(minutes=3),
            local=LocalShape(master="local[2]"),
        )
        result = one_kill(env, fleet, pool, supervisor, n)
        print(f"kill {n + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()), flush=True)
        runs.append(result)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    boot_share = med["replacement_boot_s"] / med["kill_to_resubmit_s"]
    lines = [
        "# Recovery after a cluster kill (local stack)",
        "",
        f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/recovery_bench.py --kills {args.kills} "
        f"--health-check-interval {args.health_check_interval:g} --failure-threshold {args.failure_threshold}`",
        "",
        f"Each kill SIGKILLs the Livy server (and its running spark-submit) of the pool's READY cluster "
        f"8 s into the initial snapshot of a {ROWS:,}-row table (chunks of 50,000 rows); the fleet loop checks "
        f"health every {args.health_check_interval:g} s (a cluster whose Livy process is gone is DEAD at the "
        f"first check after; one that only stops answering, after {args.failure_threshold} failed checks). "
        f"Medians over {args.kills} kills, one run, 2-core machine shared with the rest of the stack.",
        "",
        "| phase | median (s) | " + " | ".join(f"kill {i + 1}" for i in range(len(runs))) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    labels = {
        "detect_s": "kill → cluster marked DEAD",
        "replacement_boot_s": "replacement launch → READY (boot)",
        "resubmit_after_ready_s": "replacement READY → job resubmitted",
        "kill_to_resubmit_s": "kill → job running on the replacement",
        "kill_to_commit_s": "kill → snapshot and first window committed",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {med[key]:.1f} | " + " | ".join(f"{r[key]:.1f}" for r in runs) + " |")
    lines += ["", f"Share of kill → resubmission spent booting the replacement: {boot_share:.0%}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.print_only:
        out = ROOT / "docs" / "benchmarks" / "recovery.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
