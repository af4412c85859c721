"""The operations page's API against a registry of fixture data (moto), and the status command on
the same registry: both show the same figures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from moto import mock_aws

from spotlake import config, pools, status
from spotlake.operations import grid
from spotlake.registry import Registry
from tests.support import operations_fixture as fixture
from ui.app import Refreshed, RegistrySource, create_app


@pytest.fixture
def pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config.PipelinesConfig:
    path = tmp_path / "pipelines.yaml"
    loaded = fixture.pipelines_config(path, extra=4)
    monkeypatch.setenv("SPOTLAKE_PIPELINES", str(path))
    return loaded


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "ops")
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"))
        reg.create_tables()
        yield reg


@pytest.fixture
def client(registry: Registry, pipelines: config.PipelinesConfig) -> TestClient:
    fixture.fill(registry, pipelines)
    source = RegistrySource(lambda: registry, lambda: fixture.paused(pipelines))
    return TestClient(create_app(source, clock=lambda: fixture.NOW))


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_pools_show_their_clusters_in_every_state_with_rotation_and_reasons(client: TestClient) -> None:
    body = client.get("/api/overview").json()
    pools_ = by(body["pools"], "name")
    small = by(pools_["small"]["clusters"], "cluster_id")
    assert small["small-0002"]["state"] == "READY" and small["small-0002"]["active"]
    assert small["small-0002"]["rotation_due"] == "in 5h 10m"  # max_age 6h, launched 50 minutes ago
    assert small["small-0002"]["provider"] == "local" and small["small-0002"]["endpoint"] == "http://127.0.0.1:18002"
    assert small["small-0001"]["state"] == "DEAD" and small["small-0001"]["reason"] == "spot capacity reclaimed"
    assert small["small-0003"]["state"] == "LAUNCHING"
    large = by(pools_["large"]["clusters"], "cluster_id")
    assert {c["state"] for c in large.values()} == {"DRAINING", "TERMINATING", "TERMINATED"}
    assert not any(c["state"] == "READY" for c in large.values())  # the page flags the pool: no READY cluster


def test_a_raised_alert_shows_above_everything(client: TestClient) -> None:
    (alert,) = client.get("/api/overview").json()["alerts"]
    assert (alert["alert"], alert["severity"]) == ("pool:large:no_ready", "critical")
    assert alert["title"] == "pool large has no READY cluster"


def test_a_moved_job_shows_from_to_why_and_how_long(client: TestClient) -> None:
    (move,) = client.get("/api/overview").json()["moves"]
    assert move["job_key"] == fixture.Expected().moved_job
    assert (move["from_cluster"], move["to_cluster"]) == ("small-0001", "small-0002")
    assert "spot capacity reclaimed" in move["why"] and move["took_s"] >= 0


def test_pipelines_show_fresh_stale_paused_failing_and_never_run(client: TestClient) -> None:
    expected = fixture.Expected()
    fresh = by(client.get("/api/overview").json()["freshness"], "pipeline")
    assert fresh[expected.fresh]["status"] == "fresh" and not fresh[expected.fresh]["stale"]
    assert fresh[expected.fresh]["age_s"] == 300 and fresh[expected.fresh]["stale_after_s"] == 600
    paused = fresh[expected.paused_stale]
    assert (paused["status"], paused["stale"], paused["paused"]) == ("STALE", True, True)
    assert "extract_shop_customers is paused" in paused["reason"]
    failing = fresh[expected.failing]
    assert (failing["status"], failing["stale"]) == ("FAILING", True)
    assert "column total out of range" in failing["reason"]
    assert fresh[expected.never]["status"] == "never run"
    # p0001 has its own threshold (30m): 10 minutes behind is fresh
    assert fresh["p0001"]["stale_after_s"] == 1800 and fresh["p0001"]["status"] == "fresh"
    assert fresh[expected.fresh]["dag_id"] == "extract_shop_orders"


def test_the_last_windows_of_a_pipeline_carry_their_rows(client: TestClient) -> None:
    windows = client.get("/api/overview").json()["windows"]["shop_orders"]
    assert len(windows) == status.LAST_WINDOWS
    assert {w["rows"] for w in windows} == {120 + len("shop_orders")}
    assert windows[-1]["watermark"] == (fixture.NOW - timedelta(minutes=5)).isoformat(timespec="seconds")


def test_streams_show_state_lag_per_partition_restarts_and_dead_letters(client: TestClient) -> None:
    streams = by(client.get("/api/overview").json()["streams"], "stream")
    clicks = streams["clicks"]
    assert (clicks["state"], clicks["lag"], clicks["last_batch_id"]) == ("RUNNING", 340, 812)
    assert clicks["lag_by_partition"] == {"clicks-0": 200, "clicks-1": 140} and clicks["dead_letters_last_hour"] == 3
    assert streams["orders_stream"]["state"] == "BACKED_OFF" and streams["orders_stream"]["restarts"] == 3


def test_charts_are_plotly_figures_of_the_last_day(client: TestClient) -> None:
    charts = client.get("/api/charts").json()
    freshness = {trace["name"]: trace for trace in charts["freshness"]["data"]}
    # the paused pipeline's age grows since its last commit 40 minutes ago
    assert freshness["shop_customers"]["y"][-1] == 40.0 and freshness["shop_orders"]["y"][-1] == 5.0
    assert freshness["shop_orders"]["type"] == "scatter" and len(freshness["shop_orders"]["x"]) == len(grid(fixture.NOW))
    assert sum(sum(t["y"]) for t in charts["rows"]["data"]) > 0
    clusters = {trace["name"]: trace["y"] for trace in charts["clusters"]["data"]}
    assert clusters["READY"][-1] == 1 and clusters["DEAD"][-1] == 1 and clusters["DRAINING"][-1] == 1
    assert clusters["LAUNCHING"][-1] == 1 and clusters["TERMINATING"][-1] == 1
    (lag,) = [t for t in charts["lag"]["data"] if t["name"] == "clicks"]
    assert len(lag["y"]) == 60 and lag["y"][-1] == 105


def test_many_pipelines_draw_freshness_as_a_heat_map(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "many.yaml"
    many = fixture.pipelines_config(path, extra=30)
    monkeypatch.setenv("SPOTLAKE_PIPELINES", str(path))
    fixture.fill(registry, many)
    client = TestClient(create_app(RegistrySource(lambda: registry), clock=lambda: fixture.NOW))
    (heat,) = client.get("/api/charts").json()["freshness"]["data"]
    assert heat["type"] == "heatmap" and len(heat["y"]) == len(many.pipelines)
    assert heat["y"][0] == "shop_customers"  # the stalest first


def test_the_page_and_its_plotly_bundle_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'src="static/plotly.min.js"' in page.text
    bundle = client.get("/static/plotly.min.js")
    assert bundle.status_code == 200 and "plotly.js" in bundle.text[:500]


def test_a_caller_without_airflow_login_is_refused_and_the_page_sends_to_login(registry: Registry) -> None:
    def refuse() -> None:
        raise HTTPException(status_code=401, detail="Not authenticated")

    server = FastAPI()  # as the Airflow API server mounts it
    server.mount("/spotlake", create_app(RegistrySource(lambda: registry), authorize=refuse))
    client = TestClient(server, follow_redirects=False)
    assert client.get("/spotlake/api/overview").status_code == 401
    page = client.get("/spotlake/")
    assert page.status_code == 307 and page.headers["location"].startswith("/auth/login?next=")


def test_the_status_command_reports_the_same_freshness(registry: Registry, pipelines: config.PipelinesConfig) -> None:
    fixture.fill(registry, pipelines)
    snapshot = status.collect(registry, pools.load(), pipelines, fixture.NOW)
    words = " ".join(status.render(snapshot).split())
    assert "shop_customers STALE" in words and "shop_order_items FAILING (stale)" in words
    assert "MOVES in the last 24 h: 1" in words
    assert "ALERTS: 1 raised alert severity raised title pool:large:no_ready critical" in words
    client = TestClient(create_app(RegistrySource(lambda: registry), clock=lambda: fixture.NOW))
    page = by(client.get("/api/overview").json()["freshness"], "pipeline")
    assert {f.pipeline: f.status for f in snapshot.freshness} == {name: row["status"] for name, row in page.items()}


def test_figures_are_read_again_in_the_background_while_people_look() -> None:
    computed: list[int] = []

    def compute() -> bytes:
        computed.append(len(computed))
        return str(len(computed)).encode()

    figures = Refreshed(compute, every_s=0.05, idle_s=0.3)
    assert figures.get() == b"1" and figures.get() == b"1"  # the first request computes; the next is served
    deadline = time.monotonic() + 5
    while figures.get() == b"1" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert figures.get() != b"1"  # refreshed without a request waiting for it
    time.sleep(0.6)  # nobody looks: the refreshing stops
    stopped = len(computed)
    time.sleep(0.2)
    assert len(computed) == stopped
    assert figures.get() == str(stopped + 1).encode()  # then an old figure is read again, not served
    assert Refreshed(compute, every_s=0).get() != Refreshed(compute, every_s=0).get()  # 0: each request


def test_the_cost_of_each_pool_today_shows_its_metered_clusters(client: TestClient, registry: Registry) -> None:
    """small-0002 was metered as one m5.xlarge on demand since its launch 50 minutes ago: today's
    part of that at config/prices.yaml's 0.192 + 0.048 an hour."""
    from datetime import UTC, datetime

    body = client.get("/api/overview").json()
    assert body["currency"] == "USD"
    costs = by(body["costs"], "pool")
    midnight = datetime(fixture.NOW.year, fixture.NOW.month, fixture.NOW.day, tzinfo=UTC)
    seconds = (fixture.NOW - max(fixture.NOW - timedelta(minutes=50), midnight)).total_seconds()
    (metered,) = [c for c in costs["small"]["clusters"] if c["metered"]]
    assert metered["cluster_id"] == "small-0002"
    assert metered["hours"] == {"m5.xlarge on-demand": pytest.approx(seconds / 3600)}
    assert costs["small"]["cost"] == pytest.approx((0.192 + 0.048) * seconds / 3600)
    assert costs["small"]["budget"] == 25.0 and not costs["small"]["over_budget"]
    text = status.render(status.collect(registry, pools.load(), config.load(), fixture.NOW))
    assert "COST TODAY (UTC, USD" in text and "small-0002 " in text
