"""A pipeline's ``derive`` and ``filter`` expressions, checked before any job is submitted.

The check is :mod:`spark_jobs.extraction.expression_check`: Spark's own parser, run in a small local JVM
(pyspark's gateway, started once per process and only for pipelines that have such
expressions). An expression that passed is remembered by its hash, so a task does not start a
JVM for expressions it has seen pass; the job checks them again with its own session before it
reads anything. Where no JVM can start (no pyspark or no Java on the Airflow worker, as with
requirements/airflow.txt on Amazon MWAA), the task logs which and the job's check is the one that refuses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spark_jobs.extraction.expression_check import builtin_functions, refusal
from spotlake import config
from spotlake.errors import ConfigError

LOG = logging.getLogger(__name__)
CACHE_DIR = Path(os.environ.get("SPOTLAKE_EXPRESSION_CACHE", Path(tempfile.gettempdir()) / "spotlake-expressions"))
GATEWAY_CONF = {"spark.driver.memory": "256m", "spark.ui.enabled": "false"}

_jvm: Any = None


def local_jvm() -> Any:
    """A py4j JVM with Spark's classes (started on first use, kept for the process)."""
    global _jvm
    if _jvm is None:
        try:
            from pyspark import SparkConf, SparkContext
        except ImportError as exc:
            raise RuntimeError(
                "pyspark is not installed on this Airflow worker: requirements/airflow.txt leaves it out (it needs Java as well)"
            ) from exc

        if SparkContext._jvm is not None:  # a Spark session in this process already has one
            return SparkContext._jvm
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            raise RuntimeError("no Java on this Airflow worker (JAVA_HOME is not set and no java is on PATH)")
        from pyspark.java_gateway import launch_gateway

        conf = SparkConf(loadDefaults=False)
        for key, value in GATEWAY_CONF.items():
            conf.set(key, value)
        _jvm = launch_gateway(conf).jvm
    return _jvm


def expressions(pipeline: config.Pipeline) -> list[tuple[str, str]]:
    """(where, expression) of each derive column and filter condition of ``pipeline``."""
    found: list[tuple[str, str]] = []
    for i, step in enumerate(pipeline.transforms):
        where = f"pipelines ({pipeline.name}).transforms[{i}].{step.op}"
        if step.op == "derive":
            found.extend((f"{where}.{column}", str(expr)) for column, expr in step.spec["columns"].items())
        elif step.op == "filter":
            found.append((where, str(step.spec["condition"])))
    return found


def _key(expression: str) -> Path:
    return CACHE_DIR / hashlib.sha256(expression.encode("utf-8")).hexdigest()


def check_pipeline(pipeline: config.Pipeline, path: str = "config/pipelines.yaml") -> None:
    """Raise :class:`~spotlake.errors.ConfigError` naming the first expression a transform may not
    run (reflection, a function that is not a Spark built-in, a subquery, a syntax error)."""
    unchecked = [(where, expr) for where, expr in expressions(pipeline) if not _key(expr).exists()]
    if not unchecked:
        return
    try:
        jvm = local_jvm()
        builtins = builtin_functions(jvm)
    except Exception as exc:  # noqa: BLE001 - no Java here: the job's own check still refuses
        LOG.warning(
            "cannot start a JVM to check %d transform expression(s) of %s here (%s); the job checks "
            "them before it reads anything",
            len(unchecked),
            pipeline.name,
            exc,
        )
        return
    for where, expression in unchecked:
        reason = refusal(jvm, expression, builtins)
        if reason is not None:
            raise ConfigError(
                f"{path}: {where}: {expression!r} {reason}; a transform may call Spark's built-in functions "
                "only — change the expression, or use a registered user function (transforms: - function: name)"
            )
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _key(expression).touch()
