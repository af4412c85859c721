"""The click event schema, version 1, and its JSON form.

An event is one JSON object (UTF-8, no newlines) with these fields, always all
written, in this order:

============== ============== ===========================================================
field          JSON type      meaning
============== ============== ===========================================================
schema_version integer        always ``1``
event_id       string         unique id of the event (UUID text form)
event_time     integer        when the user acted, epoch milliseconds UTC
user_id        string         the user; also the Kafka message key
session_id     string         the visit (16 hex digits), unique per session
session_seq    integer        0-based position of the event within its session
event_type     string         one of :data:`EVENT_TYPES`
page           string         path of the page the event happened on
element        string or null UI element acted on; ``null`` for ``page_view``
referrer       string or null page the user came from (external URL on the landing
                              page, site path after that); ``null`` for direct visits
device         string         one of :data:`DEVICES`
country        string         ISO 3166-1 alpha-2 code
============== ============== ===========================================================

``event_time`` is an integer of epoch milliseconds rather than a formatted string:
it costs nothing to produce and a fixed-schema reader (``LongType`` in Spark,
then ``timestamp_millis(event_time)``) cannot misparse it.

Malformed records (for the dead-letter path) are of the kinds in
:data:`MALFORMED_KINDS`; :func:`classify` tells which kind a record is, or
:data:`VALID`.
"""

from __future__ import annotations

import datetime as dt
import json
import random

SCHEMA_VERSION = 1

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "click",
    "search",
    "add_to_cart",
    "checkout",
    "purchase",
)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")

# Field name -> (accepted Python types after json.loads, may be null).
# ``bool`` is excluded from integers on purpose: classify() compares exact types.
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema_version": ((int,), False),
    "event_id": ((str,), False),
    "event_time": ((int,), False),
    "user_id": ((str,), False),
    "session_id": ((str,), False),
    "session_seq": ((int,), False),
    "event_type": ((str,), False),
    "page": ((str,), False),
    "element": ((str,), True),
    "referrer": ((str,), True),
    "device": ((str,), False),
    "country": ((str,), False),
}

# The fields that may not be absent or null.
REQUIRED: tuple[str, ...] = tuple(name for name, (_, nullable) in FIELDS.items() if not nullable)

VALID = "valid"
BAD_JSON = "bad_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
MALFORMED_KINDS: tuple[str, ...] = (BAD_JSON, MISSING_FIELD, WRONG_TYPE, UNKNOWN_SCHEMA_VERSION)

# The schema_version written into records of kind UNKNOWN_SCHEMA_VERSION.
FUTURE_SCHEMA_VERSION = 2

# Numeric fields that WRONG_TYPE records carry as strings instead; a fixed-schema
# reader (Spark LongType/IntegerType) turns each of them into null.
WRONG_TYPE_FIELDS: tuple[str, ...] = ("event_time", "schema_version", "session_seq")


def encode(text: str | None) -> str:
    """The JSON text of a string (or ``null``), for building records piece by piece."""
    return json.dumps(text, ensure_ascii=False)


def classify(record: str | bytes) -> str:
    """Return :data:`VALID` or the malformed kind of one record.

    The checks run in this order, and the first that fails names the kind:
    the record must parse as a JSON object (else :data:`BAD_JSON`); every
    non-nullable field of :data:`FIELDS` must be present and not null (else
    :data:`MISSING_FIELD`); every value present must have its JSON type (else
    :data:`WRONG_TYPE`); ``schema_version`` must be :data:`SCHEMA_VERSION`
    (else :data:`UNKNOWN_SCHEMA_VERSION`). An absent nullable field counts as
    null, as it does for a reader with a fixed schema.
    """
    try:
        obj = json.loads(record)
    except (ValueError, UnicodeDecodeError):
        return BAD_JSON
    if not isinstance(obj, dict):
        return BAD_JSON
    for name in REQUIRED:
        if obj.get(name) is None:
            return MISSING_FIELD
    for name, (types, _) in FIELDS.items():
        value = obj.get(name)
        if value is not None and type(value) not in types:
            return WRONG_TYPE
    if obj["schema_version"] != SCHEMA_VERSION:
        return UNKNOWN_SCHEMA_VERSION
    return VALID


def iso_millis(epoch_ms: int) -> str:
    """``epoch_ms`` as ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.250Z``."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def malform(record: str, kind: str, rng: random.Random) -> str:
    """Turn a valid ``record`` into a malformed one of ``kind``.

    - :data:`BAD_JSON`: the record cut short at a random point at or before the comma
      in front of its last field (never valid JSON, and even a lenient reader that
      keeps what it parsed misses the last field, ``country``);
    - :data:`MISSING_FIELD`: one of the :data:`REQUIRED` fields, chosen at random, removed;
    - :data:`WRONG_TYPE`: one of :data:`WRONG_TYPE_FIELDS` written as a string;
    - :data:`UNKNOWN_SCHEMA_VERSION`: ``schema_version`` set to :data:`FUTURE_SCHEMA_VERSION`.
    """
    if kind == BAD_JSON:
        return record[: rng.randint(1, record.rindex(","))]
    obj = json.loads(record)
    if kind == MISSING_FIELD:
        del obj[rng.choice(REQUIRED)]
    elif kind == WRONG_TYPE:
        name = rng.choice(WRONG_TYPE_FIELDS)
        obj[name] = iso_millis(obj[name]) if name == "event_time" else str(obj[name])
    elif kind == UNKNOWN_SCHEMA_VERSION:
        obj["schema_version"] = FUTURE_SCHEMA_VERSION
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
