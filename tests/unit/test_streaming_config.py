"""config/streaming.yaml validation, and the job document it turns into (no services)."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.clickstream.job import StreamJob
from spark_jobs.common.errors import StreamingError
from spotlake import config, pools, streaming
from spotlake.errors import ConfigError
from tests.support.stream_configs import BASE, PATH, parse


def error(raw: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        streaming.parse(raw, PATH)
    return str(raised.value)


def stream_error(**changes: Any) -> str:
    raw = copy.deepcopy(BASE)
    raw["streams"]["clicks"].update(changes)
    return error(raw)


def test_the_projects_file_is_valid_and_its_pool_serves_it() -> None:
    config = streaming.load()
    clicks = config.get("clicks")
    assert clicks.pool == "large" and clicks.topics == ("clicks",)
    assert clicks.trigger_interval == timedelta(seconds=10) and clicks.window == timedelta(minutes=1)
    assert clicks.restart_budget == streaming.RestartBudget(5, timedelta(hours=1))
    streaming.check_pools(pools.load(provider="local"), config)


def test_defaults_apply_and_a_stream_overrides_them() -> None:
    stream = parse(late_policy="divert", watermark_delay="2m").get("clicks")
    assert stream.trigger_interval == timedelta(seconds=5)  # from defaults
    assert stream.allowed_lateness == timedelta(days=1)  # built-in default
    assert stream.max_future_skew == timedelta(minutes=5)
    assert parse(allowed_lateness="2h").get("clicks").allowed_lateness == timedelta(hours=2)
    assert stream.late_policy == "divert" and stream.watermark_delay == timedelta(minutes=2)
    assert stream.max_offsets_per_trigger == 50000 and stream.starting_offsets == "earliest"
    assert stream.lake == streaming.StreamLakeTables("clicks", "events", "dead_letters")
    assert parse(lake={"namespace": "c", "dead_letters": None}).get("clicks").lake == streaming.StreamLakeTables(
        "c", "events", None
    )
    assert stream.dag_id == "stream_clicks" and stream.job_key == "clicks" and stream.query_name == "clicks"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"topics": []}, "streams.clicks.topics: expected a list of Kafka topic names"),
        ({"topics": ["bad topic"]}, "'bad topic' is not a Kafka topic name"),
        ({"topics": ["a", "a"]}, "names a topic twice"),
        ({"sink": {"schema": "x"}}, "streams.clicks.sink.secret_id: expected a Secrets Manager secret id"),
        ({"sink": {"secret_id": "s", "schema": "Bad-Name"}}, "sink.schema: 'Bad-Name' is not a lower-case"),
        ({"sink": {"secret_id": "s", "password": "x"}}, "unknown key(s) password"),
        ({"checkpoint": "bucket/path"}, "checkpoint: 'bucket/path' is not a URI"),
        ({"trigger_interval": "31s"}, "trigger_interval: 31s is longer than 30s"),
        ({"trigger_interval": "soon"}, "'soon' is not a duration"),
        (
            {"lake": "s3a://lake/clicks/events"},
            "lake: 's3a://lake/clicks/events' is a path, but the stream's lake is now Iceberg tables",
        ),
        ({"lake": {"events": "e"}}, "lake.namespace: required"),
        ({"lake": {"namespace": "c", "path": "x"}}, "unknown key(s) path"),
        ({"lake": {"namespace": "bad name"}}, "lake.namespace"),
        ({"max_future_skew": "soon"}, "max_future_skew: 'soon' is not a duration"),
        ({"window": "0s"}, "window: 0s is not between 1s and 1d"),
        ({"late_policy": "drop"}, "late_policy: 'drop' is not one of count, divert"),
        ({"allowed_lateness": "forever"}, "allowed_lateness: 'forever' is not a duration"),
        ({"max_offsets_per_trigger": 0}, "max_offsets_per_trigger: expected a whole number >= 1"),
        ({"starting_offsets": "beginning"}, "expected earliest, latest, or a mapping"),
        ({"restart_budget": {"restarts": 0}}, "restart_budget.restarts: expected a whole number >= 1"),
        ({"restart_budget": {"restarts": 3, "every": "1h"}}, "unknown key(s) every"),
        ({"spark_conf": {"jars": "x"}}, "'jars' is not a Spark setting"),
        ({"lakes": "s3a://x"}, "unknown key(s) lakes"),
    ],
)
def test_bad_entries_name_the_file_the_stream_the_key_and_the_fix(changes: dict[str, Any], words: str) -> None:
    message = stream_error(**changes)
    assert str(PATH) in message and words in message


def test_missing_required_keys_and_bad_names() -> None:
    raw = copy.deepcopy(BASE)
    del raw["streams"]["clicks"]["checkpoint"]
    assert "streams.clicks: 'checkpoint' is required" in error(raw)
    raw = copy.deepcopy(BASE)
    raw["streams"] = {"Clicks": raw["streams"]["clicks"]}
    assert "stream names are lower-case" in error(raw)
    assert "'streams' must be a mapping" in error({"streams": {}})
    assert "defaults: unknown key(s) pol" in error({**BASE, "defaults": {"pol": "large"}})
    with pytest.raises(ConfigError, match="no stream named 'views'; defined streams: clicks"):
        parse().get("views")


def test_pools_must_serve_the_stream() -> None:
    config = parse(pool="small")
    with pytest.raises(ConfigError, match="pools.small.serves.streams does not list it; add 'clicks'"):
        streaming.check_pools(pools.load(provider="local"), config)
    with pytest.raises(ConfigError, match="pool 'huge' is not defined"):
        streaming.check_pools(pools.load(provider="local"), parse(pool="huge"))


def test_job_document_round_trips_into_the_spark_jobs_contract() -> None:
    stream = parse(
        starting_offsets={"clicks": {"0": 5}},
        max_future_skew="90s",
        spark_conf={"spark.jars": "s3://jars/kafka.jar", "spark.speculation": False},
    ).get("clicks")
    assert stream.spark_conf == {"spark.jars": "s3://jars/kafka.jar", "spark.speculation": "false"}
    catalog = config.Lake(catalog="lake", type="glue", warehouse="s3://lake/warehouse", secret_id=None)
    document = replace(stream, catalog=catalog).job_document("0123abcd", 2, "b-1:9092,b-2:9092")
    job = StreamJob.from_dict(document)
    assert job.source.options() == {
        "kafka.bootstrap.servers": "b-1:9092,b-2:9092",
        "subscribe": "clicks",
        "startingOffsets": '{"clicks":{"0":5}}',
        "failOnDataLoss": "true",
        "maxOffsetsPerTrigger": "50000",
        "kafka.fetch.max.wait.ms": "50",
    }
    assert job.trigger.spark_options() == {"processingTime": "5 seconds"}
    assert (job.window_s, job.watermark_delay_s, job.late_policy) == (60, 600, "count")
    assert job.allowed_lateness_s == 86400 and job.max_future_skew_s == 90 and job.attempt == 2
    assert job.sink.secret_id == "spotlake/postgres/clicks" and job.sink.schema == "clickstream"
    assert job.checkpoint == "s3a://checkpoints/streams/clicks" and job.query_name == "clicks"
    assert job.lake is not None and job.lake.type == "glue" and job.lake.warehouse == "s3://lake/warehouse"
    assert job.lake.events_table == "lake.clicks.events"
    assert job.lake.dead_letters_table == "lake.clicks.dead_letters"
    # The local default catalog (JDBC) carries its secret.
    local = StreamJob.from_dict(stream.job_document("r", 1, "b:9092"))
    assert local.lake is not None and local.lake.secret_id == "spotlake/postgres/lake-catalog"
    now = StreamJob.from_dict(stream.job_document("r", 1, "b:9092", available_now=True))
    assert now.trigger.spark_options() == {"availableNow": True}
    fast = StreamJob.from_dict(parse(trigger_interval="0s").get("clicks").job_document("r", 1, "b:9092"))
    assert fast.trigger.spark_options() == {"processingTime": "0 seconds"}
    assert parse(lake=None).get("clicks").job_document("r", 1, "b:9092")["lake"] is None


def test_the_projects_streams_take_the_lake_catalog_of_the_pipelines_file() -> None:
    clicks = streaming.load().get("clicks")
    assert clicks.catalog == config.load_lake()
    assert clicks.job_document("r", 1, "b:9092")["lake"]["catalog"] == config.load_lake().catalog


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"run_id": "has space"}, "job field 'run_id'"),
        ({"window_s": 0}, "job field 'window_s' must be an integer >= 1"),
        ({"late_policy": "drop"}, "job field 'late_policy'"),
        ({"allowed_lateness_s": -1}, "job field 'allowed_lateness_s' must be an integer >= 0"),
        ({"trigger": {"interval_s": 45}}, "job field 'trigger.interval_s'"),
        ({"checkpoint": "relative/path"}, "job field 'checkpoint' must be a URI"),
        ({"lake": {"path": "s3a://x"}}, "job field 'lake.path' is not part of the job contract"),
        ({"lake": "s3a://x"}, "job field 'lake' must be a JSON object or null"),
        ({"max_future_skew_s": -1}, "job field 'max_future_skew_s' must be an integer >= 0"),
        ({"dead_letters": {"path": "s3a://x"}}, "job field 'dead_letters' is not part of the job contract"),
        ({"sink": {"secret_id": "s", "password": "p"}}, "job field 'sink.password' is not part"),
        ({"extra": 1}, "job field 'extra' is not part of the job contract"),
    ],
)
def test_the_spark_job_rejects_a_bad_document_naming_the_field(change: dict[str, Any], words: str) -> None:
    document = parse().get("clicks").job_document("r1", 1, "b:9092")
    document.update(change)
    with pytest.raises(StreamingError, match=words.replace("(", r"\(").replace(")", r"\)")) as raised:
        StreamJob.from_dict(document)
    assert "stream clicks" in str(raised.value)


def test_the_spark_job_rejects_bad_kafka_settings() -> None:
    document = parse().get("clicks").job_document("r1", 1, "b:9092")
    for source, words in (
        ({**document["source"], "bootstrap_servers": "nohost"}, "source.bootstrap_servers"),
        ({**document["source"], "topics": ["a b"]}, "source.topics[0]"),
        ({**document["source"], "starting_offsets": "first"}, "source.starting_offsets"),
        ({**document["source"], "fail_on_data_loss": "yes"}, "source.fail_on_data_loss"),
    ):
        with pytest.raises(StreamingError, match=words.replace("[", r"\[").replace("]", r"\]")):
            StreamJob.from_dict({**document, "source": source})
    with pytest.raises(StreamingError, match="not valid JSON"):
        StreamJob.from_base64url("bm90IGpzb24")  # "not json"


def test_every_accepted_key_is_in_the_reference() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "streaming.md").read_text()
    body = doc.split("## Configuration: `config/streaming.yaml`", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in body.splitlines() if line.startswith("| `")]
    documented = {part for row in rows for name in re.findall(r"`([a-z_.]+)`", row) for part in name.split(".")}
    assert streaming.STREAM_KEYS | {"secret_id", "schema"} <= documented


def test_the_supervisor_dags_owner_comes_from_the_defaults_or_the_stream() -> None:
    assert parse().get("clicks").owner == "data-platform"
    assert parse(owner="streaming-team").get("clicks").owner == "streaming-team"
    assert "streams.clicks.owner: 'a,b' is not an owner; write the one team or person" in stream_error(owner="a,b")
    raw = copy.deepcopy(BASE)
    raw["defaults"]["owner"] = 7
    assert f"{PATH}: defaults.owner: 7 is not an owner" in error(raw)
