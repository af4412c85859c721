"""Benchmark: what the published dependency path costs a batch.

Every batch now names the jobs' jars and their Python package archive (``spark.archives``) instead
of finding them on the cluster. This measures, as whole ``spark-submit`` processes (``local[2]``,
as the local Livy runs them), a small driver script that imports boto3 and psycopg2 and loads the
MySQL driver class:

- *published*: the clusters' bare Python, the published jars in ``--jars`` and the archive in
  ``spark.archives`` (unpacked by Spark on the driver, put on ``sys.path`` by spark_jobs/common/runtime.py);
- *preinstalled*: the project's virtualenv (which has the packages) and the same jars from the
  local folder they were resolved to, no archive: what a cluster with everything preinstalled does.

The two alternate, after one warm-up each; medians and their ratio are reported, with the
archive's size and its build time (cold: a fresh ``pip install --target``; warm: reused).

Needs no service: the jars and the archive come from ``python -m spotlake.job_dependencies
publish`` (``make up`` or the integration tests run it), read from the local artifacts root.

    PYTHONPATH=plugins:. .venv/bin/python bench/dependencies_bench.py --repetitions 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spotlake import artifacts, job_dependencies, maven
from spotlake.stack import StackLayout
from spotlake_dev.localstack import livy_server

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "job-dependencies.md"
PROBE = """
import os, sys, time
from pyspark.sql import SparkSession
started = time.monotonic()
spark = SparkSession.builder.appName("deps-bench").getOrCreate()
sys.path.insert(0, os.path.join(__import__("pyspark").SparkFiles.getRootDirectory(), "pydeps"))
import boto3, psycopg2  # noqa: E401
spark._jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass("com.mysql.cj.jdbc.Driver")
print("READY", boto3.__version__, psycopg2.__version__, round(time.monotonic() - started, 3))
spark.stop()
"""


def submit(layout: StackLayout, script: Path, python: str, jars: list[str], conf: dict[str, str]) -> float:
    platform_jars = ":".join(str(p) for p in maven.jar_files(layout, "spark"))
    argv = [
        str(layout.spark_home / "bin" / "spark-submit"),
        "--master",
        "local[2]",
        "--driver-memory",
        "768m",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        f"spark.driver.extraClassPath={platform_jars}",
        "--jars",
        ",".join(jars),
    ]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    argv.append(str(script))
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    if done.returncode != 0 or "READY" not in done.stdout:
        errors = [ln for ln in (done.stdout + done.stderr).splitlines() if " INFO " not in ln]
        raise SystemExit(f"spark-submit failed ({done.returncode}) with {python}:\n" + "\n".join(errors[-30:]))
    return wall


def build_times() -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        archive = job_dependencies.build_python_archive(Path(tmp))
        cold = time.monotonic() - started
        started = time.monotonic()
        job_dependencies.build_python_archive(Path(tmp))
        warm = time.monotonic() - started
        return cold, warm, archive.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--print-only", action="store_true", help=f"print; do not write {OUT.relative_to(ROOT)}")
    args = parser.parse_args()
    layout = StackLayout.default()
    manifest = job_dependencies.load(artifacts.artifacts_root())
    local_jars = [str(p) for p in maven.jar_files(layout, "jobs")]
    cold, warm, size = build_times()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text(PROBE)
        runs: dict[str, list[float]] = {"published": [], "preinstalled": []}
        variants = {
            "published": (livy_server.spark_python(layout), manifest.jars, manifest.spark_conf()),
            "preinstalled": (layout.python, local_jars, {}),
        }
        for python, jars, conf in variants.values():  # one warm-up each (page cache)
            submit(layout, script, python, jars, conf)
        for i in range(args.repetitions):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                python, jars, conf = variants[name]
                runs[name].append(submit(layout, script, python, jars, conf))
                print(f"{name}: {runs[name][-1]:.2f} s", file=sys.stderr)
    med = {name: statistics.median(values) for name, values in runs.items()}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# What the published dependency path costs a batch",
        "",
        f"Measured {now} on {platform.machine()}, Python {platform.python_version()}, PySpark 3.5.7 "
        "(`local[2]`, 768 MiB driver), no services; a shared 2-core machine.",
        "",
        f"Reproduce: `PYTHONPATH=plugins:. .venv/bin/python bench/dependencies_bench.py --repetitions {args.repetitions}`",
        "",
        "A whole `spark-submit` of a driver that starts a session, imports boto3 and psycopg2 and loads "
        "the MySQL driver class. *published*: the clusters' bare Python, the published jars and the Python "
        "archive in `spark.archives` (unpacked on the driver); *preinstalled*: the project's virtualenv and "
        "the same jars from their local folder, no archive. Alternating, after one warm-up each.",
        "",
        "| variant | median (s) | runs (s) |",
        "|---|---:|---|",
        *[f"| {name} | {med[name]:.2f} | {', '.join(f'{v:.2f}' for v in runs[name])} |" for name in runs],
        "",
        f"- published / preinstalled: {med['published'] / med['preinstalled']:.2f} "
        f"({med['published'] - med['preinstalled']:+.2f} s a batch).",
        f"- the Python archive: {size / 2**20:.1f} MiB ({Path(manifest.python_archive).name}); built in "
        f"{cold:.1f} s cold (pip from its cache), {warm:.3f} s when its inputs did not change (reused).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.print_only:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
