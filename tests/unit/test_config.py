from __future__ import annotations

from datetime import timedelta

import pytest

from spotlake import config
from spotlake.errors import ConfigError
from tests.support.pipeline_configs import BASE, parse, with_pipeline


def test_project_config_is_valid() -> None:
    cfg = config.load(config.DEFAULT_CONFIG)
    assert {p.name for p in cfg.pipelines} >= {"shop_customers", "shop_orders", "shop_order_items"}


def test_defaults_five_minutes_and_one_interval_lookback() -> None:
    p = parse(BASE).get("orders")
    assert p.schedule == "*/5 * * * *"
    assert p.interval == timedelta(minutes=5)
    assert p.lookback == timedelta(minutes=5)
    assert p.primary_key == ("order_id",)
    assert (p.current_table, p.changes_table) == ("orders", "orders_changes")
    assert p.dag_id == "extract_orders"
    assert p.read_job() == {"window_chunk_s": 3600}


def test_lake_section_defaults_and_checks() -> None:
    cfg = parse(BASE)
    assert (cfg.lake.type, cfg.lake.catalog, cfg.lake.namespace) == ("jdbc", "lake", "raw")
    assert cfg.lake.secret_id == "spotlake/postgres/lake-catalog"
    assert cfg.lake.maintenance.snapshot_retention == timedelta(days=1)
    assert cfg.asset_uri(cfg.get("orders")) == "iceberg://lake/raw/orders"
    glue = parse({**BASE, "lake": {"type": "glue", "warehouse": "s3a://lake-bucket/wh", "namespace": "shop"}})
    assert (glue.lake.secret_id, glue.lake.warehouse) == (None, "s3://lake-bucket/wh")
    job = glue.lake.to_job(glue.get("orders"))
    assert job == {
        "catalog": "lake",
        "type": "glue",
        "warehouse": "s3://lake-bucket/wh",
        "namespace": "shop",
        "current": "orders",
        "changes": "orders_changes",
    }
    with_read = parse(with_pipeline(read={"snapshot_chunk_rows": 1000, "max_window": "30m", "fetch_size": 50}))
    assert with_read.get("orders").read_job() == {"fetch_size": 50, "chunk_rows": 1000, "window_chunk_s": 1800}


@pytest.mark.parametrize(
    ("lake", "message"),
    [
        ({"type": "hadoop"}, "lake.type: 'hadoop' is not a catalog type"),
        ({"warehouse": "/data/lake"}, "lake.warehouse: '/data/lake' is not an S3 location"),
        ({"namespace": "a.b"}, "lake.namespace: 'a.b' is not a valid identifier"),
        ({"maintenance": {"orphan_age": "10m"}}, "lake.maintenance.orphan_age: 0:10:00 is too short"),
        ({"maintenance": {"schedule": "daily"}}, "lake.maintenance.schedule: 'daily' is not a cron expression"),
        ({"maintenance": {"max_active": 0}}, "lake.maintenance.max_active: expected a positive integer, got 0"),
        ({"colour": "blue"}, "lake: unknown key(s) colour"),
    ],
)
def test_bad_lake_settings_name_the_key_and_fix(lake: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "lake": lake})
    assert message in str(err.value)


def test_a_pipeline_named_like_another_ones_changes_table_is_refused() -> None:
    raw = with_pipeline()
    raw["pipelines"].append({**raw["pipelines"][0], "name": "orders_changes"})
    with pytest.raises(ConfigError, match="orders_changes are the changes table of another pipeline"):
        parse(raw)


def test_one_minute_schedule_and_explicit_lookback() -> None:
    p = parse(with_pipeline(schedule="* * * * *", lookback="90s")).get("orders")
    assert p.interval == timedelta(minutes=1)
    assert p.lookback == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"table": "orders; DROP TABLE x"}, "pipelines[0] (orders).table: 'orders; DROP TABLE x' is not a valid identifier"),
        ({"cursor": "updated`at"}, "is not a column name (no back-quote"),
        ({"cursor": "updated_at "}, "is not a column name"),
        ({"source": "nope"}, "source 'nope' is not defined under 'sources'"),
        ({"schedule": "every 5 minutes"}, "is not a cron expression"),
        ({"lookback": "five"}, "is not a duration"),
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"transforms": [{"explode": ["a"]}]}, "unknown transform 'explode'"),
        ({"transforms": [{"rename": {"a": "b`c"}}]}, "transforms[0].rename: 'b`c' is not a column name"),
        ({"transforms": [{"cast": {"a": "varchar; drop"}}]}, "is not a Spark type"),
        ({"transforms": [{"mask": {"a": {"keep_last": -1}}}]}, "keep_last"),
        ({"read": {"fetchsize": 10}}, "read: unknown key(s) fetchsize"),
        ({"read": {"time_zone": "x'; DROP"}}, 'read.time_zone: "x\'; DROP" is not an offset'),
        ({"read": {"wait_for_open_transactions": "no"}}, "read.wait_for_open_transactions: expected true or false"),
        ({"read": {"max_open_transaction": "soon"}}, "read.max_open_transaction"),
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
    p = parse(
        with_pipeline(
            transforms=[
                {"hash": ["email"]},
                {"mask": {"phone": {"keep_last": 4}}},
                {"filter": "x > 1"},
            ]
        )
    ).get("orders")
    assert [t.to_job() for t in p.transforms] == [
        {"op": "hash", "columns": ["email"]},
        {"op": "mask", "columns": {"phone": {"keep_last": 4}}},
        {"op": "filter", "condition": "x > 1"},
    ]


def test_source_time_and_open_transaction_settings_reach_the_job_document() -> None:
    raw = with_pipeline(
        read={
            "time_zone": "America/New_York",
            "wait_for_open_transactions": True,
            "open_transaction_margin": "5s",
            "max_open_transaction": "10m",
        }
    )
    pipeline = parse(raw).pipelines[0]
    doc = pipeline.read_job()
    assert doc["time_zone"] == "America/New_York" and doc["wait_for_open_transactions"] is True
    assert (doc["open_transaction_margin_s"], doc["max_open_transaction_s"]) == (5, 600)


def test_reconciliation_settings_defaults_and_refusals() -> None:
    pipeline = parse(with_pipeline()).pipelines[0]
    assert (
        pipeline.reconcile.enabled,
        pipeline.reconcile.schedule,
        pipeline.reconcile.chunk_rows,
        pipeline.reconcile.deletes,
    ) == (True, "30 * * * *", 200, "remove")
    raw = with_pipeline(reconcile={"chunk_rows": 500, "deletes": "flag"}, soft_delete="deleted_at")
    raw["sources"]["shop"]["replica_secret_id"] = "spotlake/mysql/shop-replica"
    pipeline = parse(raw).pipelines[0]
    assert pipeline.reconcile.to_job(pipeline.source) == {
        "chunk_rows": 500,
        "deletes": "flag",
        "replica_secret_id": "spotlake/mysql/shop-replica",
    }
    filtered = parse(with_pipeline(transforms=[{"filter": "amount > 0"}])).pipelines[0]
    assert filtered.reconcile.enabled is False  # a filtered row would look missing from the lake
    with pytest.raises(ConfigError, match="reconcile: a pipeline with a filter step cannot be reconciled"):
        parse(with_pipeline(transforms=[{"filter": "amount > 0"}], reconcile={"enabled": True}))
    with pytest.raises(ConfigError, match="reconcile.deletes: flag sets the pipeline's soft_delete column"):
        parse(with_pipeline(reconcile={"deletes": "flag"}, soft_delete=None))
    with pytest.raises(ConfigError, match="reconcile.deletes: expected remove or flag"):
        parse(with_pipeline(reconcile={"deletes": "drop"}))


def test_the_owner_defaults_to_the_data_platform_and_a_pipeline_may_set_its_own() -> None:
    cfg = parse(BASE)
    assert (cfg.owner, cfg.get("orders").owner) == ("data-platform", "data-platform")
    raw = with_pipeline(owner="Shop Team")
    raw["defaults"] = {"owner": "jane.doe@example.com"}
    cfg = parse(raw)
    assert (cfg.owner, cfg.get("orders").owner) == ("jane.doe@example.com", "Shop Team")
    assert parse({**BASE, "defaults": {"owner": "analytics"}}).get("orders").owner == "analytics"


@pytest.mark.parametrize("bad", ["", " data", "data ", "shop, finance", 42, None, ["a"], "x" * 101, "team\nb"])
def test_an_owner_that_is_not_one_name_is_refused_naming_the_entry_and_the_fix(bad: object) -> None:
    fix = "write the one team or person who answers for these DAGs"
    with pytest.raises(ConfigError) as err:
        parse(with_pipeline(owner=bad))
    assert str(err.value).startswith(f"config/pipelines.yaml: pipelines[0] (orders).owner: {bad!r} is not an owner; {fix}")
    with pytest.raises(ConfigError, match=r"^config/pipelines.yaml: defaults.owner: .* e\.g\. data-platform$"):
        parse({**BASE, "defaults": {"owner": bad}})


def test_a_tables_location_is_where_its_catalog_puts_a_table_created_without_one() -> None:
    jdbc = parse({**BASE, "lake": {"warehouse": "s3://lake-bucket/wh/", "namespace": "shop"}}).lake
    glue = parse({**BASE, "lake": {"type": "glue", "warehouse": "s3a://lake-bucket/wh", "namespace": "shop"}}).lake
    assert jdbc.table_location("shop_orders") == "s3://lake-bucket/wh/shop/shop_orders"
    assert glue.table_location("shop_orders") == "s3://lake-bucket/wh/shop.db/shop_orders"
    assert glue.table_location("events", namespace="clicks") == "s3://lake-bucket/wh/clicks.db/events"
