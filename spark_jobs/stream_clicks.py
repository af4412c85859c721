"""Entry script of the click stream, run as a Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/stream_clicks.py --job <base64url(JSON)>
    spark-submit --py-files spark_jobs.zip spark_jobs/stream_clicks.py --job-file job.json

It runs until stopped (or, with ``trigger.available_now``, until it has read what
Kafka held at its start). It then prints ``SPOTLAKE_STREAM: <json summary>`` and
exits 0. On failure it prints one line ``SPOTLAKE_ERROR: <message>`` on stderr
(the supervisor shows it from the Livy log) and exits 2 for a configuration or
sink problem (:class:`~spark_jobs.errors.SpotlakeJobError`), 1 for anything else.
The job's ``psycopg2`` and ``boto3`` come with the batch (``spark.archives``, spark_jobs/runtime.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from pyspark.sql import SparkSession

from spark_jobs.clickstream import describe, run_stream
from spark_jobs.contract import ERROR_MARK
from spark_jobs.errors import SpotlakeJobError, StreamingError
from spark_jobs.extract import describe_failure, log_to_stderr, one_line
from spark_jobs.runtime import use_job_packages
from spark_jobs.stream_job import StreamJob

SUMMARY_MARK = "SPOTLAKE_STREAM: "
USAGE = "stream_clicks.py --job <base64url(JSON)> | --job-file <path>"


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise StreamingError(f"job: {message} — usage: {USAGE}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Arguments(prog="stream_clicks.py", description="Run the click stream into PostgreSQL and the lake.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="the job document as base64url-encoded JSON")
    source.add_argument("--job-file", help="path of a file holding the job document as JSON")
    return parser.parse_args(argv)


def load_job(args: argparse.Namespace) -> StreamJob:
    if args.job is not None:
        return StreamJob.from_base64url(args.job)
    try:
        with open(args.job_file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise StreamingError(f"job: cannot read --job-file {args.job_file}: {exc.strerror}") from None
    return StreamJob.from_json(text)


def build_session(job: StreamJob) -> SparkSession:
    return (
        SparkSession.builder.appName(f"spotlake-stream-{job.stream}")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def main(argv: Sequence[str] | None = None) -> int:
    job: StreamJob | None = None
    existing = SparkSession.getActiveSession()
    spark: SparkSession | None = None
    try:
        job = load_job(parse_args(argv))
        spark = existing or build_session(job)
        use_job_packages()
        run = run_stream(spark, job)
    except SpotlakeJobError as exc:
        print(ERROR_MARK + one_line(str(exc)), file=sys.stderr, flush=True)
        return 2
    except Exception as exc:
        where = job.context if job is not None else "job"
        print(ERROR_MARK + one_line(f"{where}: stream failed: {describe_failure(exc)}"), file=sys.stderr,
              flush=True)
        raise
    finally:
        if spark is not None and existing is None:
            spark.stop()
    print(SUMMARY_MARK + json.dumps(describe(run), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
