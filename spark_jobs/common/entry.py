"""Entry script of the window extraction, run as a Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/extraction/main.py --job <base64url(JSON)>
    spark-submit --py-files spark_jobs.zip spark_jobs/extraction/main.py --job-file job.json

On success it prints one line ``SPOTLAKE_RESULT: <json>`` (what it committed) on stdout
and exits 0.
On failure it prints one line ``SPOTLAKE_ERROR: <message>`` on stderr (the
operator shows it from the Livy log) and exits 2 for a configuration or source
problem (:class:`~spark_jobs.common.errors.SpotlakeJobError`), 1 for anything else. A
deterministic data error (:class:`~spark_jobs.common.errors.DataError`) is also printed as
``SPOTLAKE_DATA_ERROR: <message>``: the operator fails the task without retrying it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from spark_jobs.common.contract import DATA_ERROR_MARK, ERROR_MARK, RESULT_MARK
from spark_jobs.common.errors import DataError, ExtractionError, SpotlakeJobError
from spark_jobs.common.lake_catalog import ICEBERG_EXTENSIONS
from spark_jobs.common.report import write_report
from spark_jobs.common.runtime import java_root_cause, use_job_packages

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Arguments(argparse.ArgumentParser):
    refusal: type[SpotlakeJobError] = ExtractionError

    def error(self, message: str) -> NoReturn:
        raise self.refusal(f"job: {message} — usage: {self.prog} --job <base64url(JSON)> | --job-file <path>")


def parse_args(
    argv: Sequence[str] | None, prog: str, description: str, refusal: type[SpotlakeJobError] = ExtractionError
) -> argparse.Namespace:
    parser = _Arguments(prog=prog, description=description)
    parser.refusal = refusal
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="the job document as base64url-encoded JSON")
    source.add_argument("--job-file", help="path of a file holding the job document as JSON")
    parser.add_argument("--report", help="where to write the job's outcome as JSON (s3://... or a path)")
    return parser.parse_args(argv)


def load_job(args: argparse.Namespace, job_type: Any, refusal: type[SpotlakeJobError] = ExtractionError) -> Any:
    if args.job is not None:
        return job_type.from_base64url(args.job)
    try:
        with open(args.job_file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise refusal(f"job: cannot read --job-file {args.job_file}: {exc.strerror}") from None
    return job_type.from_json(text)


def build_session(app_name: str, sql_extensions: bool = True) -> SparkSession:
    builder = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC")
    if sql_extensions:  # Iceberg's SQL (MERGE INTO, CALL); the stream only appends
        builder = builder.config("spark.sql.extensions", ICEBERG_EXTENSIONS)
    return builder.getOrCreate()


def describe_failure(exc: BaseException) -> str:
    """One line about an unexpected failure: the error and, for a JVM error, its root cause."""
    if isinstance(exc, Py4JJavaError):
        java = exc.java_exception
        root = java_root_cause(java)
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


def load_runner(name: str) -> Callable[[SparkSession, Any], dict[str, Any]]:
    """The job function ``module:function``, imported only once the job's Python packages are on
    the path (its module imports boto3)."""
    module, _, function = name.partition(":")
    runner: Callable[[SparkSession, Any], dict[str, Any]] = getattr(importlib.import_module(module), function)
    return runner


def run_main(
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    job_type: Any,
    run: str,
    what: str,
    session: SparkSession | None = None,
    *,
    result_mark: str = RESULT_MARK,
    refusal: type[SpotlakeJobError] = ExtractionError,
    sql_extensions: bool = True,
) -> int:
    """Parse the job, run ``run`` (``module:function``) in ``session`` (a long-lived session's),
    else the active session, else a new one it stops after; print the result line (``result_mark``)
    or one error line; the exit code says which."""
    job: Any = None
    existing = session or SparkSession.getActiveSession()
    spark: SparkSession | None = None
    report: str | None = None

    def region() -> str | None:
        registry = getattr(job, "registry", None)
        return getattr(registry, "region", None)

    def outcome(**fields: Any) -> dict[str, Any]:
        """The report: which attempt (run id) it is of, and what happened."""
        return {"run_id": getattr(job, "run_id", None), **fields}

    try:
        args = parse_args(argv, prog, description, refusal)
        report = args.report
        job = load_job(args, job_type, refusal)
        name = getattr(job, "pipeline", None) or getattr(job, "stream", "")
        spark = existing or build_session(f"spotlake-{what}-{name}", sql_extensions)
        use_job_packages()
        result = load_runner(run)(spark, job)
    except SpotlakeJobError as exc:
        if isinstance(exc, DataError):
            print(DATA_ERROR_MARK + one_line(str(exc)), file=sys.stderr, flush=True)
        print(ERROR_MARK + one_line(str(exc)), file=sys.stderr, flush=True)
        write_report(report, outcome(status="failed", error=one_line(str(exc)), data_error=isinstance(exc, DataError)), region())
        return 2
    except Exception as exc:
        where = job.context if job is not None else "job"
        message = f"{where}: {what} failed: {describe_failure(exc)}"
        print(ERROR_MARK + one_line(message), file=sys.stderr, flush=True)
        write_report(report, outcome(status="failed", error=one_line(message), data_error=False), region())
        raise
    finally:
        if spark is not None and existing is None:
            spark.stop()
    print(result_mark + json.dumps(result, separators=(",", ":"), default=str), flush=True)
    write_report(report, outcome(status="succeeded", result=result), region())
    return 0
