"""Click events of schema version 1 (docs/events.md): parse, validate, window, funnel.

Pure DataFrame transformations, chained with ``df.transform``:

- :func:`kafka_records`: the Kafka source's rows as ``key``, ``value`` and the
  record's coordinates (``kafka_topic``, ``kafka_partition``, ``kafka_offset``,
  ``kafka_timestamp_ms``);
- :func:`classify_events`: adds ``reason`` (null for a valid event) and ``detail``,
  and the event's typed fields. The checks run in the order of
  ``spotlake_dev.clickgen.events.classify``, the first failing one naming the reason:

  ================== ===========================================================
  ``bad_json``        the value is not one JSON object (empty, cut short, an array)
  ``missing_field``   a non-nullable field is absent or null
  ``wrong_type``      a field has another JSON type than the schema's (a string
                      where an integer belongs, a number where a string belongs, an
                      integer out of the Spark type's range)
  ``unknown_schema_version``  a well-formed event whose ``schema_version`` is not 1
  ================== ===========================================================

- :func:`with_future_check`: turns a valid event whose time is further ahead of its Kafka
  timestamp than the allowed skew into a dead letter (``future_event_time``): one clock
  gone wrong must not move the watermark and make a window's real events late;
- :func:`valid_events`, :func:`dead_letters`: the two sides of that split;
- :func:`with_window`, :func:`with_funnel_stage`;
- :func:`batch_summary`: all a micro-batch adds to the sink, in one aggregation.

How the JSON types are checked with Spark's own parser: the value is parsed twice,
once with every field as a string (``raw``: tells present from absent or null, and
catches records that are not JSON objects through ``_corrupt_record``) and once
with the schema's types (``typed``: a string or a fraction where an integer belongs
comes out null). Spark's parser turns any JSON value into a string for a string
field, so for those the value text itself is checked: the field's key must be
followed by a JSON string (an opening quote). Inside a JSON string every quote is
escaped, so that pattern can only match a real key. One regular expression finds all
such keys in one pass over the text (:data:`STRING_KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame
from pyspark.sql.types import LongType, StringType, StructField, StructType

SCHEMA_VERSION = 1
BAD_JSON = "bad_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
FUTURE_EVENT_TIME = "future_event_time"
REASONS = (BAD_JSON, MISSING_FIELD, WRONG_TYPE, UNKNOWN_SCHEMA_VERSION, FUTURE_EVENT_TIME)

# field -> (JSON type, Spark type name of the valid event's column, nullable)
FIELDS: dict[str, tuple[str, str, bool]] = {
    "schema_version": ("integer", "int", False),
    "event_id": ("string", "string", False),
    "event_time": ("integer", "long", False),
    "user_id": ("string", "string", False),
    "session_id": ("string", "string", False),
    "session_seq": ("integer", "int", False),
    "event_type": ("string", "string", False),
    "page": ("string", "string", False),
    "element": ("string", "string", True),
    "referrer": ("string", "string", True),
    "device": ("string", "string", False),
    "country": ("string", "string", False),
}
REQUIRED = tuple(name for name, (_, _, nullable) in FIELDS.items() if not nullable)
INT_RANGE = (-(2**31), 2**31 - 1)
CORRUPT = "_corrupt_record"
BARRIER = "_barrier"

KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_ms")
EVENT_COLUMNS = (
    "schema_version",
    "event_id",
    "event_time_ms",
    "user_id",
    "session_id",
    "session_seq",
    "event_type",
    "page",
    "element",
    "referrer",
    "device",
    "country",
)

FUNNEL_STAGES = ("session_start", "product_view", "add_to_cart", "checkout", "purchase")

RAW_SCHEMA = StructType([StructField(name, StringType()) for name in FIELDS] + [StructField(CORRUPT, StringType())])
TYPED_SCHEMA = StructType(
    [StructField(name, LongType() if json_type == "integer" else StringType()) for name, (json_type, _, _) in FIELDS.items()]
)
JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
# One JSON object, give or take surrounding whitespace (Spark's parser ignores trailing text).
OBJECT_TEXT = r"(?s)^\s*\{.*\}\s*$"


def kafka_records(df: DataFrame) -> DataFrame:
    """Rows of Spark's Kafka source as key, value and the record's Kafka coordinates."""
    return df.select(
        F.col("key"),
        F.col("value"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.unix_millis(F.col("timestamp")).alias("kafka_timestamp_ms"),
    )


STRING_FIELDS = tuple(name for name, (json_type, _, _) in FIELDS.items() if json_type == "string")
# A field's key followed by a JSON string (an opening quote): ``{"page": "`` or ``,"page":"``.
# One pass over the text finds every such key (matches cannot overlap: each ends at a value's
# opening quote and the next starts at a ``{`` or ``,`` outside it).
STRING_KEYS = r'[{,]\s*"(' + "|".join(STRING_FIELDS) + r')"\s*:\s*"'


def _names(conditions: dict[str, Column]) -> Column:
    """The names whose condition holds, comma-separated ("" if none)."""
    return F.concat_ws(", ", *[F.when(condition, F.lit(name)) for name, condition in conditions.items()])


def _wrong_type_conditions(raw: Column, typed: Column, string_keys: Column) -> dict[str, Column]:
    conditions: dict[str, Column] = {}
    for name, (json_type, spark_type, _) in FIELDS.items():
        present = raw[name].isNotNull()
        if json_type == "integer":
            wrong = typed[name].isNull()
            if spark_type == "int":
                wrong = wrong | ~typed[name].between(*INT_RANGE)
        else:
            wrong = ~F.array_contains(string_keys, name)
        conditions[f"{name} (expected {json_type})"] = present & wrong
    return conditions


def classify_events(records: DataFrame) -> DataFrame:
    """Add ``reason`` (null when valid), ``detail`` and the typed event columns to ``records``.

    ``records`` has a binary or string ``value``; every other column is kept.

    Each expensive piece (the two parses, the one regular expression over the text, the
    lists of missing and wrongly typed fields) is computed once, in its own projection,
    and the reason and the detail are read from those columns.
    """
    text = F.col("_text")
    raw, typed = F.col("_raw"), F.col("_typed")
    missing, wrong, not_object = F.col("_missing"), F.col("_wrong"), F.col("_not_object")
    parsed = records.select(
        "*",
        F.from_json(F.col("value").cast("string"), RAW_SCHEMA, JSON_OPTIONS).alias("_raw"),
        F.from_json(F.col("value").cast("string"), TYPED_SCHEMA).alias("_typed"),
        F.col("value").cast("string").alias("_text"),
    )
    # A column of its own: used for each string field, the expression would be repeated in each.
    keyed = parsed.select("*", F.regexp_extract_all(text, F.lit(STRING_KEYS), 1).alias("_string_keys"))
    checked = keyed.select(
        "*",
        (text.isNull() | raw.isNull() | raw[CORRUPT].isNotNull() | ~F.coalesce(text.rlike(OBJECT_TEXT), F.lit(False))).alias(
            "_not_object"
        ),
        _names({name: raw[name].isNull() for name in REQUIRED}).alias("_missing"),
        _names(_wrong_type_conditions(raw, typed, F.col("_string_keys"))).alias("_wrong"),
        # A barrier for the optimizer, see _split.
        F.spark_partition_id().alias(BARRIER),
    )
    version = typed["schema_version"]
    reason = (
        F.when(not_object, F.lit(BAD_JSON))
        .when(missing != "", F.lit(MISSING_FIELD))
        .when(wrong != "", F.lit(WRONG_TYPE))
        .when(version != SCHEMA_VERSION, F.lit(UNKNOWN_SCHEMA_VERSION))
    )
    detail = (
        F.when(F.col("value").isNull(), F.lit("no value (null record)"))
        .when(not_object & (F.trim(text) == ""), F.lit("empty value"))
        .when(not_object, F.lit("not one JSON object (malformed or cut short)"))
        .when(missing != "", F.concat(F.lit("missing or null: "), missing))
        .when(wrong != "", F.concat(F.lit("wrong JSON type: "), wrong))
        .when(
            version != SCHEMA_VERSION,
            F.concat(F.lit("schema_version "), version.cast("string"), F.lit(f"; this job reads {SCHEMA_VERSION}")),
        )
    )
    events = [
        typed[name].cast(spark_type).alias("event_time_ms" if name == "event_time" else name)
        for name, (_, spark_type, _) in FIELDS.items()
    ]
    return checked.select(
        *[F.col(c) for c in records.columns],
        reason.alias("reason"),
        detail.alias("detail"),
        *events,
        F.col(BARRIER),
    )


def with_future_check(max_skew_s: int) -> Callable[[DataFrame], DataFrame]:
    """Make a valid event whose ``event_time`` is more than ``max_skew_s`` ahead of its Kafka
    timestamp (the producer's or broker's clock) a dead letter with reason ``future_event_time``.

    The Kafka timestamp, not the processing clock, is the reference, so the decision is the
    same when a micro-batch is replayed."""
    skew_ms = max_skew_s * 1000

    def transform(classified: DataFrame) -> DataFrame:
        ahead = F.col("event_time_ms") - F.col("kafka_timestamp_ms")
        future = F.col("reason").isNull() & (ahead > F.lit(skew_ms))
        detail = F.concat(
            F.lit("event_time "),
            F.date_format(F.timestamp_millis(F.col("event_time_ms")), "yyyy-MM-dd'T'HH:mm:ss'Z'"),
            F.lit(" is "),
            F.floor(ahead / 1000).cast("string"),
            F.lit(f" s ahead of its Kafka timestamp; max_future_skew is {max_skew_s} s"),
        )
        return classified.withColumn("detail", F.when(future, detail).otherwise(F.col("detail"))).withColumn(
            "reason", F.when(future, F.lit(FUTURE_EVENT_TIME)).otherwise(F.col("reason"))
        )

    return transform


def _split(classified: DataFrame, valid: bool) -> DataFrame:
    """The valid events (or the others) of ``classified``.

    Spark's optimizer pushes a filter down through projections whose expressions are all
    deterministic, rewriting its condition in terms of what is below: a filter on ``reason``
    would end up beneath the parses and checks with every one of them inlined into its
    condition, so each record would be parsed there and again in the projections (measured:
    about three times the work). :func:`classify_events` therefore ends its checks with a
    non-deterministic column (``spark_partition_id()``, :data:`BARRIER`), and the filter refers
    to it, so that the filter stops right above the checks and reads their results.
    """
    reason = F.col("reason").isNull() if valid else F.col("reason").isNotNull()
    return classified.filter(reason & (F.col(BARRIER) >= 0))


def valid_events(classified: DataFrame) -> DataFrame:
    """The valid events, typed, with ``event_time`` as a timestamp and their Kafka coordinates."""
    return _split(classified, valid=True).select(
        *[F.col(c) for c in EVENT_COLUMNS],
        F.timestamp_millis(F.col("event_time_ms")).alias("event_time"),
        *[F.col(c) for c in KAFKA_COLUMNS],
    )


def dead_letters(classified: DataFrame) -> DataFrame:
    """The records that are not valid events: raw key and value, reason, detail, coordinates
    (and the Kafka timestamp as a timestamp, the lake table's partition source)."""
    return _split(classified, valid=False).select(
        *[F.col(c) for c in KAFKA_COLUMNS],
        F.timestamp_millis(F.col("kafka_timestamp_ms")).alias("kafka_timestamp"),
        F.col("key").cast("binary").alias("key"),
        F.col("value").cast("binary").alias("value"),
        F.col("reason"),
        F.col("detail"),
    )


def with_window(window_s: int) -> Callable[[DataFrame], DataFrame]:
    """Add ``window_start_ms``: the start of the event-time window (tumbling, ``window_s`` long)."""
    window_ms = window_s * 1000

    def transform(events: DataFrame) -> DataFrame:
        ms = F.col("event_time_ms")
        return events.withColumn("window_start_ms", ms - F.pmod(ms, F.lit(window_ms)))

    return transform


def with_funnel_stage(events: DataFrame) -> DataFrame:
    """Add ``funnel_stage``: the funnel stage an event reaches, or null.

    ``session_start`` (the first event of a session), ``product_view`` (a page view
    of a product page), ``add_to_cart``, ``checkout``, ``purchase``.
    """
    event_type = F.col("event_type")
    stage = (
        F.when(F.col("session_seq") == 0, F.lit("session_start"))
        .when((event_type == "page_view") & F.col("page").startswith("/product/"), F.lit("product_view"))
        .when(event_type.isin("add_to_cart", "checkout", "purchase"), event_type)
    )
    return events.withColumn("funnel_stage", stage)


def with_late_flag(watermark_ms: int | None) -> Callable[[DataFrame], DataFrame]:
    """Add ``is_late``: the event's time is behind ``watermark_ms`` (never late without one)."""

    def transform(events: DataFrame) -> DataFrame:
        if watermark_ms is None:
            return events.withColumn("is_late", F.lit(False))
        return events.withColumn("is_late", F.col("event_time_ms") < F.lit(watermark_ms))

    return transform


PARTITION_GROUP, WINDOW_GROUP = "partition", "window"
DEAD_LETTER_COLUMNS = (*KAFKA_COLUMNS, "key", "value", "reason", "detail")
LATE_EVENT_COLUMNS = (
    *KAFKA_COLUMNS,
    "event_id",
    "event_time_ms",
    "window_start_ms",
    "page",
    "event_type",
    "user_id",
    "session_id",
)


def batch_summary(
    classified: DataFrame, window_s: int, watermark_ms: int | None, late_policy: str, final_before_ms: int | None = None
) -> DataFrame:
    """Everything a micro-batch adds to the sink, in ONE aggregation: one read of the batch,
    one shuffle, no cache.

    Every record is grouped twice (grouping sets, written out with ``explode``):

    - ``group = 'partition'``, per ``kafka_topic`` and ``kafka_partition``: ``max_offset``,
      ``records``, ``valid``, ``late`` (valid events behind ``watermark_ms``),
      ``max_event_time_ms`` (of valid events), and as lists the ``dead_letters``
      (:data:`DEAD_LETTER_COLUMNS`) and the ``late_events`` (:data:`LATE_EVENT_COLUMNS`);
    - ``group = 'window'``, for counted events only (valid events of a window starting after
      ``final_before_ms``, the sink's final-window horizon; under ``divert`` also not late), per ``window_start_ms``, ``page`` and
      ``event_type``: ``events``, ``late_count``, the distinct ``users`` and ``sessions``
      (arrays), ``<stage>_events`` for each funnel stage, and ``funnel_sessions``: the
      distinct (``stage``, ``session_id``) pairs.
    """
    events = (
        classified.withColumn("key", F.col("key").cast("binary"))
        .withColumn("value", F.col("value").cast("binary"))
        .transform(with_window(window_s))
        .transform(with_funnel_stage)
        .transform(with_late_flag(watermark_ms))
    )
    valid = F.col("reason").isNull()
    late = valid & F.coalesce(F.col("is_late"), F.lit(False))
    counted = valid & ~late if late_policy == "divert" else valid
    if final_before_ms is not None:
        counted = counted & (F.col("window_start_ms") > F.lit(final_before_ms))
    group = F.col("group")
    in_partition, in_window = group == PARTITION_GROUP, group == WINDOW_GROUP
    stage = F.col("funnel_stage")

    def partition_only(column: str) -> Column:
        return F.when(in_partition, F.col(column)).alias(column)

    def window_only(column: str) -> Column:
        return F.when(in_window, F.col(column)).alias(column)

    def count_if(condition: Column) -> Column:
        return F.count(F.when(condition, F.lit(1)))

    return (
        events.withColumn("group", F.explode(F.array(F.lit(PARTITION_GROUP), F.lit(WINDOW_GROUP))))
        .filter(in_partition | counted)
        .groupBy(
            group,
            *[partition_only(c) for c in ("kafka_topic", "kafka_partition")],
            *[window_only(c) for c in ("window_start_ms", "page", "event_type")],
        )
        .agg(
            F.max(F.when(in_partition, F.col("kafka_offset"))).alias("max_offset"),
            count_if(in_partition).alias("records"),
            count_if(in_partition & valid).alias("valid"),
            count_if(in_partition & late).alias("late"),
            F.max(F.when(in_partition & valid, F.col("event_time_ms"))).alias("max_event_time_ms"),
            F.collect_list(F.when(in_partition & ~valid, F.struct(*DEAD_LETTER_COLUMNS))).alias("dead_letters"),
            F.collect_list(F.when(in_partition & late, F.struct(*LATE_EVENT_COLUMNS))).alias("late_events"),
            count_if(in_window).alias("events"),
            count_if(in_window & late).alias("late_count"),
            F.collect_set(F.when(in_window, F.col("user_id"))).alias("users"),
            F.collect_set(F.when(in_window, F.col("session_id"))).alias("sessions"),
            *[count_if(in_window & (stage == name)).alias(f"{name}_events") for name in FUNNEL_STAGES],
            F.collect_set(
                F.when(in_window & stage.isNotNull(), F.struct(stage.alias("stage"), F.col("session_id").alias("session_id")))
            ).alias("funnel_sessions"),
        )
    )
