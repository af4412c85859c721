"""The registry's items through boto3's serializers (spotlake.dynamo_items): every item type round-trips,
and what goes over the wire is what the registry's own encoder wrote before, so the items already in a
deployment's tables read back as they were written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields, replace
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spotlake.dynamo_items import attribute_value, attribute_values, from_item, item_values, python_value, to_item
from spotlake.registry import POOL_ITEM, Cluster, ClusterState, Job, JobState, Registry, SessionSlot


# ---------------------------------------------------------------------------------------------------------------
# REFERENCE FIXTURE: the previous item format. This is spotlake.registry's own encoder and decoder as they were
# before the registry used boto3's TypeSerializer / TypeDeserializer, copied unchanged. Items in running
# deployments were written by it; do not "fix" it.
def _previous_to_item(obj: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        item[f.name] = _previous_av(value)
    return item


def _previous_av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, dict):
        return {"M": {k: _previous_av(v) for k, v in value.items()}}
    return {"S": str(value)}


def _previous_from_av(av: dict[str, Any]) -> Any:
    if "S" in av:
        return av["S"]
    if "N" in av:
        text = av["N"]
        return float(text) if any(c in text for c in ".eE") else int(text)
    if "BOOL" in av:
        return av["BOOL"]
    if "M" in av:
        return {k: _previous_from_av(v) for k, v in av["M"].items()}
    if "NULL" in av:
        return None
    raise ValueError(f"unsupported DynamoDB attribute {av}")


def _previous_from_item(cls: type, item: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: _previous_from_av(v) for k, v in item.items() if k in names})


# ------------------------------------------------------------------------------------- end of the previous format


ITEMS: list[Any] = [
    # as first written (defaults: "" strings, 0 and -1 numbers)
    Cluster(pool="small", cluster_id="small-0001", provider="local", state=ClusterState.LAUNCHING),
    Cluster(
        pool="large",
        cluster_id="large-0042",
        provider="emr",
        state=ClusterState.DRAINING,
        endpoint="http://10.0.3.17:8998",
        launched_at="2026-11-27T14:00:00.123+00:00",
        updated_at="2026-11-27T20:02:11.456+00:00",
        reason="replaced by large-0043",
        version=7,
        provider_id="j-2AXXXXXXGAPLF",
        generation=42,
        replaces="large-0041",
        failures=2,
        last_failure="unreachable: Livy at http://10.0.3.17:8998 did not answer – ‘timeout’ ✓",
        drain_started_at="2026-11-27T20:02:11.456+00:00",
    ),
    Cluster(pool="small", cluster_id="small-0002", provider="local", state="DEAD", version=3),  # a plain str state
    Job(job_key="orders#20261127T140000Z", pool="small", state=JobState.SUBMITTED),
    Job(
        job_key="orders#20261127T140000Z",
        pool="small",
        state=JobState.REQUEUED,
        attempt=3,
        cluster_id="small-0001",
        endpoint="http://127.0.0.1:18998",
        batch_id=0,
        run_id="5f0c0ffee",
        moves=2,
        submitted_at="2026-11-27T14:05:00.000+00:00",
        updated_at="2026-11-27T14:06:00.000+00:00",
        reason="cluster small-0001 DEAD: 3 consecutive failed health checks",
        version=12,
        session_id=4,
        statement_id=17,
        slot="1",
    ),
    Job(job_key="clicks", pool="large", state=JobState.FAILED, batch_id=123456789012, reason=""),
    SessionSlot(cluster_id="small-0001", slot="0", pool="small"),
    SessionSlot(
        cluster_id="small-0001",
        slot="3",
        pool="small",
        endpoint="http://127.0.0.1:18998",
        session_id=0,
        code_version="9c1d4e" * 10,
        statements=41,
        started_at="2026-11-27T14:00:00.000+00:00",
        lease_job="orders#20261127T140000Z",
        lease_run="5f0c0ffee",
        leased_at="2026-11-27T14:05:00.000+00:00",
        updated_at="2026-11-27T14:05:00.000+00:00",
        reason="ran 50 statements",
        version=99,
    ),
]

# Values the registry writes in updates and expressions (update_job(**changes), conditions, the pool item).
VALUES: list[Any] = [
    "",
    "READY",
    "naïve – ✓",
    ClusterState.READY,
    JobState.REQUEUED,
    0,
    1,
    -1,
    7,
    2**53,
    True,
    False,
    0.5,
    2.25,
    -1.5,
    1234.5678,
    0.1,
    {},
    {"a": 1, "b": {"c": "x", "d": False}, "e": 1.5, "f": JobState.FAILED},
]


def _plain_strings(value: Any) -> Iterator[type]:
    """The type of every string in an attribute value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "S":
                yield type(inner)
            else:
                yield from _plain_strings(inner)


@pytest.mark.parametrize("obj", ITEMS, ids=lambda o: f"{type(o).__name__}-{o.version}")
def test_items_go_over_the_wire_as_before(obj: Any) -> None:
    item = to_item(obj)
    assert item == _previous_to_item(obj)
    assert json.dumps(item, sort_keys=True) == json.dumps(_previous_to_item(obj), sort_keys=True)
    assert set(_plain_strings(item)) <= {str}, "an enum member must go out as its plain value"


@pytest.mark.parametrize("obj", ITEMS, ids=lambda o: f"{type(o).__name__}-{o.version}")
def test_items_round_trip_with_their_field_types(obj: Any) -> None:
    back = from_item(type(obj), to_item(obj))
    assert back == obj
    for f in fields(obj):
        if f.type.endswith("| None") and getattr(obj, f.name) is None:
            assert getattr(back, f.name) is None, f"{type(obj).__name__}.{f.name}"  # not stored, read back as absent
            continue
        expected = int if f.type.startswith("int") else str
        assert type(getattr(back, f.name)) is expected, f"{type(obj).__name__}.{f.name}"


@pytest.mark.parametrize("obj", ITEMS, ids=lambda o: f"{type(o).__name__}-{o.version}")
def test_items_in_the_previous_format_read_back_identically(obj: Any) -> None:
    stored = _previous_to_item(obj)
    assert from_item(type(obj), stored) == _previous_from_item(type(obj), stored) == obj


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_go_over_the_wire_as_before(value: Any) -> None:
    assert attribute_value(value) == _previous_av(value)
    assert set(_plain_strings(attribute_value(value))) <= {str}
    assert python_value(attribute_value(value)) == _previous_from_av(_previous_av(value)) == value


def test_expression_values_and_keys_as_before() -> None:
    values = {":one": 1, ":v": 12, ":from": ClusterState.READY, ":reason": "rotation", ":empty": ""}
    assert attribute_values(values) == {k: _previous_av(v) for k, v in values.items()}
    assert attribute_values({"pool": "small", "cluster_id": POOL_ITEM}) == {"pool": {"S": "small"}, "cluster_id": {"S": "#pool"}}


def test_numbers_read_back_as_int_or_float() -> None:
    for text, expected in (("0", 0), ("-1", -1), ("123456789012", 123456789012), ("1.5", 1.5), ("-0.25", -0.25)):
        value = python_value({"N": text})
        assert value == expected and type(value) is type(expected), text
    # DynamoDB stores numbers canonically: 2.0 is read back as 2 (as the previous decoder got it from DynamoDB).
    assert python_value({"N": "2.0"}) == 2 and type(python_value({"N": "2.0"})) is int
    assert item_values({"active": {"S": "small-0001"}, "version": {"N": "4"}}) == {"active": "small-0001", "version": 4}


def test_floats_outside_plain_notation_are_the_same_number() -> None:
    """repr writes 1e-05 where boto3 writes 0.00001: other text, the same DynamoDB number. (No registry field
    holds a float; this is what an update of one would write.)"""
    for value in (1e-05, 1e20, 3.0e-7):
        assert Decimal(attribute_value(value)["N"]) == Decimal(_previous_av(value)["N"])
        assert python_value(attribute_value(value)) == value


def test_what_the_previous_encoder_stringified_now_has_its_dynamodb_type() -> None:
    """None, lists and sets, which no registry field holds, were written as their str() before."""
    assert attribute_value(None) == {"NULL": True}
    assert attribute_value(["a", 1]) == {"L": [{"S": "a"}, {"N": "1"}]}
    assert attribute_value({"x": None}) == {"M": {"x": {"NULL": True}}}
    assert python_value({"NULL": True}) is None


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        yield reg


def test_items_written_in_the_previous_format_read_back_through_the_registry(registry: Registry) -> None:
    client = registry.client
    for obj in ITEMS:
        if isinstance(obj, Job) and not obj.cluster_id:
            # The jobs table never held a job without a cluster (claim_job gives it one), and its
            # index by-cluster refuses an empty key.
            obj = replace(obj, cluster_id="small-0001")
        table = {Cluster: registry.clusters_table, Job: registry.jobs_table, SessionSlot: registry.sessions_table}[type(obj)]
        client.put_item(TableName=table, Item=_previous_to_item(obj))
        if isinstance(obj, Cluster):
            assert registry.get_cluster(obj.pool, obj.cluster_id) == obj
        elif isinstance(obj, Job):
            assert registry.get_job(obj.job_key) == obj
        else:
            assert registry.get_slot(obj.cluster_id, obj.slot) == obj


def test_items_written_now_are_stored_as_the_previous_format_stored_them(registry: Registry) -> None:
    cluster = Cluster(pool="small", cluster_id="small-0001", provider="local", state="", generation=1)
    registry.put_launching(cluster)
    registry.mark_ready(cluster, "http://e")
    registry.update_cluster(cluster, failures=2, last_failure="unreachable")
    job = registry.claim_job("orders#w1", "small", cluster, "run1", expected=None, slot="0")
    registry.update_job(job, batch_id=7, state=JobState.SUCCEEDED)
    slot = registry.lease_slot(SessionSlot(cluster_id="small-0001", slot="0", pool="small"), None, "orders#w1", "run1")
    registry.update_slot(slot, session_id=3, statements=1)
    stored = {
        "cluster": registry.client.get_item(
            TableName=registry.clusters_table, Key={"pool": {"S": "small"}, "cluster_id": {"S": "small-0001"}}
        )["Item"],
        "job": registry.client.get_item(TableName=registry.jobs_table, Key={"job_key": {"S": "orders#w1"}})["Item"],
        "slot": registry.client.get_item(
            TableName=registry.sessions_table, Key={"cluster_id": {"S": "small-0001"}, "slot": {"S": "0"}}
        )["Item"],
    }
    assert stored["cluster"] == _previous_to_item(cluster)
    assert stored["job"] == _previous_to_item(job)
    assert stored["slot"] == _previous_to_item(slot)
    assert (cluster.state, cluster.version, job.version, slot.version) == (ClusterState.READY, 3, 2, 2)
