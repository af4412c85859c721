"""The cost ledger's figures, each checked by hand: instance-hours × price, a window's share of its
cluster by slot time, a stream's hours, Glue's one-minute minimum, days, budgets."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spotlake import alerts, ledger, prices
from spotlake.dynamo_items import to_item
from spotlake.pools import LocalShape, PoolsConfig
from spotlake.providers.base import InstanceUsage, encode_instances
from spotlake.registry import Cluster, Job, JobState, Registry
from tests.support.fleet_fakes import pool_config

PRICES = Path(__file__).resolve().parents[2] / "config" / "prices.yaml"
DAY = date(2026, 12, 6)
T = datetime(2026, 12, 6, tzinfo=UTC)
# config/prices.yaml's figures, written out so that a change of the file shows here
M5 = 0.192 + 0.048  # m5.xlarge on demand + EMR, per hour
R5_SPOT = 0.0882 + 0.063  # r5.xlarge spot + EMR
R5_ON_DEMAND = 0.252 + 0.063
GLUE_DPU_HOUR = 0.44


def at(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def cluster(cluster_id: str, *usage: InstanceUsage, state: str = "READY", terminated: datetime | None = None) -> Cluster:
    return Cluster(
        pool="small",
        cluster_id=cluster_id,
        provider="emr",
        state=state,
        launched_at=min((u.start for u in usage), default=""),
        instances=encode_instances(list(usage)),
        terminated_at=iso(terminated) if terminated else "",
    )


def use(kind: str, market: str, role: str, start: float, end: float | None = None) -> InstanceUsage:
    return InstanceUsage(kind, market, role, iso(at(start)), iso(at(end)) if end is not None else "")


def job(key: str, cluster_id: str, start: datetime, end: datetime | None, state: str = JobState.SUCCEEDED, **kw: str) -> Job:
    return Job(
        job_key=key,
        pool="small",
        state=state,
        attempt=1,
        cluster_id=cluster_id,
        submitted_at=iso(start),
        updated_at=iso(end) if end else iso(start),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def table() -> prices.Prices:
    return prices.load(PRICES)


def pools_config(**overrides: object) -> PoolsConfig:
    return PoolsConfig(path=Path("pools.yaml"), provider="emr", pools=(pool_config(**overrides),))  # type: ignore[arg-type]


def test_a_clusters_cost_is_its_instance_hours_times_the_prices(table: prices.Prices) -> None:
    # master and core on demand 10:00-12:00, a spot task instance 10:30-11:30
    c = cluster(
        "small-0001",
        use("m5.xlarge", "ON_DEMAND", "MASTER", 10, 12),
        use("m5.xlarge", "ON_DEMAND", "CORE", 10, 12),
        use("r5.xlarge", "SPOT", "TASK", 10.5, 11.5),
        state="TERMINATED",
        terminated=at(12),
    )
    cost, on_demand, hours, unpriced = ledger.cluster_cost(c, table, T, T + timedelta(days=1), at(13))
    assert hours == {"m5.xlarge on-demand": pytest.approx(4.0), "r5.xlarge spot": pytest.approx(1.0)}
    assert cost == pytest.approx(4 * M5 + 1 * R5_SPOT)
    assert on_demand == pytest.approx(4 * M5 + 1 * R5_ON_DEMAND)
    assert unpriced == []
    # clipped to an interval: 10:45-11:15 is half an hour of all three
    part, _, _, _ = ledger.cluster_cost(c, table, at(10.75), at(11.25), at(13))
    assert part == pytest.approx(0.5 * (2 * M5 + R5_SPOT))


def test_an_ended_cluster_not_confirmed_gone_bills_until_now_and_a_confirmed_one_until_confirmed(table: prices.Prices) -> None:
    # local clusters and clusters recorded before their end report open instances
    dead = cluster("small-0002", use("m5.xlarge", "ON_DEMAND", "MASTER", 9), state="DEAD")
    cost, *_ = ledger.cluster_cost(dead, table, T, at(24), now=at(12))
    assert cost == pytest.approx(3 * M5)  # may still run: billed until now
    confirmed = replace(dead, terminated_at=iso(at(10)))
    cost, *_ = ledger.cluster_cost(confirmed, table, T, at(24), now=at(12))
    assert cost == pytest.approx(1 * M5)


def test_an_instance_type_without_a_price_is_named_never_guessed(table: prices.Prices) -> None:
    c = cluster("small-0003", use("m5.xlarge", "ON_DEMAND", "MASTER", 0, 1), use("x9.huge", "SPOT", "TASK", 0, 1))
    cost, _, hours, unpriced = ledger.cluster_cost(c, table, T, at(24), at(2))
    assert unpriced == ["x9.huge"] and hours["x9.huge spot"] == pytest.approx(1.0)
    assert cost == pytest.approx(M5)
    book = ledger.build(pools_config(), {"small": [c]}, {}, table, DAY, at(2))
    assert book.pools[0].unpriced == ["x9.huge"]


def test_a_window_pays_its_clusters_cost_over_its_slot_time_divided_by_the_slots_and_glue_bills_a_minute_at_least(
    table: prices.Prices,
) -> None:
    c = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", 0), use("m5.xlarge", "ON_DEMAND", "CORE", 0))
    long = job("shop_orders#20261206T0100", "small-0001", at(1), at(1) + timedelta(seconds=180))
    short = job("shop_orders#20261206T0105", "small-0001", at(1.1), at(1.1) + timedelta(seconds=20))
    book = ledger.build(pools_config(max_batches=2), {"small": [c]}, {"small": [long, short]}, table, DAY, at(2))
    rows = {r.job_key: r for r in book.work}
    # two instances at M5 an hour, shared by 2 slots: 180 s of one slot
    assert rows[long.job_key].cost == pytest.approx(2 * M5 * 180 / 3600 / 2)
    assert rows[long.job_key].on_demand == pytest.approx(2 * M5 * 180 / 3600 / 2)
    assert rows[long.job_key].seconds == pytest.approx(180)
    # Glue: the pool's job is 2 G.1X workers = 2 DPUs; 180 s, and 20 s billed as 60 s
    assert rows[long.job_key].glue == pytest.approx(2 * 180 / 3600 * GLUE_DPU_HOUR)
    assert rows[short.job_key].glue == pytest.approx(2 * 60 / 3600 * GLUE_DPU_HOUR)
    assert rows[short.job_key].kind == ledger.Kind.WINDOW and rows[short.job_key].subject == "shop_orders"
    pool = book.pools[0]
    assert pool.cost == pytest.approx(2 * 2 * M5)  # two instances, two hours
    assert pool.work == pytest.approx(rows[long.job_key].cost + rows[short.job_key].cost)
    assert pool.unattributed == pytest.approx(pool.cost - pool.work)
    assert pool.glue == pytest.approx(2 * 240 / 3600 * GLUE_DPU_HOUR)
    (subject,) = pool.subjects
    assert (subject.subject, subject.runs, subject.seconds) == ("shop_orders", 2, pytest.approx(200))


def test_a_stream_is_charged_by_the_clock_hour_and_glue_as_it_runs(table: prices.Prices) -> None:
    c = cluster("large-0001", use("r5.xlarge", "SPOT", "MASTER", 0))
    stream = job("clicks", "large-0001", at(10 + 20 / 60), None, state=JobState.SUBMITTED)
    book = ledger.build(pools_config(max_batches=4), {"small": [c]}, {"small": [stream]}, table, DAY, at(11.75))
    rows = [r for r in book.work if r.kind == ledger.Kind.STREAM]
    assert [(r.start[11:16], round(r.seconds)) for r in rows] == [("10:00", 40 * 60), ("11:00", 45 * 60)]
    assert rows[0].cost == pytest.approx(R5_SPOT * (40 / 60) / 4)
    assert rows[1].glue == pytest.approx(2 * 0.75 * GLUE_DPU_HOUR)  # no minimum within a running stream


def test_a_moved_jobs_time_on_the_cluster_it_left_is_charged_from_the_move_before(table: prices.Prices) -> None:
    a = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", 0, 2), state="DEAD", terminated=at(2))
    b = cluster("small-0002", use("m5.xlarge", "ON_DEMAND", "MASTER", 1, 3), state="DEAD", terminated=at(3))
    c = cluster("small-0003", use("m5.xlarge", "ON_DEMAND", "MASTER", 2))
    moves = [
        {"from": "small-0001", "to": "small-0002", "why": "lost", "requeued_at": iso(at(1.5)), "taken_at": iso(at(1.6))},
        {"from": "small-0002", "to": "small-0003", "why": "lost", "requeued_at": iso(at(2.6)), "taken_at": iso(at(2.7))},
    ]
    moved = job("shop_orders#20261206T0100", "small-0003", at(2.7), at(2.8), moved=json.dumps(moves))
    book = ledger.build(pools_config(max_batches=1), {"small": [a, b, c]}, {"small": [moved]}, table, DAY, at(4))
    (row,) = book.work
    # on small-0002 from 1.6 to 2.6 (one hour), on small-0003 from 2.7 to 2.8; small-0001's start is not kept
    assert row.seconds == pytest.approx(1.1 * 3600)
    assert row.cost == pytest.approx(1.1 * M5)
    assert row.clusters == ["small-0002", "small-0003"]
    assert row.glue == pytest.approx(2 * 0.1 * GLUE_DPU_HOUR)  # Glue runs the last attempt only


def test_a_day_holds_only_its_own_hours_and_its_own_windows(table: prices.Prices) -> None:
    c = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", -2, 3), state="TERMINATED", terminated=at(3))
    before = job("shop_orders#20261205T2350", "small-0001", at(-0.2), at(-0.1))
    across = job("shop_orders#20261205T2355", "small-0001", at(-0.05), at(0.05))
    today = ledger.build(pools_config(), {"small": [c]}, {"small": [before, across]}, table, DAY, at(12))
    assert today.pools[0].cost == pytest.approx(3 * M5)
    assert [r.job_key for r in today.work] == [across.job_key]  # a window belongs to the day it ended in
    yesterday = ledger.build(pools_config(), {"small": [c]}, {"small": [before, across]}, table, DAY - timedelta(days=1), at(12))
    assert yesterday.pools[0].cost == pytest.approx(2 * M5)
    assert [r.job_key for r in yesterday.work] == [before.job_key]
    # the window across midnight is listed whole on the day it ended (6 minutes on one of 2 slots), but
    # each day's work holds only its own part of it: 3 minutes each
    assert today.work[0].cost == pytest.approx(M5 * 0.1 / 2)
    assert today.pools[0].work == pytest.approx(M5 * 0.05 / 2)
    assert yesterday.pools[0].work == pytest.approx(M5 * (0.1 + 0.05) / 2)
    assert today.pools[0].unattributed == pytest.approx(3 * M5 - M5 * 0.05 / 2)


def test_a_past_day_keeps_the_hours_of_a_stream_that_moved_since(table: prices.Prices) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        registry = Registry(client, prefix="t")
        registry.create_tables()
        yesterday = cluster("large-0001", use("r5.xlarge", "SPOT", "MASTER", -24, 1), state="TERMINATED", terminated=at(1))
        today = cluster("large-0002", use("r5.xlarge", "SPOT", "MASTER", 0.5))
        moves = [
            {"from": "large-0000", "to": "large-0001", "why": "x", "requeued_at": iso(at(-25)), "taken_at": iso(at(-24))},
            {"from": "large-0001", "to": "large-0002", "why": "rotated", "requeued_at": iso(at(1)), "taken_at": iso(at(1))},
        ]
        stream = replace(
            job("clicks", "large-0002", at(1), None, state=JobState.SUBMITTED, moved=json.dumps(moves)), pool="large"
        )
        for item in (replace(yesterday, pool="large"), replace(today, pool="large"), stream):
            client.put_item(
                TableName=registry.jobs_table if isinstance(item, Job) else registry.clusters_table, Item=to_item(item)
            )
        cfg = PoolsConfig(Path("pools.yaml"), "emr", (pool_config(name="large", max_batches=1, serves_streams=("clicks",)),))
        book = ledger.read(registry, cfg, table, DAY - timedelta(days=1), at(2))
    hours = [r for r in book.work if r.kind == ledger.Kind.STREAM]
    assert len(hours) == 24 and all(r.clusters == ["large-0001"] for r in hours)
    assert book.pools[0].work == pytest.approx(24 * R5_SPOT) and book.pools[0].unattributed == pytest.approx(0)


def test_a_requeued_job_is_not_a_finished_run_but_its_time_is_work(table: prices.Prices) -> None:
    c = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", 0, 2), state="DEAD", terminated=at(2))
    requeued = job("shop_orders#20261206T0100", "small-0001", at(1), at(1.5), state=JobState.REQUEUED)
    book = ledger.build(pools_config(max_batches=1), {"small": [c]}, {"small": [requeued]}, table, DAY, at(3))
    assert book.work == [] and book.pools[0].work == pytest.approx(0.5 * M5)


def test_a_pool_over_its_budget_raises_the_budget_alert(table: prices.Prices) -> None:
    c = cluster("small-0001", use("r5.4xlarge", "ON_DEMAND", "MASTER", 0))
    book = ledger.build(pools_config(budget_per_day=5.0), {"small": [c]}, {}, table, DAY, at(4))
    pool = book.pools[0]
    assert pool.cost == pytest.approx(4 * (1.008 + 0.252)) and pool.over_budget
    (condition,) = alerts.pools_over_budget(book.pools, book.currency)
    assert condition.key == "pool:small:budget"
    assert "5.04 USD today" in condition.message and "budget_per_day of 5.00 USD" in condition.message
    under = ledger.build(pools_config(budget_per_day=50.0), {"small": [c]}, {}, table, DAY, at(4))
    assert not under.pools[0].over_budget and alerts.pools_over_budget(under.pools, "USD") == []


def test_a_cluster_never_metered_is_listed_as_such() -> None:
    table = prices.load(PRICES)
    c = Cluster(pool="small", cluster_id="small-0001", provider="local", state="READY", launched_at=iso(at(1)))
    book = ledger.build(pools_config(), {"small": [c]}, {}, table, DAY, at(2))
    assert book.pools[0].unmetered == ["small-0001"] and book.pools[0].cost == 0
    assert "not metered" in ledger.render(book)


def test_the_ledger_reads_each_clusters_jobs_by_query(table: prices.Prices) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        registry = Registry(client, prefix="t")
        registry.create_tables()
        c = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", 0))
        old = cluster("small-0000", use("m5.xlarge", "ON_DEMAND", "MASTER", -30, -26), state="TERMINATED", terminated=at(-26))
        for item in (c, old):
            client.put_item(TableName=registry.clusters_table, Item=to_item(item))
        w = job("shop_orders#20261206T0100", "small-0001", at(1), at(1) + timedelta(minutes=2))
        client.put_item(TableName=registry.jobs_table, Item=to_item(w))
        calls: list[str] = []
        client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
        book = ledger.read(registry, pools_config(local=LocalShape("local[2]")), table, DAY, at(2))
        assert [r.job_key for r in book.work] == [w.job_key]
        assert book.work[0].cost == pytest.approx(M5 * 120 / 3600 / 2)
        assert "Scan" not in calls


def test_the_shipped_prices_load_and_name_every_type_the_pools_use(table: prices.Prices) -> None:
    from spotlake import pools
    from spotlake.config import read_yaml

    for name in ("local", "emr"):
        cfg = pools.parse(read_yaml(pools.DEFAULT_POOLS, ""), pools.DEFAULT_POOLS, provider=name)
        for pool in cfg.pools:
            named = {pool.local.instance_type} if pool.local else set()
            if pool.emr:
                named |= {t.type for f in (pool.emr.master, pool.emr.core, pool.emr.task) for t in f.instance_types}
            assert named <= set(table.instances), f"{pool.name}: {named - set(table.instances)} not priced"
            assert table.glue.dpus(pool.name) is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instances": {"m5.xlarge": {"on_demand": 0.192, "emr": 0.048}}}, "spot missing"),
        ({"instances": {"m5.xlarge": {"on_demand": -1, "spot": 0.1, "emr": 0.048}}}, "is not a price"),
        ({"instances": {"big": {"on_demand": 1, "spot": 0.1, "emr": 0.048}}}, "not an EC2 instance type"),
        (
            {"glue": {"dpu_hour": 0.44, "worker_dpu": {"G.1X": 1}, "pools": {"small": {"worker_type": "G.9X", "workers": 2}}}},
            "G.9X",
        ),
        (
            {"glue": {"dpu_hour": 0.44, "worker_dpu": {"G.1X": 1}, "pools": {"small": {"worker_type": "G.1X", "workers": 0}}}},
            "workers",
        ),
        ({"currency": None}, "currency"),
    ],
)
def test_a_bad_prices_file_is_refused_naming_the_entry(change: dict[str, object], message: str) -> None:
    raw = prices.read_yaml(PRICES, "")
    raw.update(change)
    if raw.get("currency") is None:
        del raw["currency"]
    with pytest.raises(prices.ConfigError, match=message):
        prices.parse(raw, PRICES)


def test_main_prints_the_days_ledger_and_each_window(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "lg")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        registry = Registry(client)
        registry.create_tables()
        c = cluster("small-0001", use("m5.xlarge", "ON_DEMAND", "MASTER", 0, 2), state="TERMINATED", terminated=at(2))
        client.put_item(TableName=registry.clusters_table, Item=to_item(c))
        w = job("shop_orders#20261206T0100", "small-0001", at(1), at(1) + timedelta(minutes=3))
        client.put_item(TableName=registry.jobs_table, Item=to_item(w))
        assert ledger.main(["--day", "2026-12-06", "--work"]) == 0
        text = capsys.readouterr().out
        assert "POOL small: 0.4800 USD" in text  # two hours of m5.xlarge at 0.24
        assert "shop_orders#20261206T0100" in text and "2.000 h m5.xlarge on-demand" in text
        assert ledger.main(["--day", "2026-12-06", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        small = next(p for p in data["pools"] if p["pool"] == "small")
        assert small["cost"] == pytest.approx(2 * M5)
        assert data["work"][0]["cost"] == pytest.approx(M5 * 180 / 3600 / 2)
    assert ledger.main(["--day", "6/12/2026"]) == 2
    assert "--day '6/12/2026' is not a date" in capsys.readouterr().err
