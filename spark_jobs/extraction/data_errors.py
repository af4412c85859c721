"""Deterministic data errors: a value the job's transforms or the lake cannot hold.

With ANSI mode on (see ``extraction.SESSION_SETTINGS``) a cast that overflows, a division by
zero or a text that is not a number fails the Spark action instead of storing NULL. Such an
error fails every retry the same way, so :func:`data_error` turns it into a
:class:`~spark_jobs.common.errors.DataError` (no Airflow retry) after finding the transform step and
column at fault by replaying the steps on the rows read; anything else (a lost connection,
a dead executor) is left to propagate and is retried or re-queued as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from spark_jobs.common.errors import DataError
from spark_jobs.common.job_documents import CONFIG_FILE, ExtractJob, TransformStep, quote_identifier
from spark_jobs.extraction.transforms import KeyColumns, apply_step, spark_message

# Spark error classes (and JDBC exceptions) that a value raises every time it is read.
DETERMINISTIC = re.compile(
    r"\[(CAST_OVERFLOW|CAST_INVALID_INPUT|NUMERIC_VALUE_OUT_OF_RANGE|ARITHMETIC_OVERFLOW|DIVIDE_BY_ZERO|"
    r"INTERVAL_DIVIDED_BY_ZERO|INVALID_ARRAY_INDEX|INVALID_ARRAY_INDEX_IN_ELEMENT_AT|CANNOT_PARSE_TIMESTAMP|"
    r"DATETIME_OVERFLOW|NUMERIC_OUT_OF_SUPPORTED_RANGE|INVALID_FRACTION_OF_SECOND|BINARY_ARITHMETIC_OVERFLOW|"
    r"CAST_OVERFLOW_IN_TABLE_INSERT|CANNOT_PARSE_DECIMAL|DATATYPE_MISMATCH|INCONSISTENT_BEHAVIOR_CROSS_VERSION)"
    r"[\].]|java\.sql\.SQLDataException"
)


def is_deterministic(exc: BaseException) -> bool:
    return DETERMINISTIC.search(str(exc)) is not None


def data_error(exc: BaseException, raw: DataFrame, job: ExtractJob, what: str) -> DataError | None:
    """The :class:`DataError` for ``exc`` raised while writing ``what`` (e.g. "window X chunk 2"),
    or None if ``exc`` is not a data error."""
    if not is_deterministic(exc):
        return None
    message = value_message(exc)
    found = failing_step(raw, job)
    if found is None:
        return DataError(
            f"{job.context}: {what}: a value read from the source cannot be stored: {message} — fix: add a "
            f"`cast` of the column to a type that holds it (e.g. string) to the pipeline's transforms in "
            f"{CONFIG_FILE}"
        )
    step, column = found
    return DataError(f"{job.context}: {what}: {step.label} {column}: {message} — fix: {remedy(step, column)}")


ERROR_LINE = re.compile(r"(\[[A-Z_]+(?:\.[A-Z_]+)?\].*?)(?: If necessary set| Use `try_|$)")


def value_message(exc: BaseException) -> str:
    """Spark's own sentence about the value (``[NUMERIC_VALUE_OUT_OF_RANGE] 123456.78 cannot be
    represented as Decimal(5, 2).``), without the Java class, the stack or the advice to turn ANSI off."""
    for line in str(exc).splitlines():
        match = ERROR_LINE.search(line)
        if match and DETERMINISTIC.search(line):
            return match.group(1).strip()
    return spark_message(exc)


def remedy(step: TransformStep, column: str) -> str:
    if step.op == "cast":
        return (
            f"change the cast of {column} to a type that holds every value (a wider decimal, bigint or "
            f"string), or remove it, in the pipeline's transforms in {CONFIG_FILE}"
        )
    if step.op in ("derive", "filter"):
        return (
            f"make the expression of {column} hold for every row (try_cast, try_divide, try_add, or a CASE "
            f"for the bad values) in {CONFIG_FILE}"
        )
    return f"make the step handle the values shown, or change it, in {CONFIG_FILE}"


def failing_step(raw: DataFrame, job: ExtractJob) -> tuple[TransformStep, str] | None:
    """Replay the transforms on the rows read, evaluating each step's columns, and return the first
    step (and column) whose evaluation fails, or None if the read alone fails."""
    if _fails(raw, raw.columns):
        return None
    df, keys = raw, KeyColumns.of(job)
    for step in job.transforms:
        before = df
        df, keys = apply_step(df, step, keys, job)
        for label, frame, columns in _probes(step, before, df):
            if _fails(frame, columns):
                return step, label
    return None


def _probes(step: TransformStep, before: DataFrame, after: DataFrame) -> Iterator[tuple[str, DataFrame, list[str]]]:
    if step.op in ("cast", "derive") and isinstance(step.columns, dict):
        for name in step.columns:
            yield f"column '{name}'", after, [name]
    elif step.op == "filter":
        yield f"condition {step.condition!r}", before.filter(step.condition or "true"), before.columns
    else:
        yield "", after, after.columns


def _fails(df: DataFrame, columns: list[str]) -> bool:
    if not columns:
        return False
    try:
        df.agg(F.max(F.hash(*[F.col(quote_identifier(c)) for c in columns]))).collect()
    except Exception as exc:  # noqa: BLE001 - only a data error counts; anything else is not this step's
        return is_deterministic(exc)
    return False
