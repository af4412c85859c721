"""Parsing and validating click events in Spark: every malformed kind gets its own reason.

A small local Spark session, no services.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.clickstream.events import (
    classify_events,
    dead_letters,
    valid_events,
    with_funnel_stage,
    with_future_check,
    with_late_flag,
    with_window,
)
from spotlake_dev.clickgen.behaviour import ClickStream, StreamConfig
from spotlake_dev.clickgen.events import VALID, classify
from spotlake_dev.clickgen.rate import ConstantRate

pytestmark = pytest.mark.spark

START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
VALID_EVENT = {
    "schema_version": 1,
    "event_id": "1eb20109-a91c-4439-95ab-000000000000",
    "event_time": 1714521607500,
    "user_id": "u0000014",
    "session_id": "796f74adfaf55496",
    "session_seq": 4,
    "event_type": "page_view",
    "page": "/product/p01350",
    "element": None,
    "referrer": "/product/p00224",
    "device": "mobile",
    "country": "IN",
}
RECORDS = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("kafka_topic", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("kafka_timestamp_ms", LongType()),
    ]
)


def event(**changes: object) -> str:
    body = {**VALID_EVENT, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not _ABSENT}, separators=(",", ":"))


_ABSENT = object()


def records(spark: SparkSession, values: list[str | bytes | None]) -> DataFrame:
    rows = [
        (b"u1", v.encode() if isinstance(v, str) else v, "clicks", 0, offset, START_MS + offset)
        for offset, v in enumerate(values)
    ]
    return spark.createDataFrame(rows, RECORDS)


def reasons(spark: SparkSession, values: list[str | bytes | None]) -> list[tuple[str | None, str | None]]:
    out = records(spark, values).transform(classify_events).orderBy("kafka_offset")
    return [(row["reason"], row["detail"]) for row in out.select("reason", "detail").collect()]


CASES = [
    # (value, reason, words the detail must contain)
    (event(), None, None),
    (event(element="add-to-cart:p1", referrer=None), None, None),
    (json.dumps({k: v for k, v in VALID_EVENT.items() if k not in ("element", "referrer")}), None, None),
    (" \n" + event() + "\t ", None, None),
    (event()[:-1], "bad_json", "not one JSON object"),
    (event()[: event().rindex(",")], "bad_json", "not one JSON object"),
    ("[" + event() + "]", "bad_json", "not one JSON object"),
    ("42", "bad_json", "not one JSON object"),
    ("null", "bad_json", "not one JSON object"),
    ("", "bad_json", "empty value"),
    (None, "bad_json", "no value"),
    (b"\xff\xfe{", "bad_json", "not one JSON object"),
    (event(country=_ABSENT), "missing_field", "missing or null: country"),
    (event(event_time=None), "missing_field", "missing or null: event_time"),
    (event(user_id=_ABSENT, session_id=_ABSENT), "missing_field", "user_id, session_id"),
    (event(event_time="2024-05-01T00:00:07.500Z"), "wrong_type", "event_time (expected integer)"),
    (event(schema_version="1"), "wrong_type", "schema_version (expected integer)"),
    (event(session_seq="4"), "wrong_type", "session_seq (expected integer)"),
    (event(session_seq=4.5), "wrong_type", "session_seq (expected integer)"),
    (event(session_seq=2**31), "wrong_type", "session_seq (expected integer)"),
    (event(user_id=14), "wrong_type", "user_id (expected string)"),
    (event(page={"path": "/"}), "wrong_type", "page (expected string)"),
    (event(element=7), "wrong_type", "element (expected string)"),
    (event(device=True), "wrong_type", "device (expected string)"),
    (event(schema_version=2), "unknown_schema_version", "schema_version 2"),
    (event(schema_version=0), "unknown_schema_version", "schema_version 0"),
    # A key-like text inside a string value is escaped and does not pass for the key.
    (event(user_id=14, page='/x,"user_id":"y'), "wrong_type", "user_id (expected string)"),
]


def test_each_malformed_kind_has_its_reason_and_detail(spark: SparkSession) -> None:
    got = reasons(spark, [value for value, _, _ in CASES])
    for (value, reason, words), (got_reason, got_detail) in zip(CASES, got, strict=True):
        assert got_reason == reason, (value, got_detail)
        if words is None:
            assert got_detail is None
        else:
            assert words in got_detail, (value, got_detail)


def test_agrees_with_the_generators_classification_on_a_seeded_stream(spark: SparkSession) -> None:
    stream = ClickStream(StreamConfig(seed=5, start_ms=START_MS, users=200, malformed_fraction=0.2), ConstantRate(100.0))
    values = [value for _, value, _, _ in stream.records(count=2000)]
    got = reasons(spark, values)
    expected = [classify(v) for v in values]
    assert [r or VALID for r, _ in got] == expected
    assert {kind for kind in expected} == {VALID, "bad_json", "missing_field", "wrong_type", "unknown_schema_version"}


def test_valid_events_are_typed_and_dead_letters_keep_raw_bytes(spark: SparkSession) -> None:
    classified = records(spark, [event(), event()[:20]]).transform(classify_events)
    (good,) = classified.transform(valid_events).collect()
    assert good["event_time_ms"] == 1714521607500 and good["session_seq"] == 4 and good["element"] is None
    assert good["event_time"] == datetime.fromtimestamp(1714521607.5)  # PySpark gives local naive time
    assert good["kafka_offset"] == 0 and good["kafka_timestamp_ms"] == START_MS
    (bad,) = classified.transform(dead_letters).collect()
    assert bytes(bad["value"]) == event()[:20].encode() and bytes(bad["key"]) == b"u1"
    assert (bad["reason"], bad["kafka_topic"], bad["kafka_partition"], bad["kafka_offset"]) == ("bad_json", "clicks", 0, 1)


def test_window_funnel_and_late_flag(spark: SparkSession) -> None:
    values = [
        event(event_time=START_MS + 59_999, session_seq=0, page="/", event_type="page_view"),
        event(event_time=START_MS + 60_000, event_type="page_view", page="/product/p00001"),
        event(event_time=START_MS - 1, event_type="add_to_cart", page="/product/p00001"),
        event(event_time=START_MS + 3_600_000, event_type="click", page="/"),
    ]
    out = (
        records(spark, values)
        .transform(classify_events)
        .transform(valid_events)
        .transform(with_window(60))
        .transform(with_funnel_stage)
        .transform(with_late_flag(START_MS))
        .orderBy("kafka_offset")
        .collect()
    )
    assert [r["window_start_ms"] for r in out] == [START_MS, START_MS + 60_000, START_MS - 60_000, START_MS + 3_600_000]
    assert [r["funnel_stage"] for r in out] == ["session_start", "product_view", "add_to_cart", None]
    assert [r["is_late"] for r in out] == [False, False, True, False]


def test_an_event_far_ahead_of_its_kafka_timestamp_is_a_dead_letter_that_names_the_skew(spark: SparkSession) -> None:
    # Kafka timestamps are START_MS + offset; the allowed skew is 300 s.
    values = [
        event(event_time=START_MS + 300_000),  # exactly the skew ahead: valid
        event(event_time=START_MS + 1 + 300_001),  # 1 ms more than the skew: future
        event(event_time=START_MS + 86_400_000),  # a day ahead
        event(event_time=START_MS - 86_400_000),  # a day behind: valid (late, not future)
        event(schema_version=2, event_time=START_MS + 86_400_000),  # its first reason stays
    ]
    classified = records(spark, values).transform(classify_events).transform(with_future_check(300))
    out = classified.orderBy("kafka_offset").select("reason", "detail").collect()
    assert [r["reason"] for r in out] == [None, "future_event_time", "future_event_time", None, "unknown_schema_version"]
    assert out[2]["detail"] == (
        "event_time 2024-05-02T00:00:00Z is 86399 s ahead of its Kafka timestamp; max_future_skew is 300 s"
    )
    assert classified.transform(valid_events).count() == 2
    assert sorted(r["reason"] for r in classified.transform(dead_letters).collect()) == [
        "future_event_time",
        "future_event_time",
        "unknown_schema_version",
    ]
