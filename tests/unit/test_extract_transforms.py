"""The extraction job's document parsing, source checks and transformation steps (no services)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DecimalType, LongType, StringType, StructField, StructType, TimestampType

from spark_jobs import user_transforms
from spark_jobs.common.errors import DataError, ExtractionError, UnknownUserTransformError
from spark_jobs.common.job_documents import ExtractJob, is_identifier, quote_identifier
from spark_jobs.extraction import main as extraction_main
from spark_jobs.extraction.mysql_source import (
    ReadStats,
    SourceColumn,
    SourceTable,
    check_table,
    chunk_condition,
    key_literal,
    partition_count,
    range_condition,
    select_query,
)
from spark_jobs.extraction.transforms import apply_transforms, transform
from tests.support.job_documents import BASE_JOB, job_with

SCHEMA = StructType(
    [
        StructField("order_id", LongType()),
        StructField("email", StringType()),
        StructField("phone", StringType()),
        StructField("amount", StringType()),
        StructField("updated_at", TimestampType()),
        StructField("deleted_at", TimestampType()),
    ]
)


def steps(*transforms: dict[str, Any]) -> ExtractJob:
    return job_with(transforms=list(transforms))


def rows(df: DataFrame) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


@pytest.fixture
def orders(spark: SparkSession) -> DataFrame:
    from datetime import datetime

    t = datetime(2026, 11, 27, 14, 1, 0)
    return spark.createDataFrame(
        [
            (1, "  Ann@Example.COM ", "5551234567", "12.50", t, None),
            (2, None, None, None, t, t),
            (3, "bob@example.com", "12", "7", t, None),
        ],
        SCHEMA,
    )


# ------------------------------------------------------------------ job document
def test_job_round_trips_through_base64url() -> None:
    encoded = base64.urlsafe_b64encode(json.dumps(BASE_JOB).encode()).decode().rstrip("=")
    job = ExtractJob.from_base64url(encoded)
    assert job.pipeline == "shop_orders"
    assert job.primary_key == ("order_id",)
    assert job.window.label == "20261127T140000Z"
    assert job.window.to_json() == BASE_JOB["window"]
    assert (job.kind, job.label) == ("window", "20261127T140000Z")
    assert (job.lake.current_table, job.lake.changes_table) == ("lake.shop.shop_orders", "lake.shop.shop_orders_changes")
    assert (job.registry.prefix, job.registry.region) == ("spotlake", "eu-west-1")
    assert job.read.max_partitions == 2 and job.read.chunk_rows == 250000 and job.read.window_chunk_s == 3600
    assert (job.commit.lease_s, job.commit.wait_s) == (120.0, 1800.0)


def test_a_snapshot_job_needs_no_window() -> None:
    document = copy.deepcopy(BASE_JOB)
    del document["window"]
    job = ExtractJob.from_dict({**document, "kind": "snapshot", "job_key": "shop_orders#snapshot"})
    assert (job.kind, job.label, job.window) == ("snapshot", "snapshot", None)


def test_job_defaults_for_optional_sections() -> None:
    document = copy.deepcopy(BASE_JOB)
    del document["read"], document["soft_delete"], document["transforms"]
    job = ExtractJob.from_dict(document)
    assert job.read.fetch_size == 10000 and job.soft_delete is None and job.transforms == ()


def test_window_bounds_are_normalised_to_utc() -> None:
    job = job_with(
        window={
            "start": "2026-11-27T15:00:00+01:00",
            "end": "2026-11-27T14:05:00Z",
            "read_from": "2026-11-27T13:55:00+00:00",
        }
    )
    assert job.window.to_json()["start"] == "2026-11-27T14:00:00+00:00"
    assert job.window.label == "20261127T140000Z"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"table": "orders; DROP TABLE x"}, "'table'"),
        ({"primary_key": ["order_id", "bad`name"]}, "'primary_key[1]'"),
        ({"primary_key": []}, "'primary_key'"),
        ({"cursor": "updated_at "}, "'cursor'"),
        ({"attempt": 0}, "'attempt'"),
        ({"run_id": "../../etc"}, "'run_id'"),
        ({"window": {"start": "2026-11-27T14:00:00", "end": "2026-11-27T14:05:00+00:00"}}, "'window.start'"),
        ({"window": {"start": "2026-11-27T14:00:00Z", "end": "yesterday"}}, "'window.end'"),
        ({"window": {"start": "2026-11-27T14:05:00Z", "end": "2026-11-27T14:00:00Z"}}, "'window'"),
        ({"kind": "full"}, "'kind'"),
        ({"job_key": "no-label"}, "'job_key'"),
        ({"lake": {**BASE_JOB["lake"], "type": "hadoop"}}, "'lake.type'"),
        ({"lake": {**BASE_JOB["lake"], "warehouse": "file:/lake/wh"}}, "'lake.warehouse'"),
        ({"lake": {**BASE_JOB["lake"], "secret_id": None}}, "'lake.secret_id'"),
        ({"lake": {**BASE_JOB["lake"], "current": "a.b"}}, "'lake.current'"),
        ({"registry": {"prefix": "x y"}}, "'registry.prefix'"),
        ({"registry": {"prefix": "x", "region": "mars"}}, "'registry.region'"),
        ({"commit": {"lease_s": 0}}, "'commit.lease_s'"),
        ({"read": {"fetch_size": 0}}, "'read.fetch_size'"),
        ({"read": {"fetchsize": 10}}, "'read.fetchsize'"),
        ({"source": {}}, "'source.secret_id'"),
        ({"sourse": {}}, "'sourse'"),
        ({"transforms": [{"op": "explode", "columns": ["a"]}]}, "'transforms #1'"),
        ({"transforms": [{"op": "select", "columns": []}]}, "'transforms #1 (select): columns'"),
        ({"transforms": [{"op": "rename", "columns": {"a": "b`c"}}]}, "'transforms #1 (rename): columns.a'"),
        (
            {"transforms": [{"op": "mask", "columns": {"phone": {"keep_last": -1}}}]},
            "'transforms #1 (mask): columns.phone.keep_last'",
        ),
        ({"transforms": [{"op": "filter"}]}, "'transforms #1 (filter): condition'"),
        ({"transforms": [{"op": "function", "name": "normalise"}]}, "'transforms #1 (function): name'"),
    ],
)
def test_job_errors_name_the_pipeline_and_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ExtractionError) as caught:
        job_with(**changes)
    message = str(caught.value)
    assert message.startswith("pipeline shop_orders: job field ")
    assert field in message


def test_job_without_pipeline_and_bad_encodings_say_so() -> None:
    document = copy.deepcopy(BASE_JOB)
    del document["pipeline"]
    with pytest.raises(ExtractionError, match="job field 'pipeline'"):
        ExtractJob.from_dict(document)
    with pytest.raises(ExtractionError, match="not base64url"):
        ExtractJob.from_base64url("a")
    with pytest.raises(ExtractionError, match="not valid JSON"):
        ExtractJob.from_json("{")


def test_identifiers_are_validated_and_quoted() -> None:
    assert is_identifier("order_id") and is_identifier("_x$1")
    for bad in ["orders; DROP TABLE x", "1orders", "a.b", "a`b", "", None, "naïve"]:
        assert not is_identifier(bad)
    assert quote_identifier("a`b") == "`a``b`"


def test_main_prints_one_error_line_for_a_bad_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert extraction_main.main(["--job", base64.urlsafe_b64encode(b'{"pipeline": "shop_orders"}').decode()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("SPOTLAKE_ERROR: pipeline shop_orders: job field ")
    assert extraction_main.main([]) == 2
    assert "SPOTLAKE_ERROR: job: one of the arguments --job --job-file is required" in capsys.readouterr().err


# ------------------------------------------------------------------ source checks
def source_table(**changes: Any) -> SourceTable:
    fields = {
        "columns": ("order_id", "email", "updated_at", "deleted_at"),
        "types": {
            "order_id": "bigint",
            "email": "varchar",
            "updated_at": "datetime",
            "deleted_at": "datetime",
        },
        "index_leaders": frozenset({"order_id", "updated_at"}),
    }
    fields.update(changes)
    return SourceTable(**fields)


def test_range_query_quotes_names_and_formats_bounds_in_utc() -> None:
    job = job_with()
    low = datetime.fromisoformat("2026-11-27T14:55:00+01:00")
    high = datetime.fromisoformat("2026-11-27T15:05:00+01:00")
    assert select_query(job, source_table(), range_condition(job, low, high)) == (
        "SELECT `order_id`, `email`, DATE_FORMAT(`updated_at`, '%Y-%m-%d %H:%i:%s.%f') AS `updated_at`, "
        "DATE_FORMAT(`deleted_at`, '%Y-%m-%d %H:%i:%s.%f') AS `deleted_at`, "
        "MD5(CONCAT_WS(',', IFNULL(QUOTE(`order_id`), 'NULL'))) AS __spotlake_source_key, "
        "MD5(CONCAT_WS(',', IFNULL(QUOTE(`order_id`), 'NULL'), IFNULL(QUOTE(`email`), 'NULL'), "
        "IFNULL(QUOTE(`updated_at`), 'NULL'), IFNULL(QUOTE(`deleted_at`), 'NULL'))) AS __spotlake_source_hash "
        "FROM `shop`.`orders` "
        "WHERE `updated_at` >= '2026-11-27 13:55:00.000000' AND `updated_at` < '2026-11-27 14:05:00.000000'"
    )


def test_snapshot_chunks_page_through_the_key_with_typed_literals() -> None:
    job = job_with(primary_key=["region", "order_id"])
    table = source_table(
        columns=("region", "order_id", "updated_at"),
        types={"region": "varchar", "order_id": "bigint", "updated_at": "datetime"},
        details={"region": SourceColumn("region", "varchar", "utf8mb4", "utf8mb4_unicode_ci")},
    )
    region = "CONVERT(CONVERT(X'6e6f727468' USING utf8mb4) USING utf8mb4) COLLATE utf8mb4_unicode_ci"
    assert chunk_condition(job, table, None, None) == "1 = 1 AND 1 = 1"
    assert chunk_condition(job, table, ["north", "7"], None) == (
        f"((`region` > {region}) OR (`region` = {region} AND `order_id` > 7)) AND 1 = 1"
    )
    # A key value never reaches SQL as text: quotes are hex, numbers are parsed.
    assert "'" not in key_literal(table, "region", "x' OR 1=1 --").replace("X'", "").replace("' USING", "")
    with pytest.raises(ValueError):
        key_literal(table, "order_id", "7 OR 1=1")


def test_source_checks_name_pipeline_table_and_fix() -> None:
    job = job_with()
    check_table(job, source_table())
    with pytest.raises(ExtractionError) as caught:
        check_table(job, source_table(index_leaders=frozenset({"order_id"})))
    assert str(caught.value).startswith(
        "pipeline shop_orders (shop.orders): cursor column 'updated_at' is not the first column of any index"
    )
    assert "CREATE INDEX" in str(caught.value)
    with pytest.raises(ExtractionError, match="primary-key column 'id' does not exist .* fix primary_key"):
        check_table(job_with(primary_key=["id"]), source_table())
    with pytest.raises(ExtractionError, match="soft-delete column 'removed' does not exist"):
        check_table(job_with(soft_delete="removed"), source_table())
    with pytest.raises(ExtractionError, match="cursor column 'email' is VARCHAR, not DATETIME"):
        check_table(job_with(cursor="email"), source_table(index_leaders=frozenset({"email"})))
    with pytest.raises(ExtractionError, match="primary-key column 'doc' is JSON; the initial snapshot pages"):
        check_table(
            job_with(primary_key=["doc"], soft_delete=None),
            source_table(columns=("doc", "updated_at"), types={"doc": "json", "updated_at": "datetime"}),
        )


def test_read_is_split_on_an_integer_key_only_when_the_window_is_large() -> None:
    job = job_with(read={"partition_rows": 1000, "max_partitions": 2})
    assert partition_count(job, ReadStats(rows=500, key_min=1, key_max=500)) == 1
    assert partition_count(job, ReadStats(rows=5000, key_min=1, key_max=9000)) == 2
    assert partition_count(job, ReadStats(rows=5000)) == 1
    assert source_table().integer_key(job) == "order_id"
    assert source_table(types={"order_id": "varchar"}).integer_key(job) is None


# ------------------------------------------------------------------ transforms
def test_select_keeps_the_named_columns_in_order(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "select", "columns": ["updated_at", "order_id", "deleted_at", "email"]}))
    assert out.columns == ["updated_at", "order_id", "deleted_at", "email"]


def test_rename_is_tracked_for_primary_key_and_cursor(orders: DataFrame) -> None:
    job = steps({"op": "rename", "columns": {"order_id": "id", "updated_at": "changed_at", "email": "mail"}})
    out, keys = apply_transforms(orders, job)
    assert out.columns == ["id", "mail", "phone", "amount", "changed_at", "deleted_at"]
    assert (keys.primary_key, keys.cursor, keys.soft_delete) == (("id",), "changed_at", "deleted_at")


def test_cast_converts_types_and_rejects_unknown_types(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "cast", "columns": {"amount": "decimal(12,2)"}}))
    assert out.schema["amount"].dataType == DecimalType(12, 2)
    assert rows(out.select("order_id", "amount")) == [(1, Decimal("12.50")), (2, None), (3, Decimal("7.00"))]
    with pytest.raises(
        ExtractionError,
        match=r"#1 \(cast\) column 'amount': invalid Spark type 'decimel\(12,2\)': .*columns are: order_id",
    ):
        transform(orders, steps({"op": "cast", "columns": {"amount": "decimel(12,2)"}}))


def test_hash_is_sha256_hex_of_the_string_value_and_null_stays_null(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "hash", "columns": ["email", "phone"]}))
    got = {r["order_id"]: (r["email"], r["phone"]) for r in out.collect()}
    assert got[1] == (
        hashlib.sha256(b"  Ann@Example.COM ").hexdigest(),
        hashlib.sha256(b"5551234567").hexdigest(),
    )
    assert got[2] == (None, None)


def test_mask_keeps_the_last_characters_and_null_stays_null(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "mask", "columns": {"phone": {"keep_last": 4}, "email": {"keep_last": 0}}}))
    got = {r["order_id"]: (r["phone"], r["email"]) for r in out.collect()}
    assert got[1] == ("******4567", "*" * len("  Ann@Example.COM "))
    assert got[2] == (None, None)
    assert got[3][0] == "12"


def test_derive_evaluates_in_order_and_reports_bad_expressions(orders: DataFrame) -> None:
    job = steps({"op": "derive", "columns": {"amount_x2": "cast(amount as double) * 2", "big": "amount_x2 > 20"}})
    out = transform(orders, job)
    assert rows(out.select("order_id", "amount_x2", "big")) == [
        (1, 25.0, True),
        (2, None, None),
        (3, 14.0, False),
    ]
    with pytest.raises(ExtractionError) as caught:
        transform(
            orders,
            steps(
                {"op": "select", "columns": ["order_id", "updated_at", "deleted_at"]},
                {"op": "derive", "columns": {"x": "amount +"}},
            ),
        )
    message = str(caught.value)
    assert message.startswith(
        "pipeline shop_orders (shop.orders): transform #2 (derive) column 'x': invalid Spark SQL expression 'amount +': "
    )
    assert "PARSE_SYNTAX_ERROR" in message and message.endswith("fix config/pipelines.yaml")
    with pytest.raises(ExtractionError, match=r"#1 \(derive\) column 'y'.*UNRESOLVED_COLUMN.*columns are: order_id"):
        transform(orders, steps({"op": "derive", "columns": {"y": "nope + 1"}}))
    with pytest.raises(DataError, match="calls java_method, which runs arbitrary Java code"):
        transform(orders, steps({"op": "derive", "columns": {"y": "java_method('java.lang.System', 'exit', 1)"}}))


@pytest.mark.parametrize(
    "expression",
    [
        "reflect('java.lang.System', 'exit', 1)",
        "`reflect`('java.lang.System', 'exit', 1)",
        "REFLECT('java.lang.System', 'exit', 1)",
        "Java_Method ('java.lang.System', 'exit', 1)",
        "reflect/* hidden */('java.lang.System', 'exit', 1)",
        "reflect\n('java.lang.System', 'exit', 1)",
        "try_reflect('java.lang.Runtime', 'getRuntime')",
        "upper(coalesce(email, reflect('java.lang.System', 'getenv', 'HOME')))",
        "transform(array(1, 2), x -> reflect('java.lang.System', 'exit', x))",
        "email -- trailing comment\n || java_method('java.lang.System', 'exit', 1)",
    ],
)
def test_reflection_is_refused_however_it_is_spelled(orders: DataFrame, expression: str) -> None:
    with pytest.raises(DataError, match="runs arbitrary Java code"):
        transform(orders, steps({"op": "derive", "columns": {"y": expression}}))
    with pytest.raises(DataError, match="runs arbitrary Java code"):
        transform(orders, steps({"op": "filter", "condition": f"{expression} is not null"}))


def test_only_spark_builtins_may_be_called(orders: DataFrame, spark: SparkSession) -> None:
    spark.udf.register("my_udf", lambda v: v, "string")
    with pytest.raises(DataError, match="calls my_udf, which is not one of Spark's built-in functions"):
        transform(orders, steps({"op": "derive", "columns": {"y": "my_udf(email)"}}))
    with pytest.raises(DataError, match="calls spark_catalog.db.fn"):
        transform(orders, steps({"op": "derive", "columns": {"y": "spark_catalog.db.fn(email)"}}))
    with pytest.raises(DataError, match="subquery"):
        transform(orders, steps({"op": "filter", "condition": "order_id in (select 1)"}))
    out = transform(orders, steps({"op": "derive", "columns": {"y": "upper(regexp_replace(email, '@.*', ''))"}}))
    assert "y" in out.columns


def test_filter_keeps_rows_where_the_condition_is_true(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "filter", "condition": "email like '%example.com'"}))
    assert [r["order_id"] for r in out.collect()] == [3]
    with pytest.raises(ExtractionError, match=r"#1 \(filter\): invalid Spark SQL condition 'order_id \+ 1'"):
        transform(orders, steps({"op": "filter", "condition": "order_id + 1"}))


def test_user_function_from_the_registry(orders: DataFrame) -> None:
    out = transform(orders, steps({"op": "function", "name": "shop.normalise_email"}))
    assert {r["order_id"]: r["email"] for r in out.collect()} == {
        1: "ann@example.com",
        2: None,
        3: "bob@example.com",
    }
    assert user_transforms.get("shop.normalise_email") is user_transforms.lookup("shop.normalise_email").function
    assert "shop.normalise_email" in user_transforms.names()


def test_unknown_user_function_lists_the_registered_ones(orders: DataFrame) -> None:
    with pytest.raises(UnknownUserTransformError, match="registered: .*shop.normalise_email"):
        user_transforms.get("shop.nope")
    with pytest.raises(ExtractionError) as caught:
        transform(orders, steps({"op": "function", "name": "shop.nope"}))
    assert str(caught.value).startswith(
        "pipeline shop_orders (shop.orders): transform #1 (function): no user transform is registered as 'shop.nope'"
    )


def test_user_function_needing_a_missing_column_names_it(orders: DataFrame) -> None:
    job = steps(
        {"op": "select", "columns": ["order_id", "updated_at", "deleted_at"]},
        {"op": "function", "name": "shop.normalise_email"},
    )
    with pytest.raises(ExtractionError, match=r"#2 \(function\) 'shop.normalise_email' names unknown column 'email'"):
        transform(orders, job)


def test_registering_functions(orders: DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_transforms, "_REGISTRY", dict(user_transforms._REGISTRY))

    @user_transforms.register("unit.drop_cursor")
    def drop_cursor(df: DataFrame) -> DataFrame:
        return df.drop("updated_at")

    assert user_transforms.get("unit.drop_cursor") is drop_cursor
    with pytest.raises(ValueError, match="registered twice"):
        user_transforms.register("unit.drop_cursor")(lambda df: df)
    with pytest.raises(ExtractionError, match="removed the cursor column 'updated_at'"):
        transform(orders, steps({"op": "function", "name": "unit.drop_cursor"}))


def test_unknown_column_error_names_pipeline_table_step_and_columns(orders: DataFrame) -> None:
    job = steps(
        {"op": "cast", "columns": {"amount": "double"}},
        {"op": "hash", "columns": ["email"]},
        {"op": "rename", "columns": {"foo": "bar"}},
    )
    with pytest.raises(ExtractionError) as caught:
        transform(orders, job)
    assert str(caught.value) == (
        "pipeline shop_orders (shop.orders): transform #3 (rename) names unknown column 'foo'; "
        "columns are: order_id, email, phone, amount, updated_at, deleted_at — fix config/pipelines.yaml"
    )


def test_unknown_column_after_a_rename_uses_the_new_names(orders: DataFrame) -> None:
    job = steps({"op": "rename", "columns": {"email": "mail"}}, {"op": "hash", "columns": ["email"]})
    with pytest.raises(ExtractionError, match=r"#2 \(hash\) names unknown column 'email'; columns are: order_id, mail"):
        transform(orders, job)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"op": "hash", "columns": ["order_id"]},
            r"#1 \(hash\) would hash the primary-key column 'order_id'",
        ),
        (
            {"op": "mask", "columns": {"updated_at": {"keep_last": 2}}},
            r"#1 \(mask\) would mask the cursor column 'updated_at'",
        ),
        (
            {"op": "select", "columns": ["order_id", "email", "deleted_at"]},
            r"#1 \(select\) drops the cursor column 'updated_at'",
        ),
        (
            {"op": "select", "columns": ["order_id", "updated_at"]},
            r"#1 \(select\) drops the soft-delete column 'deleted_at'.*soft_delete: null",
        ),
        (
            {"op": "rename", "columns": {"email": "phone"}},
            r"#1 \(rename\) would give two columns the name 'phone'",
        ),
    ],
)
def test_key_columns_must_survive(orders: DataFrame, step: dict[str, Any], expected: str) -> None:
    with pytest.raises(ExtractionError, match=expected):
        transform(orders, steps(step))


def test_hashing_the_renamed_primary_key_is_rejected_too(orders: DataFrame) -> None:
    job = steps({"op": "rename", "columns": {"order_id": "id"}}, {"op": "hash", "columns": ["id"]})
    with pytest.raises(ExtractionError, match=r"#2 \(hash\) would hash the primary-key column 'id'"):
        transform(orders, job)


def test_steps_chain_in_order(orders: DataFrame) -> None:
    job = steps(
        {"op": "function", "name": "shop.normalise_email"},
        {"op": "filter", "condition": "email is not null"},
        {"op": "derive", "columns": {"email_domain": "substring_index(email, '@', -1)"}},
        {"op": "hash", "columns": ["email"]},
        {"op": "mask", "columns": {"phone": {"keep_last": 2}}},
        {"op": "rename", "columns": {"order_id": "id"}},
        {"op": "select", "columns": ["id", "email", "email_domain", "phone", "updated_at", "deleted_at"]},
    )
    out, keys = apply_transforms(orders, job)
    assert keys.primary_key == ("id",)
    assert rows(out.select("id", "email", "email_domain", "phone")) == [
        (1, hashlib.sha256(b"ann@example.com").hexdigest(), "example.com", "********67"),
        (3, hashlib.sha256(b"bob@example.com").hexdigest(), "example.com", "12"),
    ]
