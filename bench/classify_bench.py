"""What one micro-batch of each click-stream query costs in Spark before its sink: validation
(``classify_events``), then the aggregates query's one aggregation (``batch_summary``,
collected), the lake query's valid events, the dead-letters query's dead letters.

    PYTHONPATH=plugins:. .venv/bin/python bench/classify_bench.py --events 50000 --against aa9007d

The records are the generator's (seeded; 2% late, 0.5% malformed), as Kafka-shaped rows
(key, value bytes, coordinates), cached in a local[2] session, so neither Kafka nor the
sink is measured. Each repetition builds the DataFrame anew, as each micro-batch does.
With ``--against REV`` the ``spark_jobs/clickstream/events.py`` of git revision REV runs in the
same process, alternating with the working tree's (which goes first alternates too): the
figure of a change, on the same data and the same JVM; before timing, both must classify
every record the same way (reason, detail and typed fields), or the benchmark stops.
Needs no service. Results go to docs/benchmarks/classify.md unless --print-only.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pyspark.sql.functions as F
from pyspark.sql import SparkSession
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.clickstream import events as click_events
from spotlake_dev.clickgen.behaviour import ClickStream, StreamConfig
from spotlake_dev.clickgen.rate import ConstantRate

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "docs" / "benchmarks" / "classify.md"
COMMAND = "PYTHONPATH=plugins:. .venv/bin/python bench/classify_bench.py"
RECORDS = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp_ms", LongType()),
    ]
)
WINDOW_S = 60
WARM_UP = 2  # runs of each not counted: the JIT is still compiling


def module_at(revision: str) -> ModuleType:
    """``spark_jobs/clickstream/events.py`` as it is at git ``revision``, imported under another name."""
    try:
        source = (
            subprocess.run(
                ["git", "show", f"{revision}:spark_jobs/clickstream/events.py"], cwd=ROOT, capture_output=True, text=True
            ).stdout
            or subprocess.run(
                ["git", "show", f"{revision}:spark_jobs/click_events.py"],
                cwd=ROOT,  # before the jobs were packages
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"cannot read spark_jobs/clickstream/events.py at {revision!r}: {exc.stderr.strip()}; "
            "fix: pass a commit of this repository to --against"
        ) from None
    path = Path(tempfile.mkdtemp()) / "click_events_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("click_events_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records(spark: SparkSession, events: int, partitions: int = 3):
    config = StreamConfig(
        seed=7, start_ms=1_714_521_600_000, users=5000, late_fraction=0.02, late_max_seconds=60, malformed_fraction=0.005
    )
    rows = [
        (key, value.encode(), "clicks", n % partitions, n // partitions, config.start_ms + int(slot * 1000))
        for n, (key, value, slot, _flags) in enumerate(ClickStream(config, ConstantRate(1000.0)).records(events))
    ]
    return (
        spark.createDataFrame(rows, RECORDS)
        .select(
            "key",
            "value",
            "topic",
            "partition",
            "offset",
            F.timestamp_millis("timestamp_ms").alias("timestamp"),
        )
        .repartition(partitions)
        .cache()
    )


# What each query of the job does with a micro-batch before its sink.
QUERIES = {
    "aggregates": lambda m, c: m.batch_summary(c, WINDOW_S, None, "divert", None).collect(),
    "lake": lambda m, c: c.transform(m.valid_events).agg(F.count(F.lit(1))).collect(),
    "dead letters": lambda m, c: c.transform(m.dead_letters).agg(F.count(F.lit(1))).collect(),
}


def one_batch(module: ModuleType, df, query: str) -> float:
    started = time.perf_counter()
    QUERIES[query](module, df.transform(module.kafka_records).transform(module.classify_events))
    return time.perf_counter() - started


def classified(module: ModuleType, df) -> list:
    columns = ["partition", "offset", "reason", "detail", *module.EVENT_COLUMNS]
    out = (
        df.transform(module.kafka_records)
        .withColumnRenamed("kafka_partition", "partition")
        .withColumnRenamed("kafka_offset", "offset")
        .transform(module.classify_events)
        .select(*columns)
    )
    return sorted(tuple(row) for row in out.collect())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="records in the micro-batch (default 50,000)")
    parser.add_argument(
        "--repetitions",
        type=int,
        default=9,
        help=f"runs of each (default 9; the first {WARM_UP} of each are warm-ups and not counted)",
    )
    parser.add_argument("--against", metavar="REV", help="also run click_events.py of this git revision")
    parser.add_argument("--print-only", action="store_true", help="print; do not write docs/benchmarks/classify.md")
    args = parser.parse_args(argv)
    if args.repetitions <= WARM_UP:
        parser.error(f"--repetitions must be more than {WARM_UP} (the first {WARM_UP} runs of each are warm-ups)")

    candidates = {"working tree": click_events}
    if args.against:
        candidates[args.against] = module_at(args.against)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("spotlake-classify-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    df = records(spark, args.events)
    df.count()
    if args.against and classified(click_events, df) != classified(candidates[args.against], df):
        raise SystemExit(
            f"the working tree and {args.against} classify these records differently: "
            "not the same function, so no speed comparison"
        )
    seconds: dict[tuple[str, str], list[float]] = {(q, name): [] for q in QUERIES for name in candidates}
    order = list(candidates.items())
    for _ in range(args.repetitions):
        for query in QUERIES:
            for name, module in order:  # alternating, so load changes hit both alike
                seconds[(query, name)].append(one_batch(module, df, query))
        order.reverse()
    spark.stop()

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"{COMMAND} --events {args.events} --repetitions {args.repetitions}" + (
        f" --against {args.against}" if args.against else ""
    )
    lines = [
        "# Validation and what each query does with a micro-batch",
        "",
        f"Measured {now} on {platform.machine()}, Python {platform.python_version()}, PySpark "
        f"{spark.version} (`local[2]`, 1 GiB driver), no services.",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{args.events:,} generated records (0.5% malformed), cached; per run: `classify_events`, then what "
        "the query does before its sink: aggregates, `batch_summary` collected to the driver; lake, "
        "`valid_events` and its partitions, counted; dead letters, `dead_letters`, counted. A new "
        "DataFrame each run, as in a micro-batch. "
        f"The first {WARM_UP} runs of each are warm-ups; the order alternates."
        + (" Both classify every record the same way (checked first)." if args.against else ""),
        "",
        "| query | code | median (s) | events/s | runs (s) |",
        "|---|---|---:|---:|---|",
    ]
    medians = {}
    for (query, name), runs in seconds.items():
        medians[(query, name)] = statistics.median(runs[WARM_UP:])
        lines.append(
            f"| {query} | {name} | {medians[(query, name)]:.2f} | {args.events / medians[(query, name)]:,.0f} "
            f"| {', '.join(f'{s:.2f}' for s in runs)} |"
        )
    if args.against:
        lines.append("")
        for query in QUERIES:
            now_s, then_s = medians[(query, "working tree")], medians[(query, args.against)]
            lines.append(
                f"- {query}: the working tree takes {now_s / then_s:.2f} of {args.against}'s time "
                f"({then_s / now_s:.2f}x as fast)."
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.print_only:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
