"""Extraction benchmarks on the local stack (MariaDB, moto, Livy, Spark on this machine).

    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py full      # 2,000,000 rows
    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py window    # 20,000-row windows
    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py freshness --since 2026-11-27T14:37:37+00:00

full:      the extraction job (spark-submit, local[2], whole process) on a 2,000,000-row,
           10-column table vs connectorx into pyarrow Parquet (whole process), alternating,
           medians of --repetitions; rows/s and the ratio.
window:    one five-minute window of ~20,000 changed rows through the operator and its
           trigger on a local Livy cluster: task start to manifest committed, split into
           submit, Spark start, read, write, commit; medians over --repetitions windows.
freshness: from the demo stack's lake: for each row version the workload wrote after
           --since, seconds from its commit in MariaDB (its updated_at) to the commit of
           the first window manifest that holds it; p50 and p95.

Needs the stack (`make up`). Results go to docs/benchmarks/extraction-<what>.md unless --print-only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

import boto3  # noqa: E402
import pymysql  # noqa: E402

from spotlake import artifacts, config, lake  # noqa: E402
from spotlake.localstack import jvm, services  # noqa: E402
from spotlake.localstack.layout import StackLayout  # noqa: E402

OUT_DIR = ROOT / "docs" / "benchmarks"


def mysql_conn(layout: StackLayout) -> pymysql.Connection:
    m = services.mysql_settings(layout)
    return pymysql.connect(host=m["host"], port=int(m["port"]), user=m["user"], password=m["password"],
                           database=m["database"], autocommit=True)


def ensure_full_table(layout: StackLayout, rows: int) -> str:
    table = f"bench_full_{rows}"
    conn = mysql_conn(layout)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = %s", (table,))
        exists = cur.fetchone()[0] == 1
        if exists:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            if cur.fetchone()[0] != rows:
                cur.execute(f"DROP TABLE {table}")
                exists = False
        if not exists:
            cur.execute(f"""CREATE TABLE {table} (
                id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, sku VARCHAR(16) NOT NULL,
                quantity INT NOT NULL, unit_price DECIMAL(10,2) NOT NULL, status VARCHAR(12) NOT NULL,
                note VARCHAR(64), created_at DATETIME(3) NOT NULL, updated_at DATETIME(3) NOT NULL,
                deleted_at DATETIME(3) NULL, KEY ix_updated (updated_at))""")
            cur.execute(f"""INSERT INTO {table}
                SELECT seq, seq % 50000, CONCAT('SKU-', seq % 2000), 1 + seq % 5, (seq % 30000) / 100,
                       ELT(1 + seq % 4, 'placed', 'paid', 'shipped', 'delivered'), CONCAT('note ', seq),
                       TIMESTAMPADD(SECOND, -seq, '2026-11-01 00:00:00'), TIMESTAMPADD(SECOND, -seq, '2026-11-20 00:00:00'),
                       NULL
                FROM seq_1_to_{rows}""")
    conn.close()
    return table


def spark_submit_argv(layout: StackLayout, job_file: Path, published: artifacts.JobArtifacts) -> list[str]:
    jars = ",".join(str(p) for p in jvm.jar_files(layout, "spark"))
    return [
        str(layout.spark_home / "bin" / "spark-submit"), "--master", "local[2]", "--driver-memory", "1g",
        "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.session.timeZone=UTC",
        "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.driver.host=127.0.0.1",
        "--jars", jars, "--py-files", published.py_files[0], published.entry, "--job-file", str(job_file),
    ]


def bench_full(layout: StackLayout, rows: int, repetitions: int) -> str:
    table = ensure_full_table(layout, rows)
    m = services.mysql_settings(layout)
    env = {**os.environ, **services.aws_env(layout), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": layout.python, "SPARK_HOME": str(layout.spark_home)}
    from spotlake.demo import SECRET_ID

    published = artifacts.publish("extract.py")
    tmp = Path(tempfile.mkdtemp(prefix="bench-full-"))
    cx_script = (
        "import connectorx as cx, pyarrow.parquet as pq, sys\n"
        "t = cx.read_sql(sys.argv[1], sys.argv[2], return_type='arrow', partition_on='id', partition_num=2)\n"
        "pq.write_table(t, sys.argv[3])\n"
        "print(t.num_rows)\n"
    )
    url = f"mysql://{m['user']}:{m['password']}@{m['host']}:{m['port']}/{m['database']}"
    spark_s, cx_s = [], []
    for rep in range(repetitions):
        job = {
            "job_key": f"bench#{rep}", "attempt": 1, "run_id": f"bench{rep}{int(time.time())}",
            "pipeline": "bench_full", "source": {"secret_id": SECRET_ID}, "database": m["database"],
            "table": table, "primary_key": ["id"], "cursor": "updated_at", "soft_delete": "deleted_at",
            "window": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00",
                       "read_from": "1970-01-01T00:00:00+00:00"},
            "transforms": [], "output": {"root": f"file:{tmp}/spark{rep}"},
            "read": {"fetch_size": 10000, "partition_rows": 250000, "max_partitions": 2},
        }
        job_file = tmp / f"job{rep}.json"
        job_file.write_text(json.dumps(job))
        started = time.monotonic()
        result = subprocess.run(spark_submit_argv(layout, job_file, published), env=env, capture_output=True,
                                text=True, check=False)
        spark_s.append(time.monotonic() - started)
        if result.returncode != 0:
            raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
        manifest = json.loads(next(ln for ln in result.stdout.splitlines()
                                   if ln.startswith("SPOTLAKE_MANIFEST: ")).split(": ", 1)[1])
        assert manifest["rows_written"] == rows, manifest["rows_written"]
        started = time.monotonic()
        out = subprocess.run([layout.python, "-c", cx_script, url, f"SELECT * FROM {table}", str(tmp / f"cx{rep}.parquet")],
                             capture_output=True, text=True, check=True)
        cx_s.append(time.monotonic() - started)
        assert int(out.stdout.strip()) == rows
        print(f"rep {rep + 1}: spark {spark_s[-1]:.1f} s, connectorx {cx_s[-1]:.1f} s", flush=True)
    sp, cx = statistics.median(spark_s), statistics.median(cx_s)
    return "\n".join([
        f"## Full table: {rows:,} rows, 10 columns",
        "",
        f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py full --rows {rows} "
        f"--repetitions {repetitions}` ({datetime.now(UTC):%Y-%m-%d}, one run, alternating, whole processes)",
        "",
        "| reader | median wall (s) | rows/s | runs (s) |",
        "|---|---|---|---|",
        f"| spotlake extraction job, `spark-submit` local[2], JDBC split on the key, Parquet + manifest | "
        f"{sp:.1f} | {rows / sp:,.0f} | {', '.join(f'{x:.1f}' for x in spark_s)} |",
        f"| connectorx 0.4.6 → pyarrow Parquet (2 partitions) | {cx:.1f} | {rows / cx:,.0f} | "
        f"{', '.join(f'{x:.1f}' for x in cx_s)} |",
        "",
        f"Ratio: the extraction job reaches **{cx / sp:.0%}** of the plain reader's rows/s "
        f"({sp / cx:.1f}x its wall time).",
        "",
    ])


def bench_window(layout: StackLayout, rows: int, repetitions: int) -> str:
    import asyncio
    from collections import defaultdict
    from types import SimpleNamespace

    from airflow.exceptions import TaskDeferred

    from spotlake.localstack.process import Supervisor, free_port
    from tests.integration.extraction_harness import ExtractionEnv, FakeTaskInstance, _first_event

    supervisor = Supervisor(layout)
    # below Linux's ephemeral range (32768-60999), where outgoing connections take ports
    port = free_port(int(layout.setting("SPOTLAKE_LIVY_BENCH_PORT", "27998")))
    supervisor.start(jvm.livy_spec(layout, "bench", port))
    os.environ.update(services.aws_env(layout))
    endpoint = services.moto_endpoint(layout)
    tmp = Path(tempfile.mkdtemp(prefix="bench-window-"))
    env = ExtractionEnv(services.mysql_settings(layout), endpoint, f"http://127.0.0.1:{port}", tmp)
    os.environ.update({
        "SPOTLAKE_PIPELINES": str(env.config_path), "SPOTLAKE_REGISTRY_PREFIX": env.prefix,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}),
    })
    table = f"bench_window_{env.tag}"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    base = now.replace(minute=now.minute - now.minute % 5) - timedelta(hours=3)
    conn = env.connect()
    with conn.cursor() as cur:
        cur.execute(f"""CREATE TABLE {table} (
            id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
            amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL,
            KEY ix_updated (updated_at))""")
        # one window of history first, so every measured window is incremental (no initial load)
        for w in range(repetitions + 1):
            start = base + timedelta(minutes=5 * w)
            cur.execute(
                f"INSERT INTO {table} SELECT {w} * {rows} + seq, CONCAT('customer-', seq %% 997), 'placed', "
                f"(seq %% 10000) / 4, TIMESTAMPADD(MICROSECOND, (seq %% 299000) * 1000, %s), NULL "
                f"FROM seq_1_to_{rows}", (start.replace(tzinfo=None),))
    pipeline = env.add_pipeline(f"bench_{env.tag}", table, lookback="0s")
    phases: list[dict[str, float]] = []
    for w in range(repetitions + 1):
        start = base + timedelta(minutes=5 * w)
        op = env.operator(pipeline)
        op.poll_interval = 0.25
        ctx: dict[str, Any] = {"data_interval_start": start, "data_interval_end": start + timedelta(minutes=5),
                               "ti": FakeTaskInstance(), "outlet_events": defaultdict(SimpleNamespace)}
        t0 = time.monotonic()
        try:
            op.execute(ctx)
            raise RuntimeError("the operator did not defer")
        except TaskDeferred as deferred:
            t_submitted = time.monotonic()
            event = asyncio.run(_first_event(deferred.trigger))
            t_batch_done = time.monotonic()
            result = op.execute_complete(ctx, event=event.payload)
        t_done = time.monotonic()
        manifest = lake.read_manifest(env.s3, env.target(pipeline), result["window"])
        timings = manifest["timings"]
        job_s = sum(float(v) for v in timings.values())
        if w == 0:
            continue  # warm-up: the first window of a pipeline is its initial load
        assert result["rows_written"] == rows, result
        phases.append({
            "submit": t_submitted - t0,
            "spark_start": (t_batch_done - t_submitted) - job_s,
            "read": timings.get("secret_s", 0) + timings.get("validate_s", 0) + timings.get("read_s", 0),
            "write": timings.get("transform_s", 0) + timings.get("write_s", 0),
            "commit": timings.get("commit_s", 0) + (t_done - t_batch_done),
            "total": t_done - t0,
        })
        print(f"window {w}: " + ", ".join(f"{k} {v:.2f}" for k, v in phases[-1].items()), flush=True)
    supervisor.stop("livy-bench")
    med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    rows_md = "\n".join(f"| {k} | {med[k]:.2f} | {', '.join(f'{p[k]:.2f}' for p in phases)} |" for k in med)
    return "\n".join([
        f"## One window of {rows:,} changed rows, task start to manifest committed",
        "",
        f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py window --rows {rows} "
        f"--repetitions {repetitions}` ({datetime.now(UTC):%Y-%m-%d}, one run; operator + trigger + Livy 0.7.1 "
        "batch + Spark local[2] + moto S3 + DynamoDB registry)",
        "",
        "Phases: *submit* = operator start to batch posted (config, artifacts, registry claim, POST); "
        "*spark_start* = batch wall time minus the job's own phases (spark-submit, JVM, SparkContext, "
        "Python worker); *read* = secret, source checks, window count; *write* = JDBC fetch, "
        "transforms and Parquet write (one Spark pipeline); *commit* = manifest, then the operator "
        "reading it and recording the window (includes up to one trigger poll interval, 0.25 s).",
        "",
        "| phase | median (s) | windows (s) |",
        "|---|---|---|",
        rows_md,
        "",
        f"Target: under 60 s so that a one-minute schedule is possible: **{med['total']:.1f} s** median.",
        "",
    ])


def bench_freshness(layout: StackLayout, since: datetime, settle: timedelta) -> str:
    os.environ.update(services.aws_env(layout))
    s3 = boto3.client("s3", endpoint_url=services.moto_endpoint(layout))
    cfg = config.load(config.DEFAULT_CONFIG)
    latencies: list[float] = []
    per_pipeline: dict[str, int] = {}
    horizon = datetime.now(UTC) - settle
    missing = checked = 0
    for pipeline in cfg.pipelines:
        first_seen: dict[tuple[Any, Any], datetime] = {}
        for manifest in lake.manifests(s3, pipeline.target):
            committed = datetime.fromisoformat(manifest["committed_at"])
            table = lake.window_table(s3, manifest)
            if table is None:
                continue
            pk, cursor = manifest["primary_key"], manifest["cursor"]
            for row in table.select([*pk, cursor]).to_pylist():
                ts = row[cursor]
                ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
                if ts < since or ts > horizon:
                    continue
                key = (tuple(row[c] for c in pk), ts)
                if key not in first_seen or committed < first_seen[key]:
                    first_seen[key] = committed
        per_pipeline[pipeline.name] = len(first_seen)
        latencies.extend((c - ts).total_seconds() for (_, ts), c in first_seen.items())
        # every row's current version written in the period must be in the lake
        conn = mysql_conn(layout)
        pk_sql = ", ".join(f"`{c}`" for c in pipeline.primary_key)
        with conn.cursor() as cur:
            cur.execute(f"SELECT {pk_sql}, `{pipeline.cursor}` FROM `{pipeline.database}`.`{pipeline.table}` "
                        f"WHERE `{pipeline.cursor}` >= %s AND `{pipeline.cursor}` <= %s",
                        (since.replace(tzinfo=None), horizon.replace(tzinfo=None)))
            current = [(tuple(row[:-1]), row[-1].replace(tzinfo=UTC)) for row in cur.fetchall()]
        conn.close()
        missing += sum(1 for key in current if key not in first_seen)
        checked += len(current)
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    hours = (horizon - since).total_seconds() / 3600
    return "\n".join([
        "## Freshness of the demo pipelines (five-minute schedule)",
        "",
        f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py freshness --since "
        f"{since.isoformat()} --settle-minutes {int(settle.total_seconds() // 60)}` after running `make up` and leaving the demo workload on for {hours:.1f} h "
        f"({datetime.now(UTC):%Y-%m-%d}).",
        "",
        "Seconds from a row version's commit in MariaDB (its `updated_at`, set by the server) to the commit "
        "of the first window manifest holding it; every version written by the workload in the period, "
        f"across {', '.join(f'{k} ({v:,})' for k, v in per_pipeline.items())}.",
        "",
        "| versions | p50 (s) | p95 (s) | max (s) | rows' current versions checked | of those missing from the lake |",
        "|---|---|---|---|---|---|",
        f"| {len(latencies):,} | {p50:.0f} | {p95:.0f} | {latencies[-1]:.0f} | {checked:,} | {missing} |",
        "",
        "At a five-minute schedule a change waits on average half an interval for its window to close, "
        "plus the run's own time (scheduling, batch, commit). During the hour the machine also ran the "
        "test suite, a backfill of six windows and other benchmarks, which lengthened the runs.",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    full = sub.add_parser("full")
    full.add_argument("--rows", type=int, default=2_000_000)
    full.add_argument("--repetitions", type=int, default=3)
    window = sub.add_parser("window")
    window.add_argument("--rows", type=int, default=20_000)
    window.add_argument("--repetitions", type=int, default=5)
    fresh = sub.add_parser("freshness")
    fresh.add_argument("--since", required=True, type=datetime.fromisoformat)
    fresh.add_argument("--settle-minutes", type=int, default=12)
    for p in (full, window, fresh):
        p.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    layout = StackLayout.default()
    if args.what == "full":
        text = bench_full(layout, args.rows, args.repetitions)
    elif args.what == "window":
        text = bench_window(layout, args.rows, args.repetitions)
    else:
        text = bench_freshness(layout, args.since, timedelta(minutes=args.settle_minutes))
    print(text)
    if not args.print_only:
        out = OUT_DIR / f"extraction-{args.what}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text[1:])  # the section heading "## ..." becomes the page title "# ..."
    return 0


if __name__ == "__main__":
    sys.exit(main())
