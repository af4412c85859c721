"""Twenty pipelines on one pool at a one-minute schedule, with a workload, through the whole stack.

Two steps:

    PYTHONPATH=plugins:. .venv/bin/python bench/soak_bench.py prepare
    SPOTLAKE_PIPELINES=$PWD/.stack/soak/pipelines.yaml SPOTLAKE_POOLS=$PWD/.stack/soak/pools.yaml make up
    PYTHONPATH=plugins:. .venv/bin/python bench/soak_bench.py run --minutes 15

``prepare`` creates 17 empty tables ``shop.load_01`` ... ``load_17`` beside the demo's three and writes a
pipelines file with the 20 pipelines at ``* * * * *`` (and the pools file: the demo's, with the pool's
slots). ``run`` measures, on the running stack (Airflow's scheduler, triggerer and workers, the
fleet's local cluster, warm sessions):

1. the Airflow side's CPU while idle: every ``extract_*`` DAG paused for ``--idle-seconds``, the CPU
   seconds of every Airflow process (the fleet's per-minute DAGs and sensors included) as a share of
   the machine's two cores;
2. then, for ``--minutes``, the demo's workload on the shop tables and one change a second spread
   over the load tables, each recorded with its commit time; the lake's current-state tables are
   polled (their Iceberg metadata; a table is read only when its snapshot changed) to find when each
   change became visible: freshness p50/p95 from commit in MySQL to presence in the lake;
3. queueing: for every extraction task of the period, from its data interval's end to the task's
   start, and the task's duration (Airflow's metadata database);
4. after the workload stops and every pipeline's watermark passed it: every table compared with
   MySQL (pymysql), key by key, on the cursor column.

Writes docs/benchmarks/one-minute-soak.md unless --print-only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import yaml

from hooks.livy import EndpointLivyHook
from spark_jobs.common.lake_state import LakeState, parse_iso
from spotlake import config, lake, stack
from spotlake.registry import Registry
from spotlake.stack import StackLayout
from spotlake_dev import demo
from spotlake_dev.localstack import services
from spotlake_dev.localstack.process import Supervisor

ROOT = Path(__file__).resolve().parents[1]

LOAD_TABLES = 17
SOAK = StackLayout.default().root / "soak"  # .stack/soak, or under SPOTLAKE_STACK_DIR


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def load_names() -> list[str]:
    return [f"load_{n:02d}" for n in range(1, LOAD_TABLES + 1)]


# ----------------------------------------------------------------------------- prepare
def prepare(args: argparse.Namespace) -> int:
    layout = StackLayout.default()
    SOAK.mkdir(parents=True, exist_ok=True)
    demo.seed(layout)
    conn = demo.connect(layout)
    with conn.cursor() as cur:
        for name in load_names():
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {name} (
                id BIGINT PRIMARY KEY, note VARCHAR(40) NOT NULL, amount DECIMAL(10,2) NOT NULL,
                updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
                deleted_at DATETIME(3) NULL, KEY ix_updated (updated_at))""")
    conn.close()
    pipelines = yaml.safe_load((ROOT / "config" / "pipelines.yaml").read_text())
    pipelines["defaults"]["schedule"] = "* * * * *"
    # The hourly reconciliation of 20 pipelines would take the pool's slots for minutes at :30: it is
    # measured on its own (docs/benchmarks/reconcile.md), not here.
    pipelines["defaults"]["reconcile"] = {"enabled": False}
    # The daily maintenance (its DAG runs its latest interval at once on a new stack) runs as batches of
    # minutes each on this machine: on the windows' pool it held their slots through a whole first soak
    # (docs/benchmarks/one-minute-soak.md). It runs on the other pool, one job at a time.
    pipelines["lake"].setdefault("maintenance", {})["pool"] = "large"
    for name in load_names():
        # New tables, empty at the start: no initial snapshot (its batches would only delay the soak).
        pipelines["pipelines"].append(
            {
                "name": f"shop_{name}",
                "source": "shop",
                "database": "shop",
                "table": name,
                "primary_key": "id",
                "cursor": "updated_at",
                "soft_delete": "deleted_at",
                "initial_load": False,
            }
        )
    (SOAK / "pipelines.yaml").write_text(yaml.safe_dump(pipelines, sort_keys=False))
    pools = yaml.safe_load((ROOT / "config" / "pools.yaml").read_text())
    pools["pools"]["small"]["max_batches"] = args.slots
    (SOAK / "pools.yaml").write_text(yaml.safe_dump(pools, sort_keys=False))
    print(
        f"wrote {SOAK}/pipelines.yaml ({len(pipelines['pipelines'])} pipelines at '* * * * *') and pools.yaml "
        f"(pool small: {args.slots} slots). Start the stack with:\n"
        f"  SPOTLAKE_PIPELINES={SOAK}/pipelines.yaml SPOTLAKE_POOLS={SOAK}/pools.yaml make up"
    )
    return 0


# ----------------------------------------------------------------------------- run
def airflow(layout: StackLayout, *argv: str) -> str:
    """The stack's Airflow command line, with the stack's Airflow settings."""
    env = {**os.environ, **services.airflow_env(layout)}
    done = subprocess.run([services.airflow_binary(layout), *argv], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(argv)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def airflow_cpu_seconds() -> float:
    """CPU seconds of every running Airflow process, plus those of the children they reaped (the
    task processes that ended)."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        times = proc.info["cpu_times"]
        if "airflow" in cmd and "soak_bench" not in cmd and times:
            total += times.user + times.system + times.children_user + times.children_system
    return total


EXTRACTION = "^extract_"


def pause(layout: StackLayout, pattern: str, paused: bool = True) -> None:
    """Pause (or unpause) every DAG whose id matches ``pattern``, in one command."""
    airflow(layout, "dags", "pause" if paused else "unpause", "--treat-dag-id-as-regex", "-y", pattern)


def idle_cpu(layout: StackLayout, seconds: float) -> dict[str, float]:
    """CPU of the Airflow processes over ``seconds`` while no extraction runs (every ``extract_*``
    DAG paused), as a share of the machine. A task process still running when the period ends is
    counted for the part it ran; one that started and ended inside it, through the parent that
    reaped it."""
    pause(layout, EXTRACTION)
    try:
        time.sleep(30)  # running windows end
        before, started = airflow_cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        used = airflow_cpu_seconds() - before
        elapsed = time.monotonic() - started
    finally:
        pause(layout, EXTRACTION, paused=False)
    return {"seconds": elapsed, "cpu_s": used, "share_of_machine": used / (elapsed * psutil.cpu_count())}


def fleet_share(layout: StackLayout, seconds: float, rounds: int) -> list[tuple[str, float]]:
    """Airflow's idle CPU with the fleet DAGs running and with them paused, alternating ``rounds``
    times on the same stack (every extraction DAG paused while measuring): the fleet's own share is
    the difference. Returns (``fleet running`` or ``fleet paused``, share of the machine) per reading."""
    readings = []
    for _ in range(rounds):
        readings.append(("fleet running", idle_cpu(layout, seconds)["share_of_machine"]))
        pause(layout, "^fleet_")
        try:
            readings.append(("fleet paused", idle_cpu(layout, seconds)["share_of_machine"]))
        finally:
            pause(layout, "^fleet_", paused=False)
    return readings


class LoadWriter:
    """One change a second over the load tables (an insert, an update, a soft delete), each recorded
    with its cursor value and its commit time."""

    def __init__(self, layout: StackLayout, rate: float) -> None:
        self.layout, self.rate = layout, rate
        self.changes: list[tuple[str, int, datetime, float]] = []  # table, id, updated_at, committed (epoch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(11)
        conn = demo.connect(self.layout)
        ids: dict[str, list[int]] = {}
        with conn.cursor() as cur:
            for name in load_names():
                cur.execute(f"SELECT id FROM {name}")
                ids[name] = [row[0] for row in cur.fetchall()]
            while not self.stop.is_set():
                name = rng.choice(load_names())
                roll = rng.random()
                if roll < 0.4 or not ids[name]:
                    row = max(ids[name], default=0) + 1
                    cur.execute(f"INSERT INTO {name} (id, note, amount) VALUES (%s, 'new', 1.5)", (row,))
                    ids[name].append(row)
                elif roll < 0.95:
                    row = rng.choice(ids[name])
                    cur.execute(f"UPDATE {name} SET amount = amount + 1 WHERE id = %s", (row,))
                else:
                    row = rng.choice(ids[name])
                    cur.execute(f"UPDATE {name} SET deleted_at = CURRENT_TIMESTAMP(3) WHERE id = %s", (row,))
                committed = time.time()  # autocommit: the statement has committed
                cur.execute(f"SELECT updated_at FROM {name} WHERE id = %s", (row,))
                self.changes.append((name, row, cur.fetchone()[0], committed))
                self.stop.wait(1.0 / self.rate)
        conn.close()


class LakeWatch:
    """When each recorded change became visible in its pipeline's current-state table."""

    def __init__(self, cfg: config.PipelinesConfig, writer: LoadWriter, poll: float) -> None:
        self.cfg, self.writer, self.poll = cfg, writer, poll
        self.seen: dict[int, float] = {}  # index into writer.changes -> visible at (epoch)
        self.snapshots: dict[str, int | None] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        catalog = lake.catalog(self.cfg.lake)
        while not self.stop.is_set():
            for name in load_names():
                pipeline = self.cfg.get(f"shop_{name}")
                try:
                    table = catalog.load_table(f"{self.cfg.lake.namespace}.{pipeline.current_table}")
                except Exception:  # noqa: BLE001, S112 - not created yet (its snapshot is running)
                    continue
                snapshot = table.current_snapshot()
                snapshot_id = snapshot.snapshot_id if snapshot else None
                if snapshot_id == self.snapshots.get(name):
                    continue
                self.snapshots[name] = snapshot_id
                now = time.time()
                rows = table.scan(selected_fields=("id", "updated_at")).to_arrow()
                current = dict(zip(rows.column("id").to_pylist(), rows.column("updated_at").to_pylist(), strict=True))
                for index, (table_name, row, updated_at, _) in enumerate(list(self.writer.changes)):
                    if table_name != name or index in self.seen:
                        continue
                    got = current.get(row)
                    if got is not None and got.replace(tzinfo=None) >= updated_at:
                        self.seen[index] = now
            self.stop.wait(self.poll)


def queueing(layout: StackLayout, since: datetime, until: datetime) -> list[tuple[str, float, float, float]]:
    """(dag, seconds from the data interval's end to the task's queueing by the scheduler, from its
    queueing to its start by the executor, task duration) of every extraction task that started
    in [since, until)."""
    pg = services.postgres_settings(layout)
    conn = psycopg2.connect(
        host=pg["host"],
        port=pg["port"],
        user="airflow",
        password=layout.setting("SPOTLAKE_AIRFLOW_DB_PASSWORD", "airflow-local"),
        dbname="airflow",
    )
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT ti.dag_id, EXTRACT(EPOCH FROM ti.queued_dttm - dr.data_interval_end),
                   EXTRACT(EPOCH FROM ti.start_date - ti.queued_dttm),
                   EXTRACT(EPOCH FROM ti.end_date - ti.start_date)
            FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id
            WHERE ti.dag_id LIKE 'extract_%%' AND ti.start_date >= %s AND ti.start_date < %s
              AND ti.end_date IS NOT NULL AND ti.state = 'success'""",
            (since, until),
        )
        rows = [(dag, float(scheduled), float(started), float(duration)) for dag, scheduled, started, duration in cur.fetchall()]
    conn.close()
    return rows


def per_minute(layout: StackLayout, since: datetime, until: datetime) -> list[tuple[datetime, int, float, float]]:
    """Per data interval end (minute) in [since, until): windows, and their wait from the interval's
    end to the task's start, p50 and max."""
    pg = services.postgres_settings(layout)
    conn = psycopg2.connect(
        host=pg["host"],
        port=pg["port"],
        user="airflow",
        password=layout.setting("SPOTLAKE_AIRFLOW_DB_PASSWORD", "airflow-local"),
        dbname="airflow",
    )
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT dr.data_interval_end, count(*),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM ti.start_date - dr.data_interval_end)),
                   max(EXTRACT(EPOCH FROM ti.start_date - dr.data_interval_end))
            FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id
            WHERE ti.dag_id LIKE 'extract_%%' AND dr.data_interval_end >= %s AND dr.data_interval_end < %s
              AND ti.start_date IS NOT NULL
            GROUP BY 1 ORDER BY 1""",
            (since, until),
        )
        rows = [(end, int(n), float(p50), float(worst)) for end, n, p50, worst in cur.fetchall()]
    conn.close()
    return rows


def registry_client(layout: StackLayout) -> Any:
    import boto3

    env = stack.aws_env(layout)
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.moto_endpoint(layout),
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def statement_seconds(layout: StackLayout, since: datetime, until: datetime) -> list[float]:
    """How long Livy ran each window's statement (its ``started`` to ``completed``), for the windows
    posted in [since, until): the part of a task's duration that is Spark's."""
    found = []
    for job in Registry(registry_client(layout)).jobs():
        if not job.in_session or job.statement_id < 0 or not job.submitted_at:
            continue
        if not since <= parse_iso(job.submitted_at) < until:
            continue
        response = EndpointLivyHook(job.endpoint).run_method(f"sessions/{job.session_id}/statements/{job.statement_id}")
        if response.status_code != 200:
            continue  # the session was recycled since: its statements are gone with it
        statement = response.json()
        if statement.get("started") and statement.get("completed"):
            found.append((statement["completed"] - statement["started"]) / 1000)
    return found


def wait_for_watermarks(layout: StackLayout, cfg: config.PipelinesConfig, past: datetime, timeout: float) -> float:
    state = LakeState(registry_client(layout), "spotlake")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        marks = [state.get(p.name) for p in cfg.pipelines]
        if all(m is not None and m.watermark and parse_iso(m.watermark) > past for m in marks):
            return time.monotonic() - started
        time.sleep(5)
    lagging = [
        p.name
        for p, m in zip(cfg.pipelines, [state.get(p.name) for p in cfg.pipelines], strict=True)
        if m is None or not m.watermark or parse_iso(m.watermark) <= past
    ]
    raise AssertionError(f"watermarks still before {past.isoformat()} after {timeout:.0f} s: {', '.join(lagging)}")


def compare(layout: StackLayout, cfg: config.PipelinesConfig) -> dict[str, tuple[int, int]]:
    """Per pipeline: (rows in MySQL, rows that differ from the lake on key or cursor value)."""
    conn = demo.connect(layout)
    found: dict[str, tuple[int, int]] = {}
    for pipeline in cfg.pipelines:
        key = pipeline.primary_key[0]
        with conn.cursor() as cur:
            cur.execute(f"SELECT `{key}`, `{pipeline.cursor}` FROM `{pipeline.table}`")
            source = {k: v for k, v in cur.fetchall()}
        table = lake.read(cfg, pipeline.name)
        ours = {
            k: v.replace(tzinfo=None) if v is not None else None
            for k, v in zip(table.column(key).to_pylist(), table.column(pipeline.cursor).to_pylist(), strict=True)
        }
        differ = sum(1 for k in set(source) | set(ours) if source.get(k) != ours.get(k))
        found[pipeline.name] = (len(source), differ)
    conn.close()
    return found


def run(args: argparse.Namespace) -> int:
    layout = StackLayout.default()
    os.environ.update(stack.aws_env(layout))  # the lake's catalog secret and files, as the stack serves them
    cfg = config.load(SOAK / "pipelines.yaml")
    if args.fleet_rounds:
        readings = fleet_share(layout, args.idle_seconds, args.fleet_rounds)
        for what, share in readings:
            print(f"{what}: Airflow at {100 * share:.1f}% of the machine over {args.idle_seconds:.0f} s", flush=True)
        for what in ("fleet running", "fleet paused"):
            print(f"median, {what}: {100 * statistics.median(v for w, v in readings if w == what):.1f}%")
        return 0
    if args.idle_only:
        idle = idle_cpu(layout, args.idle_seconds)
        print(
            f"idle: Airflow used {idle['cpu_s']:.1f} CPU s in {idle['seconds']:.0f} s "
            f"({100 * idle['share_of_machine']:.1f}% of the machine)",
            flush=True,
        )
        return 0
    print("waiting for every pipeline's initial snapshot and first window", flush=True)
    wait_for_watermarks(layout, cfg, datetime.now(UTC) - timedelta(minutes=2), 1200)
    idle = idle_cpu(layout, args.idle_seconds) if args.idle_seconds > 0 else None
    if idle:
        print(
            f"idle: Airflow used {idle['cpu_s']:.1f} CPU s in {idle['seconds']:.0f} s "
            f"({100 * idle['share_of_machine']:.1f}% of the machine)",
            flush=True,
        )
        wait_for_watermarks(layout, cfg, datetime.now(UTC) - timedelta(minutes=1), 900)
    if args.settle_minutes > 0:
        # A new stack starts with a backlog (initial snapshots, new sessions, every DAG's first run)
        # that takes minutes to drain; the soak measures the steady state after it.
        print(f"settling for {args.settle_minutes:.0f} minutes", flush=True)
        time.sleep(args.settle_minutes * 60)
    if not Supervisor(layout).is_running("workload"):
        demo.start_workload(layout)  # a second run on the same stack: the first one stopped it
    print("soak starts", flush=True)
    writer = LoadWriter(layout, args.rate)
    watch = LakeWatch(cfg, writer, args.poll)
    # The demo's own workload (`make up` starts it: 2 changes/s on the shop tables) runs throughout.
    since = datetime.now(UTC)
    writer.thread.start()
    watch.thread.start()
    time.sleep(args.minutes * 60)
    writer.stop.set()
    writer.thread.join()
    Supervisor(layout).stop("workload")
    stopped = datetime.now(UTC)
    print(f"workload stopped; {len(writer.changes)} load-table changes; waiting for the watermarks", flush=True)
    caught_up = wait_for_watermarks(layout, cfg, stopped + timedelta(seconds=5), 600)
    time.sleep(args.poll * 2)
    watch.stop.set()
    watch.thread.join()
    fresh = [watch.seen[i] - writer.changes[i][3] for i in range(len(writer.changes)) if i in watch.seen]
    missing_fresh = len(writer.changes) - len(fresh)
    tasks = queueing(layout, since, stopped)
    statements = statement_seconds(layout, since, stopped)
    minutes = per_minute(layout, since, stopped)
    diffs = compare(layout, cfg)
    report = render(args, idle, fresh, missing_fresh, tasks, statements, diffs, caught_up, len(writer.changes))
    report += "\n" + render_minutes(minutes)
    print(report)
    if not args.print_only:
        (ROOT / "docs" / "benchmarks" / "one-minute-soak.md").write_text(report)
    return 0 if all(d == 0 for _, d in diffs.values()) else 1


def render(
    args: argparse.Namespace,
    idle: dict[str, float] | None,
    fresh: list[float],
    missing: int,
    tasks: list[tuple[str, float, float, float]],
    statements: list[float],
    diffs: dict[str, tuple[int, int]],
    caught_up: float,
    changes: int,
) -> str:
    scheduled = [s for _, s, _, _ in tasks]
    started = [s for _, _, s, _ in tasks]
    delays = [s + q for _, s, q, _ in tasks]
    durations = [t for _, _, _, t in tasks]
    late = sum(1 for d in delays if d > 60)

    def spread(values: list[float], what: str) -> str:
        if not values:
            return f"| {what} | – |"
        return f"| {what}, p50 / p95 / max | {statistics.median(values):.1f} / {pct(values, 0.95):.1f} / {max(values):.1f} s |"

    lines = [
        "# Twenty pipelines at a one-minute schedule (local stack)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, one run, on the stack from `make up` (2 cores): 20 pipelines "
        "(the demo's three and 17 `load_NN` tables) on pool `small` at `* * * * *`, windows as statements in warm "
        f"sessions, {args.minutes:.0f} minutes of the demo's workload (2 changes/s) and {args.rate} change/s over "
        "the load tables; the daily lake maintenance (which runs at once on a new stack) on pool `large`, one job "
        "at a time; the hourly reconciliation off. Reproduce: see `bench/soak_bench.py`.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    if idle:
        lines.append(
            f"| Airflow CPU while idle (extraction paused, fleet DAGs running), share of the machine | "
            f"{100 * idle['share_of_machine']:.1f}% ({idle['cpu_s']:.0f} CPU s in {idle['seconds']:.0f} s) |"
        )
    lines += [
        f"| extraction tasks in the period | {len(tasks)} |",
        spread(delays, "data interval end -> task start"),
        spread(scheduled, "of which: data interval end -> queued by the scheduler"),
        spread(started, "of which: queued -> started by the executor"),
        f"| windows that queued longer than one interval (60 s) | {late} |",
        spread(durations, "task duration (start to end, as Airflow records it)"),
        spread(statements, f"of which: the window's statement in Livy ({len(statements)} statements)"),
        f"| freshness (commit in MySQL -> in the current-state table), p50 / p95 / max, {len(fresh)} changes | "
        f"{statistics.median(fresh):.0f} / {pct(fresh, 0.95):.0f} / {max(fresh):.0f} s |"
        if fresh
        else "| freshness | – |",
        f"| changes never seen by the poll (overwritten by a later change of the same row first) | {missing} of {changes} |",
        f"| after the workload stopped, every watermark past it within | {caught_up:.0f} s |",
        f"| rows differing from MySQL (key or cursor value), all 20 tables | {sum(d for _, d in diffs.values())} "
        f"of {sum(n for n, _ in diffs.values())} |",
        "",
    ]
    return "\n".join(lines)


def render_minutes(minutes: list[tuple[datetime, int, float, float]]) -> str:
    lines = [
        "Per minute of the period: the windows whose data interval ended then, and how long after that end their tasks started.",
        "",
        "| interval end (UTC) | windows | wait p50 | wait max |",
        "|---|---|---|---|",
    ]
    lines += [f"| {end:%H:%M} | {n} | {p50:.0f} s | {worst:.0f} s |" for end, n, p50, worst in minutes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--slots", type=int, default=2, help="the pool's max_batches (Airflow pool slots, sessions)")
    r = sub.add_parser("run")
    r.add_argument("--minutes", type=float, default=15)
    r.add_argument("--rate", type=float, default=1.0, help="changes per second over the load tables")
    r.add_argument("--poll", type=float, default=5.0)
    r.add_argument(
        "--settle-minutes", type=float, default=5, help="wait this long after every pipeline's first window before measuring"
    )
    r.add_argument("--idle-seconds", type=float, default=180)
    r.add_argument("--idle-only", action="store_true", help="measure the idle CPU only, then stop")
    r.add_argument(
        "--fleet-rounds",
        type=int,
        default=0,
        help="only measure the idle CPU with the fleet DAGs running and paused, this many times each",
    )
    r.add_argument("--print-only", action="store_true")
    b = sub.add_parser("breakdown", help="queueing and task/statement times of a past period, from the running stack")
    b.add_argument("--since", required=True, help="ISO time, e.g. 2026-12-05T22:05:00+00:00")
    b.add_argument("--until", required=True)
    args = parser.parse_args()
    if args.command == "breakdown":
        return breakdown(args)
    return prepare(args) if args.command == "prepare" else run(args)


def breakdown(args: argparse.Namespace) -> int:
    layout = StackLayout.default()
    since, until = parse_iso(args.since), parse_iso(args.until)
    tasks = queueing(layout, since, until)
    statements = statement_seconds(layout, since, until)
    args.minutes, args.rate = (until - since).total_seconds() / 60, 0
    table = render(args, None, [], 0, tasks, statements, {}, 0.0, 0).splitlines()
    print(
        "\n".join(
            line
            for line in table
            if "extraction tasks" in line
            or " -> " in line
            or "duration" in line
            or "statement" in line
            or "queued longer" in line
        )
    )
    print(render_minutes(per_minute(layout, since, until)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
