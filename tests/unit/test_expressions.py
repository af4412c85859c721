"""The Airflow task checks a pipeline's transform expressions with Spark's parser before it submits
anything; an expression that passed is not parsed again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spotlake import config, expressions
from spotlake.errors import ConfigError
from tests.support.pipeline_configs import parse, with_pipeline


def pipeline_with(*steps: dict) -> config.Pipeline:
    return parse(with_pipeline(transforms=list(steps))).pipelines[0]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(expressions, "CACHE_DIR", tmp_path / "checked")
    return tmp_path / "checked"


@pytest.mark.parametrize(
    "expression",
    [
        "`java_method`('java.lang.System', 'exit', 0)",
        "reflect -- a comment\n('java.lang.System', 'exit', 0)",
        "Try_Reflect('java.lang.Runtime', 'getRuntime')",
    ],
)
def test_reflection_is_refused_naming_the_entry(expression: str, spark: object) -> None:
    with pytest.raises(ConfigError) as err:
        expressions.check_pipeline(pipeline_with({"derive": {"x": expression}}))
    assert "pipelines (orders).transforms[0].derive.x" in str(err.value)
    assert "runs arbitrary Java code" in str(err.value)
    with pytest.raises(ConfigError, match=r"transforms\[0\].filter: .* runs arbitrary Java code"):
        expressions.check_pipeline(pipeline_with({"filter": f"{expression} is null"}))


def test_syntax_errors_and_unknown_functions_are_refused_too(spark: object) -> None:
    with pytest.raises(ConfigError, match="is not a Spark SQL expression .*PARSE_SYNTAX_ERROR"):
        expressions.check_pipeline(pipeline_with({"derive": {"x": "amount +"}}))
    with pytest.raises(ConfigError, match="calls my_fn, which is not one of Spark's built-in functions"):
        expressions.check_pipeline(pipeline_with({"derive": {"x": "my_fn(amount)"}}))


def test_expressions_that_passed_are_remembered(cache: Path, spark: object, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = pipeline_with({"derive": {"cents": "cast(amount * 100 as bigint)"}}, {"filter": "amount > 0"})
    expressions.check_pipeline(pipeline)
    assert len(list(cache.iterdir())) == 2

    def no_jvm() -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(expressions, "local_jvm", no_jvm)
    expressions.check_pipeline(pipeline)


def test_without_java_the_task_leaves_the_check_to_the_job(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_java() -> None:
        raise FileNotFoundError("java")

    monkeypatch.setattr(expressions, "local_jvm", no_java)
    expressions.check_pipeline(pipeline_with({"derive": {"x": "reflect('a', 'b')"}}))
    assert "the job checks them before it reads anything" in caplog.text


@pytest.mark.parametrize("missing", ["pyspark", "java"])
def test_the_task_log_says_what_is_missing(
    missing: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As on an Airflow worker installed from requirements/airflow.txt (no pyspark), or without Java."""
    monkeypatch.setattr(expressions, "_jvm", None)
    if missing == "pyspark":
        monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    else:
        from pyspark import SparkContext

        monkeypatch.setattr(SparkContext, "_jvm", None)
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setattr(expressions.shutil, "which", lambda name: None)
    expressions.check_pipeline(pipeline_with({"derive": {"x": "reflect('a', 'b')"}}))
    expected = (
        "pyspark is not installed on this Airflow worker"
        if missing == "pyspark"
        else "no Java on this Airflow worker (JAVA_HOME is not set and no java is on PATH)"
    )
    assert expected in caplog.text and "the job checks them before it reads anything" in caplog.text
