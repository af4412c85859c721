"""Entry script of the window extraction, run as a Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/extract.py --job <base64url(JSON)>
    spark-submit --py-files spark_jobs.zip spark_jobs/extract.py --job-file job.json

On success it prints one line ``SPOTLAKE_RESULT: <json>`` (what it committed) on stdout
and exits 0.
On failure it prints one line ``SPOTLAKE_ERROR: <message>`` on stderr (the
operator shows it from the Livy log) and exits 2 for a configuration or source
problem (:class:`~spark_jobs.errors.SpotlakeJobError`), 1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from spark_jobs.errors import ExtractionError, SpotlakeJobError
from spark_jobs.extraction import run_extraction
from spark_jobs.job_config import ExtractJob
from spark_jobs.lake_catalog import ICEBERG_EXTENSIONS

ERROR_MARK = "SPOTLAKE_ERROR: "
RESULT_MARK = "SPOTLAKE_RESULT: "
USAGE = "extract.py --job <base64url(JSON)> | --job-file <path>"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ExtractionError(f"job: {message} — usage: {USAGE}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Arguments(prog="extract.py", description="Extract one window of one MySQL table into the lake.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="the job document as base64url-encoded JSON")
    source.add_argument("--job-file", help="path of a file holding the job document as JSON")
    return parser.parse_args(argv)


def load_job(args: argparse.Namespace) -> ExtractJob:
    if args.job is not None:
        return ExtractJob.from_base64url(args.job)
    try:
        with open(args.job_file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ExtractionError(f"job: cannot read --job-file {args.job_file}: {exc.strerror}") from None
    return ExtractJob.from_json(text)


def build_session(job: ExtractJob) -> SparkSession:
    return (
        SparkSession.builder.appName(f"spotlake-extract-{job.pipeline}")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .getOrCreate()
    )


def describe_failure(exc: BaseException) -> str:
    """One line about an unexpected failure: the error and, for a JVM error, its root cause."""
    if isinstance(exc, Py4JJavaError):
        java = exc.java_exception
        root = java
        while root.getCause() is not None and root.getCause() is not root:
            root = root.getCause()
        text = f"{java.getClass().getName()}: {java.getMessage()}"
        if root is not java:
            text += f" (root cause {root.getClass().getName()}: {root.getMessage()})"
        return text
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def log_to_stderr() -> None:
    """The jobs' own log lines (phase timings) on stderr; other libraries stay at their defaults."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("spark_jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    job: ExtractJob | None = None
    existing = SparkSession.getActiveSession()
    spark: SparkSession | None = None
    try:
        job = load_job(parse_args(argv))
        spark = existing or build_session(job)
        result = run_extraction(spark, job)
    except SpotlakeJobError as exc:
        print(ERROR_MARK + one_line(str(exc)), file=sys.stderr, flush=True)
        return 2
    except Exception as exc:
        where = job.context if job is not None else "job"
        message = f"{where}: extraction failed: {describe_failure(exc)}"
        print(ERROR_MARK + one_line(message), file=sys.stderr, flush=True)
        raise
    finally:
        if spark is not None and existing is None:
            spark.stop()
    print(RESULT_MARK + json.dumps(result, separators=(",", ":"), default=str), flush=True)
    return 0


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
