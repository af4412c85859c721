"""Extraction benchmarks on the local stack (MariaDB, PostgreSQL catalog, local S3, Spark on this machine).

    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py window      # 20,000-row windows, before/after
    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py initial     # 2,000,000-row initial load
    PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py compaction  # files after 100 windows

window:     one five-minute window of 20,000 changed rows, the extraction job as a whole
            ``spark-submit`` process (local[2]), split into the job's phases: the Iceberg lake
            of this revision against the manifest lake of revision BEFORE (its ``spark_jobs``
            taken from git), alternating, in one run; medians of --repetitions.
initial:    the initial snapshot of a 2,000,000-row, 10-column table (primary-key chunks,
            committed to both Iceberg tables) as a whole ``spark-submit`` process, with the
            driver's peak resident memory, against connectorx into pyarrow Parquet (whole
            process) as the limit; alternating, medians.
compaction: 100 windows of 50 changed rows each into one pipeline (in one Spark session),
            then the lake's maintenance: data and delete files of both tables before and
            after, and the maintenance's own time.

Needs the stack (`make up`, or the services the tests start). Results go to
docs/benchmarks/extraction-<what>.md unless --print-only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pymysql

from spotlake import artifacts, job_dependencies, maven, stack
from spotlake.stack import StackLayout

ROOT = Path(__file__).resolve().parents[1]

OUT_DIR = ROOT / "docs" / "benchmarks"
BEFORE = "1b96bbe"  # the last revision with the manifest lake (Parquet per attempt + JSON manifest per window)
CATALOG_SECRET = "spotlake/postgres/lake-catalog"


def mysql_conn(layout: StackLayout) -> pymysql.Connection:
    m = stack.mysql_settings(layout)
    return pymysql.connect(
        host=m["host"], port=int(m["port"]), user=m["user"], password=m["password"], database=m["database"], autocommit=True
    )


def prepare(layout: StackLayout) -> None:
    """The process's AWS environment on the local stack, and the lake catalog's secret."""
    os.environ.update(stack.aws_env(layout))
    from spotlake_dev import demo

    demo.aws_resources(layout)


def ensure_full_table(layout: StackLayout, rows: int) -> str:
    table = f"bench_full_{rows}"
    conn = mysql_conn(layout)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,)
        )
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


def spark_submit(layout: StackLayout, entry: str, py_files: str, job_file: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """A ``spark-submit`` as the local Livy runs a batch: the published jars and Python archive,
    s3a on the extra class path (the project's Python, so that older revisions compared with
    ``--before`` run too)."""
    deps = job_dependencies.load(artifacts.artifacts_root())
    platform = ":".join(str(p) for p in maven.jar_files(layout, "spark"))
    python = layout.python
    argv = [
        str(layout.spark_home / "bin" / "spark-submit"),
        "--master",
        "local[2]",
        "--driver-memory",
        "1g",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.sql.extensions=org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "--conf",
        f"spark.hadoop.fs.s3a.endpoint={stack.s3_endpoint(layout)}",
        "--conf",
        "spark.hadoop.fs.s3a.path.style.access=true",
        "--conf",
        "spark.hadoop.fs.s3a.aws.credentials.provider=org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "--conf",
        "spark.hadoop.fs.s3a.access.key=testing",
        "--conf",
        "spark.hadoop.fs.s3a.secret.key=testing",
        "--conf",
        f"spark.driver.extraClassPath={platform}",
        "--conf",
        f"spark.executor.extraClassPath={platform}",
        *[arg for key, value in deps.spark_conf().items() for arg in ("--conf", f"{key}={value}")],
        "--jars",
        ",".join(deps.jars),
        "--py-files",
        py_files,
        entry,
        "--job-file",
        str(job_file),
    ]
    env = {
        **os.environ,
        **stack.aws_env(layout),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "SPARK_HOME": str(layout.spark_home),
    }
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, argv


def run_job(
    layout: StackLayout, entry: str, py_files: str, job: dict[str, Any], tmp: Path
) -> tuple[dict[str, Any], float, float]:
    """Run a job document through spark-submit: its result line, wall seconds, peak RSS (MiB) of the
    driver (the JVM and its Python process; local mode runs the executors in that JVM)."""
    job_file = tmp / f"job-{time.monotonic_ns()}.json"
    job_file.write_text(json.dumps(job))
    peak = [0.0]
    started = time.monotonic()
    proc, _ = spark_submit(layout, entry, py_files, job_file)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                root = psutil.Process(proc.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak[0] = max(peak[0], rss / 2**20)
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - started
    stop.set()
    if proc.returncode != 0:
        raise RuntimeError(out[-3000:] + err[-3000:])
    line = next(ln for ln in out.splitlines() if ln.startswith(("SPOTLAKE_RESULT: ", "SPOTLAKE_MANIFEST: ")))
    return json.loads(line.split(": ", 1)[1]), wall, peak[0]


def old_jobs(tmp: Path) -> tuple[str, str]:
    """The entry script and package zip of revision BEFORE (from git), for the before/after run."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "spark_jobs"], capture_output=True, check=True).stdout
    folder = tmp / "before"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    zipped = tmp / "before_spark_jobs.zip"
    with zipfile.ZipFile(zipped, "w") as package:
        for path in sorted((folder / "spark_jobs").rglob("*.py")):
            package.write(path, str(path.relative_to(folder)))
    return str(folder / "spark_jobs" / "extract.py"), str(zipped)


def median_table(rows: dict[str, list[float]]) -> str:
    lines = ["| phase | median (s) | runs (s) |", "|---|---|---|"]
    for name, values in rows.items():
        lines.append(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- window
def bench_window(layout: StackLayout, rows: int, repetitions: int) -> str:
    from spark_jobs.common.lake_state import WindowRecord, iso
    from tests.support.job_harness import Lake

    prepare(layout)
    tmp = Path(tempfile.mkdtemp(prefix="bench-window-"))
    before_entry, before_zip = old_jobs(tmp)
    published = artifacts.publish("extraction")
    pipe = Lake(stack.mysql_settings(layout), CATALOG_SECRET, tmp)
    conn = mysql_conn(layout)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    with conn.cursor() as cur:
        cur.execute(f"""CREATE TABLE {pipe.table} (
            id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, status VARCHAR(16) NOT NULL,
            amount DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, deleted_at DATETIME(3) NULL,
            KEY ix_updated (updated_at))""")
        for w in range(repetitions + 1):  # window 0 warms both up
            cur.execute(
                f"INSERT INTO {pipe.table} SELECT {w} * {rows} + seq, CONCAT('customer-', seq %% 997), 'placed', "
                f"(seq %% 10000) / 4, TIMESTAMPADD(MICROSECOND, (seq %% 299000) * 1000, %s), NULL "
                f"FROM seq_1_to_{rows}",
                ((base + timedelta(minutes=5 * w)).replace(tzinfo=None),),
            )
    conn.close()
    # The Iceberg pipeline starts at `base` with no initial load: every window is incremental.
    pipe.store.ensure(pipe.pipeline, False, base)
    after: dict[str, list[float]] = {
        k: [] for k in ("read", "commit", "of which changes MERGE", "of which current MERGE", "other", "job", "process")
    }
    before: dict[str, list[float]] = {k: [] for k in ("read", "write", "commit", "other", "job", "process")}
    for w in range(repetitions + 1):
        start = base + timedelta(minutes=5 * w)
        window = {"start": iso(start), "end": iso(start + timedelta(minutes=5)), "read_from": iso(start)}
        label = start.strftime("%Y%m%dT%H%M%SZ")
        # after: this revision's job, as the operator plans and claims it
        pipe.store.plan_window(
            WindowRecord(
                pipeline=pipe.pipeline,
                window=label,
                job_key=f"{pipe.pipeline}#{label}",
                start=window["start"],
                end=window["end"],
                read_from=window["read_from"],
                planned_at=iso(datetime.now(UTC)),
            )
        )
        run_id, attempt = pipe.claim(f"{pipe.pipeline}#{label}")
        doc = pipe.document(f"{pipe.pipeline}#{label}", run_id, attempt, window=window, transforms=[], primary_key=["id"])
        result, wall, _ = run_job(layout, published.entry, published.py_files[0], doc, tmp)
        assert result["rows_written"] == rows, result
        t = result["timings"]
        commit = sum(t.get(k, 0.0) for k in ("lock_s", "schema_s", "changes_s", "current_s", "record_s"))
        read = t.get("read_s", 0.0)
        job_s = sum(t.values())
        sample_after = {
            "read": read,
            "commit": commit,
            "of which changes MERGE": t.get("changes_s", 0.0),
            "of which current MERGE": t.get("current_s", 0.0),
            "other": job_s - read - commit,
            "job": job_s,
            "process": wall,
        }
        # before: revision BEFORE's job on the same window, into its manifest lake on the same S3
        old_doc = {
            "job_key": f"bench_before#{label}",
            "attempt": 1,
            "run_id": run_id,
            "pipeline": "bench_before",
            "source": {"secret_id": pipe.secret_id},
            "database": pipe.mysql["database"],
            "table": pipe.table,
            "primary_key": ["id"],
            "cursor": "updated_at",
            "soft_delete": "deleted_at",
            "window": window,
            "transforms": [],
            "output": {"root": f"s3a://{pipe.bucket}/before"},
            "read": {"fetch_size": 10000, "partition_rows": 250000, "max_partitions": 2},
        }
        old, old_wall, _ = run_job(layout, before_entry, before_zip, old_doc, tmp)
        assert old["rows_written"] == rows, old
        ot = old["timings"]
        old_commit = ot.get("commit_s", 0.0) + float(old.get("after_commit", {}).get("manifest_write_s", 0.0))
        old_read = ot.get("read_s", 0.0)
        old_write = ot.get("transform_s", 0.0) + ot.get("write_s", 0.0)
        old_job = sum(ot.values()) + float(old.get("after_commit", {}).get("manifest_write_s", 0.0))
        sample_before = {
            "read": old_read,
            "write": old_write,
            "commit": old_commit,
            "other": old_job - old_read - old_write - old_commit,
            "job": old_job,
            "process": old_wall,
        }
        print(
            f"window {w}: after {json.dumps({k: round(v, 2) for k, v in sample_after.items()})}; "
            f"before {json.dumps({k: round(v, 2) for k, v in sample_before.items()})}",
            flush=True,
        )
        if w == 0:
            continue
        for key, value in sample_after.items():
            after[key].append(value)
        for key, value in sample_before.items():
            before[key].append(value)
    ratio = statistics.median(after["process"]) / statistics.median(before["process"])
    return "\n".join(
        [
            f"## One window of {rows:,} changed rows: the Iceberg lake against the manifest lake",
            "",
            f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py window --rows {rows} "
            f"--repetitions {repetitions}` ({datetime.now(UTC):%Y-%m-%d}, one run; each window run by both jobs in turn, "
            f"as whole `spark-submit` processes, local[2], against the same MariaDB table and local S3; "
            f"the manifest lake is revision `{BEFORE}`'s `spark_jobs`).",
            "",
            "### After: this revision (Iceberg changes + current-state tables, commit lock in DynamoDB)",
            "",
            "*read* = count, JDBC fetch, transforms and caching of the window's rows; *commit* = waiting for the commit "
            "lock, schema check, `MERGE INTO` the changes table, `MERGE INTO` the current-state table and the "
            "registry transaction that records the window and frees the lock; *other* = secret, catalog setup, "
            "source checks; *process* = the whole `spark-submit` (JVM, SparkContext, Python).",
            "",
            median_table(after),
            "",
            "### Before: the manifest lake (Parquet per attempt, JSON manifest per window)",
            "",
            "*read* = secret, source checks and the window count; *write* = JDBC fetch, transforms and the Parquet "
            "write (one Spark pipeline); *commit* = listing the files and writing the manifest.",
            "",
            median_table(before),
            "",
            f"Whole process, after / before: **{ratio:.2f}x**. The commit went from a single small PUT to two "
            "`MERGE INTO` statements (each a Spark job and an Iceberg commit) plus a DynamoDB transaction; what "
            "that buys is in docs/architecture.md.",
            "",
        ]
    )


# --------------------------------------------------------------------------- initial load
def snapshot_run(
    layout: StackLayout, table: str, chunk_rows: int, tmp: Path, published: artifacts.JobArtifacts
) -> tuple[dict[str, Any], float, float]:
    """One initial snapshot of ``table`` into a pipeline of its own: result, wall s, peak RSS MiB."""
    from spark_jobs.common.lake_state import snapshot_job_key
    from tests.support.job_harness import Lake

    pipe = Lake(stack.mysql_settings(layout), CATALOG_SECRET, tmp)
    pipe.store.ensure(pipe.pipeline, True, datetime.now(UTC))
    key = snapshot_job_key(pipe.pipeline)
    run_id, attempt = pipe.claim(key)
    doc = pipe.document(
        key,
        run_id,
        attempt,
        table=table,
        transforms=[],
        read={"fetch_size": 10000, "partition_rows": 250000, "max_partitions": 2, "chunk_rows": chunk_rows},
    )
    return run_job(layout, published.entry, published.py_files[0], doc, tmp)


def bench_initial(layout: StackLayout, rows: int, repetitions: int, chunk_rows: int, small_rows: int) -> str:
    prepare(layout)
    table = ensure_full_table(layout, rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-initial-"))
    published = artifacts.publish("extraction")
    m = stack.mysql_settings(layout)
    cx_script = (
        "import connectorx as cx, pyarrow.parquet as pq, sys\n"
        "t = cx.read_sql(sys.argv[1], sys.argv[2], return_type='arrow', partition_on='id', partition_num=2)\n"
        "pq.write_table(t, sys.argv[3])\n"
        "print(t.num_rows)\n"
    )
    url = f"mysql://{m['user']}:{m['password']}@{m['host']}:{m['port']}/{m['database']}"
    spark_s, peaks, cx_s, chunk_counts = [], [], [], []
    for rep in range(repetitions):
        result, wall, peak = snapshot_run(layout, table, chunk_rows, tmp, published)
        assert result["rows"] == rows, result
        spark_s.append(wall)
        peaks.append(peak)
        chunk_counts.append(result["chunks"])
        started = time.monotonic()
        out = subprocess.run(
            [layout.python, "-c", cx_script, url, f"SELECT * FROM {table}", str(tmp / f"cx{rep}.parquet")],
            capture_output=True,
            text=True,
            check=True,
        )
        cx_s.append(time.monotonic() - started)
        assert int(out.stdout.strip()) == rows
        print(
            f"rep {rep + 1}: snapshot {wall:.1f} s ({result['chunks']} chunks, peak RSS {peak:.0f} MiB), "
            f"connectorx {cx_s[-1]:.1f} s",
            flush=True,
        )
    # the same chunk size on a table a quarter of the size: what the driver's memory follows
    small_table = ensure_full_table(layout, small_rows)
    small_result, small_wall, small_peak = snapshot_run(layout, small_table, chunk_rows, tmp, published)
    assert small_result["rows"] == small_rows, small_result
    print(f"{small_rows:,} rows: snapshot {small_wall:.1f} s, peak RSS {small_peak:.0f} MiB", flush=True)
    sp, cx = statistics.median(spark_s), statistics.median(cx_s)
    return "\n".join(
        [
            f"## Initial load of {rows:,} rows, 10 columns",
            "",
            f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py initial --rows {rows} "
            f"--repetitions {repetitions} --chunk-rows {chunk_rows} --small-rows {small_rows}` "
            f"({datetime.now(UTC):%Y-%m-%d}, one run, alternating, whole processes).",
            "",
            "| reader | median wall (s) | rows/s | runs (s) |",
            "|---|---|---|---|",
            f"| spotlake initial snapshot, `spark-submit` local[2], driver memory 1g: {chunk_counts[0]} primary-key chunks "
            f"of up to {chunk_rows:,} rows, each committed to the changes and current-state Iceberg tables and recorded "
            f"in the registry | {sp:.1f} | {rows / sp:,.0f} | {', '.join(f'{x:.1f}' for x in spark_s)} |",
            f"| connectorx 0.4.6 → pyarrow Parquet (2 partitions), the limit | {cx:.1f} | {rows / cx:,.0f} | "
            f"{', '.join(f'{x:.1f}' for x in cx_s)} |",
            "",
            f"The snapshot reaches **{cx / sp:.0%}** of the plain reader's rows/s ({sp / cx:.1f}x its wall time). "
            "Per chunk it reads and caches the rows, then runs two `MERGE INTO` (the changes table, the "
            "current-state table) and a registry transaction; the plain reader writes one file.",
            "",
            "Peak resident memory of the snapshot's driver (the JVM with its local executors, and its Python "
            f"process), sampled every 0.2 s: median **{statistics.median(peaks):.0f} MiB** "
            f"({', '.join(f'{p:.0f}' for p in peaks)}) for {rows:,} rows; **{small_peak:.0f} MiB** for "
            f"{small_rows:,} rows with the same {chunk_rows:,}-row chunks ({small_wall:.1f} s). The heap is capped "
            "at 1 GiB (`--driver-memory 1g`); the chunk, not the table, is what the driver holds at once.",
            "",
        ]
    )


# --------------------------------------------------------------------------- compaction
def bench_compaction(layout: StackLayout, windows: int, rows_per_window: int) -> str:
    from tests.support.job_harness import iceberg_session, naive, next_window, orders_pipeline, seed

    prepare(layout)
    spark = next(iceberg_session(stack.s3_endpoint(layout)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    pipe = orders_pipeline(stack.mysql_settings(layout), CATALOG_SECRET, tmp)
    seed(pipe, 10_000, datetime.now(UTC) - timedelta(days=1))
    pipe.snapshot(spark)
    w = next_window(pipe)
    started = time.monotonic()
    for n in range(windows):
        low = (n * rows_per_window) % 10_000 + 1
        pipe.sql(
            f"UPDATE {pipe.table} SET email = %s, updated_at = %s WHERE id BETWEEN %s AND %s",
            f"w{n}@x.io",
            naive(w + timedelta(minutes=1)),
            low,
            low + rows_per_window - 1,
        )
        pipe.window(spark, w)
        w += timedelta(minutes=5)
    windows_s = time.monotonic() - started

    def files() -> dict[str, tuple[int, int]]:
        counts = {}
        for role, changes in (("current-state", False), ("changes", True)):
            table = pipe.iceberg(changes)
            counts[role] = (len(table.inspect.data_files()), len(table.inspect.delete_files()))
        return counts

    def scan_s() -> float:
        return min(_timed(lambda: pipe.iceberg().scan().to_arrow()) for _ in range(3))

    before, read_before = files(), scan_s()
    started = time.monotonic()
    pipe.maintain(spark)
    maintenance_s = time.monotonic() - started
    after, read_after = files(), scan_s()
    assert pipe.current() == pipe.source()
    table_rows = "\n".join(
        f"| {role} | {before[role][0]} | {before[role][1]} | {after[role][0]} | {after[role][1]} |" for role in before
    )
    return "\n".join(
        [
            f"## Files after {windows} windows, before and after maintenance",
            "",
            f"Command: `PYTHONPATH=plugins:. .venv/bin/python bench/extraction_bench.py compaction --windows {windows} "
            f"--rows {rows_per_window}` ({datetime.now(UTC):%Y-%m-%d}, one run).",
            "",
            f"A 10,000-row table loaded by its initial snapshot, then {windows} windows of {rows_per_window} updated rows "
            f"each, run in one Spark session ({windows_s:.0f} s in all), then one run of the maintenance job "
            "(`spark_jobs.maintenance.run`, default settings: compaction, delete-file rewrite, expiry of snapshots "
            "older than a day, orphan files older than three days).",
            "",
            "| table | data files before | delete files before | data files after | delete files after |",
            "|---|---|---|---|---|",
            table_rows,
            "",
            f"Maintenance took {maintenance_s:.1f} s. A full read of the current-state table through pyiceberg "
            f"(best of 3): {read_before:.2f} s before, {read_after:.2f} s after. The lake equals MySQL afterwards.",
            "",
        ]
    )


def _timed(fn: Callable[[], Any]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    window = sub.add_parser("window")
    window.add_argument("--rows", type=int, default=20_000)
    window.add_argument("--repetitions", type=int, default=5)
    initial = sub.add_parser("initial")
    initial.add_argument("--rows", type=int, default=2_000_000)
    initial.add_argument("--repetitions", type=int, default=3)
    initial.add_argument("--chunk-rows", type=int, default=500_000)
    initial.add_argument(
        "--small-rows",
        type=int,
        default=500_000,
        help="a smaller table loaded with the same chunk size, for the memory comparison",
    )
    compaction = sub.add_parser("compaction")
    compaction.add_argument("--windows", type=int, default=100)
    compaction.add_argument("--rows", type=int, default=50)
    for p in (window, initial, compaction):
        p.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    layout = StackLayout.default()
    if args.what == "window":
        text = bench_window(layout, args.rows, args.repetitions)
    elif args.what == "initial":
        text = bench_initial(layout, args.rows, args.repetitions, args.chunk_rows, args.small_rows)
    else:
        text = bench_compaction(layout, args.windows, args.rows)
    print(text)
    if not args.print_only:
        out = OUT_DIR / f"extraction-{args.what}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text[1:])  # the section heading "## ..." becomes the page title "# ..."
    return 0


if __name__ == "__main__":
    sys.exit(main())
