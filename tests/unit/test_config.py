from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from spotlake import config
from spotlake.errors import ConfigError

BASE = {
    "sources": {"shop": {"secret_id": "spotlake/mysql/shop"}},
    "pipelines": [{
        "name": "orders", "source": "shop", "database": "shop", "table": "orders",
        "primary_key": "order_id", "cursor": "updated_at",
    }],
}


def parse(raw: dict) -> config.PipelinesConfig:
    return config.parse(raw, Path("config/pipelines.yaml"))


def with_pipeline(**changes: object) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["pipelines"][0].update(changes)
    return raw


def test_project_config_is_valid() -> None:
    cfg = config.load(config.DEFAULT_CONFIG)
    assert {p.name for p in cfg.pipelines} >= {"shop_customers", "shop_orders", "shop_order_items"}


def test_defaults_five_minutes_and_one_interval_lookback() -> None:
    p = parse(BASE).get("orders")
    assert p.schedule == "*/5 * * * *"
    assert p.interval == timedelta(minutes=5)
    assert p.lookback == timedelta(minutes=5)
    assert p.primary_key == ("order_id",)
    assert p.target == "s3a://spotlake-lake/raw/orders"
    assert p.dag_id == "extract_orders"


def test_one_minute_schedule_and_explicit_lookback() -> None:
    p = parse(with_pipeline(schedule="* * * * *", lookback="90s")).get("orders")
    assert p.interval == timedelta(minutes=1)
    assert p.lookback == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"table": "orders; DROP TABLE x"}, "pipelines[0] (orders).table: 'orders; DROP TABLE x' is not a valid identifier"),
        ({"cursor": "updated at"}, "is not a valid identifier"),
        ({"source": "nope"}, "source 'nope' is not defined under 'sources'"),
        ({"schedule": "every 5 minutes"}, "is not a cron expression"),
        ({"lookback": "five"}, "is not a duration"),
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"transforms": [{"explode": ["a"]}]}, "unknown transform 'explode'"),
        ({"transforms": [{"rename": {"a": "b c"}}]}, "transforms[0].rename: 'b c' is not a valid identifier"),
        ({"transforms": [{"cast": {"a": "varchar; drop"}}]}, "is not a Spark type"),
        ({"transforms": [{"mask": {"a": {"keep_last": -1}}}]}, "keep_last"),
        ({"read": {"fetchsize": 10}}, "read.fetchsize: unknown key"),
    ],
)
def test_bad_entries_name_the_file_entry_and_fix(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_pipeline(**changes))
    assert "config/pipelines.yaml" in str(err.value)
    assert message in str(err.value)


def test_missing_required_key() -> None:
    raw = with_pipeline()
    del raw["pipelines"][0]["cursor"]
    with pytest.raises(ConfigError, match=r"pipelines\[0\] \(orders\): missing required key 'cursor'"):
        parse(raw)


def test_duplicate_names_rejected() -> None:
    raw = with_pipeline()
    raw["pipelines"].append(dict(raw["pipelines"][0]))
    with pytest.raises(ConfigError, match="appear more than once"):
        parse(raw)


def test_unknown_user_function_rejected() -> None:
    with pytest.raises(ConfigError, match="no transform function registered as 'nope'"):
        parse(with_pipeline(transforms=[{"function": "nope"}]))


def test_transforms_become_job_steps() -> None:
    p = parse(with_pipeline(transforms=[
        {"hash": ["email"]}, {"mask": {"phone": {"keep_last": 4}}}, {"filter": "x > 1"},
    ])).get("orders")
    assert [t.to_job() for t in p.transforms] == [
        {"op": "hash", "columns": ["email"]},
        {"op": "mask", "columns": {"phone": {"keep_last": 4}}},
        {"op": "filter", "condition": "x > 1"},
    ]
