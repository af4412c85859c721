"""The transformation steps of an extraction: pure ``DataFrame -> DataFrame`` functions.

:func:`transform` applies a job's steps in order. Before each step it checks that
every column the step names exists, and it tracks the primary-key, cursor and
soft-delete columns through renames: they must survive every step, and the
primary key and cursor may not be hashed or masked, because the lake merges rows
by primary key and newest cursor. Errors name the pipeline, the table, the step
(counted from 1) and the fix.

The ops, as builders of pure functions for ``df.transform``:

- ``select``: keep these columns, in this order;
- ``rename``: ``{old: new}``;
- ``cast``: ``{column: spark type}``, e.g. ``decimal(12,2)``;
- ``hash``: SHA-256 hex of the column's string value; null stays null;
- ``mask``: ``{column: {keep_last: N}}``: every character but the last N becomes ``*``;
  null stays null, a value of N characters or fewer is kept;
- ``derive``: ``{new_column: spark sql expression}``, evaluated in order;
- ``filter``: keep rows for which the Spark SQL condition is true;
- ``function``: a registered user function (see :mod:`spark_jobs.user_transforms`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import Column, DataFrame

from spark_jobs import user_transforms
from spark_jobs.common.errors import DataError, ExtractionError, UnknownUserTransformError
from spark_jobs.common.job_documents import CONFIG_FILE, ExtractJob, TransformStep, quote_identifier
from spark_jobs.extraction.expression_check import builtin_functions, refusal
from spark_jobs.extraction.source_types import CARRIED

Transformation = Callable[[DataFrame], DataFrame]


# ---------------------------------------------------------------------- ops
def select_columns(columns: Sequence[str]) -> Transformation:
    """Keep ``columns`` (and the read's own bookkeeping columns, if there)."""
    return lambda df: df.select(
        *[F.col(quote_identifier(c)) for c in columns], *[F.col(c) for c in df.columns if c.startswith(CARRIED)]
    )


def rename_columns(mapping: Mapping[str, str]) -> Transformation:
    return lambda df: df.withColumnsRenamed(dict(mapping))


def cast_columns(types: Mapping[str, str]) -> Transformation:
    return lambda df: df.withColumns({c: F.col(quote_identifier(c)).cast(t) for c, t in types.items()})


def hashed(column: str) -> Column:
    return F.sha2(F.col(quote_identifier(column)).cast("string"), 256)


def with_hashed_columns(columns: Sequence[str]) -> Transformation:
    return lambda df: df.withColumns({c: hashed(c) for c in columns})


def masked(column: str, keep_last: int) -> Column:
    # Every character that still has at least `keep_last` characters after it becomes '*'.
    return F.regexp_replace(F.col(quote_identifier(column)).cast("string"), f"(?s).(?=.{{{keep_last}}})", "*")


def with_masked_columns(options: Mapping[str, Mapping[str, int]]) -> Transformation:
    return lambda df: df.withColumns({c: masked(c, o["keep_last"]) for c, o in options.items()})


def with_derived_column(name: str, expression: str) -> Transformation:
    return lambda df: df.withColumn(name, F.expr(expression))


def filter_rows(condition: str) -> Transformation:
    return lambda df: df.filter(F.expr(condition))


# --------------------------------------------------------------- key columns
@dataclass(frozen=True)
class KeyColumns:
    """Output names of the columns the lake relies on, tracked through renames."""

    primary_key: tuple[str, ...]
    cursor: str
    soft_delete: str | None

    @classmethod
    def of(cls, job: ExtractJob) -> KeyColumns:
        return cls(primary_key=job.primary_key, cursor=job.cursor, soft_delete=job.soft_delete)

    def roles(self) -> list[tuple[str, str]]:
        """(role, column) pairs, e.g. ``("primary-key", "order_id")``."""
        pairs = [("primary-key", c) for c in self.primary_key] + [("cursor", self.cursor)]
        if self.soft_delete is not None:
            pairs.append(("soft-delete", self.soft_delete))
        return pairs

    def renamed(self, mapping: Mapping[str, str]) -> KeyColumns:
        soft = self.soft_delete
        return KeyColumns(
            primary_key=tuple(mapping.get(c, c) for c in self.primary_key),
            cursor=mapping.get(self.cursor, self.cursor),
            soft_delete=None if soft is None else mapping.get(soft, soft),
        )


# ---------------------------------------------------------------- applying
def transform(df: DataFrame, job: ExtractJob) -> DataFrame:
    """The job's transformation steps applied in order to the rows read."""
    return apply_transforms(df, job)[0]


def apply_transforms(df: DataFrame, job: ExtractJob) -> tuple[DataFrame, KeyColumns]:
    """Like :func:`transform`, also returning the output names of the key columns."""
    keys = KeyColumns.of(job)
    for step in job.transforms:
        df, keys = apply_step(df, step, keys, job)
    return df, keys


def apply_step(df: DataFrame, step: TransformStep, keys: KeyColumns, job: ExtractJob) -> tuple[DataFrame, KeyColumns]:
    where = f"{job.context}: {step.label}"
    if step.op == "function":
        return _apply_function(df, step, keys, where)
    _check_named_columns(df, step, _named_columns(step), where)
    keys = _track_keys(df, step, keys, where)
    if step.op == "derive":
        for name, expression in step.columns.items():
            _check_expression(df, expression, f"{where} column '{name}'")
            df = _spark_step(
                df,
                with_derived_column(name, expression),
                f"{where} column '{name}': invalid Spark SQL expression {expression!r}",
            )
    elif step.op == "cast":
        for name, type_name in step.columns.items():
            df = _spark_step(
                df,
                cast_columns({name: type_name}),
                f"{where} column '{name}': invalid Spark type {type_name!r}",
            )
    elif step.op == "filter":
        _check_expression(df, step.condition or "", where)
        df = _spark_step(df, filter_rows(step.condition or ""), f"{where}: invalid Spark SQL condition {step.condition!r}")
    else:
        df = _spark_step(df, _builder(step), f"{where}: invalid {step.op}")
    _check_keys_survive(df, keys, where)
    return df, keys


def _builder(step: TransformStep) -> Transformation:
    if step.op == "select":
        return select_columns(step.columns)
    if step.op == "rename":
        return rename_columns(step.columns)
    if step.op == "hash":
        return with_hashed_columns(step.columns)
    if step.op == "mask":
        return with_masked_columns(step.columns)
    raise ValueError(f"no builder for transform op {step.op!r}")


def _named_columns(step: TransformStep) -> list[str]:
    """The existing columns a step names (derive and filter are resolved by Spark)."""
    if step.op in ("select", "hash", "rename", "cast", "mask"):
        return list(step.columns)
    return []


def _check_named_columns(df: DataFrame, step: TransformStep, named: Sequence[str], where: str) -> None:
    unknown = [c for c in named if c not in df.columns]
    if unknown:
        noun = "column" if len(unknown) == 1 else "columns"
        raise ExtractionError(
            f"{where} names unknown {noun} {', '.join(repr(c) for c in unknown)}; "
            f"columns are: {', '.join(df.columns)} — fix {CONFIG_FILE}"
        )
    if step.op == "rename":
        result = [step.columns.get(c, c) for c in df.columns]
        clashes = sorted({c for c in result if result.count(c) > 1})
        if clashes:
            raise ExtractionError(
                f"{where} would give two columns the name {', '.join(repr(c) for c in clashes)}; "
                f"columns are: {', '.join(df.columns)} — rename to a free name in {CONFIG_FILE}"
            )


def _track_keys(df: DataFrame, step: TransformStep, keys: KeyColumns, where: str) -> KeyColumns:
    if step.op == "rename":
        return keys.renamed(step.columns)
    if step.op == "select":
        dropped = [(role, c) for role, c in keys.roles() if c not in step.columns]
        if dropped:
            role, column = dropped[0]
            fix = (
                "or set soft_delete: null if the lake should not track deletes"
                if role == "soft-delete"
                else "the lake merges rows by primary key and newest cursor"
            )
            raise ExtractionError(
                f"{where} drops the {role} column '{column}'; add it to the select list ({fix}) — fix {CONFIG_FILE}"
            )
    if step.op in ("hash", "mask"):
        touched = [(role, c) for role, c in keys.roles() if role != "soft-delete" and c in step.columns]
        if touched:
            role, column = touched[0]
            raise ExtractionError(
                f"{where} would {step.op} the {role} column '{column}'; the lake merges rows by primary key "
                f"and newest cursor, so these must stay as read — {step.op} a derived copy instead, "
                f"or remove '{column}' from the step in {CONFIG_FILE}"
            )
    return keys


def _check_keys_survive(df: DataFrame, keys: KeyColumns, where: str) -> None:
    for role, column in keys.roles():
        if column not in df.columns:
            raise ExtractionError(
                f"{where} removed the {role} column '{column}'; columns are now: {', '.join(df.columns)} "
                f"— keep it (the lake merges rows by primary key and newest cursor) in {CONFIG_FILE}"
            )


_BUILTINS: dict[int, frozenset[str]] = {}


def _check_expression(df: DataFrame, expression: str, where: str) -> None:
    """Refuse an expression whose parse tree calls reflection or anything but Spark's built-ins
    (:mod:`spark_jobs.extraction.expression_check`); a data error, since no retry can change the answer."""
    jvm = df.sparkSession._jvm
    builtins = _BUILTINS.get(id(jvm))
    if builtins is None:
        builtins = _BUILTINS.setdefault(id(jvm), builtin_functions(jvm))
    reason = refusal(jvm, expression, builtins, parse_errors=False)
    if reason is not None:
        raise DataError(
            f"{where}: {expression!r} {reason}; a transform may call Spark's built-in functions only — "
            f"change the expression, or use a registered user function instead ({CONFIG_FILE})"
        )


def _spark_step(df: DataFrame, step: Transformation, what: str) -> DataFrame:
    try:
        return df.transform(step)
    except (AnalysisException, IllegalArgumentException) as exc:
        raise ExtractionError(f"{what}: {spark_message(exc)}; columns are: {', '.join(df.columns)} — fix {CONFIG_FILE}") from None


def _apply_function(df: DataFrame, step: TransformStep, keys: KeyColumns, where: str) -> tuple[DataFrame, KeyColumns]:
    name = step.name or ""
    try:
        registered = user_transforms.lookup(name)
    except UnknownUserTransformError as exc:
        raise ExtractionError(f"{where}: {exc}, or fix the name in {CONFIG_FILE}") from None
    where = f"{where} '{name}'"
    _check_named_columns(df, step, registered.columns, where)
    try:
        out = df.transform(registered.function)
    except (AnalysisException, IllegalArgumentException) as exc:
        raise ExtractionError(f"{where} failed: {spark_message(exc)}; columns are: {', '.join(df.columns)}") from None
    if not isinstance(out, DataFrame):
        raise ExtractionError(
            f"{where} returned {type(out).__name__}, not a DataFrame — fix "
            f"{registered.function.__module__}.{registered.function.__qualname__}"
        )
    _check_keys_survive(out, keys, where)
    return out, keys


def spark_message(exc: BaseException) -> str:
    """The first meaningful line of a Spark error (without the plan that follows)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip("; ") if lines else type(exc).__name__
