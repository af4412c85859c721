"""The chaos soak's own logic: its seeded plan, and the checks it applies after each round (two
READY clusters from the recorded transitions, the lake compared with MySQL row by row)."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from spotlake import config
from spotlake.registry import Cluster
from spotlake_dev import chaos


def test_the_plan_is_seeded_and_plays_every_kind_as_often_as_the_others() -> None:
    kinds = chaos.plan(20, seed=7)
    assert kinds == chaos.plan(20, seed=7) and kinds != chaos.plan(20, seed=8)
    counts = Counter(kinds)
    assert set(counts) == set(chaos.KINDS) and max(counts.values()) - min(counts.values()) <= 1
    assert sorted(kinds[:6]) == sorted(chaos.KINDS)  # each block of six has each kind once


def cluster(cluster_id: str, transitions: str, state: str = "READY") -> Cluster:
    return Cluster(pool="small", cluster_id=cluster_id, provider="local", state=state, transitions=transitions)


def test_two_ready_clusters_are_found_from_the_recorded_transitions() -> None:
    takeover = [
        cluster(
            "small-0001",
            "LAUNCHING 2026-12-06T10:00:00+00:00;READY 2026-12-06T10:01:00+00:00;DRAINING 2026-12-06T10:07:00+00:00",
            "DRAINING",
        ),
        cluster("small-0002", "LAUNCHING 2026-12-06T10:06:00+00:00;READY 2026-12-06T10:07:00+00:00"),
    ]
    assert chaos.overlapping_ready(takeover) == []  # one transaction: the old leaves as the new enters
    twice = [*takeover, cluster("small-0003", "LAUNCHING 2026-12-06T10:08:00+00:00;READY 2026-12-06T10:09:00+00:00")]
    (found,) = chaos.overlapping_ready(twice)
    assert found.startswith("small-0002 and small-0003 READY at once from 2026-12-06T10:09:00")
    dead = cluster("small-0004", "READY 2026-12-06T11:00:00+00:00;DEAD 2026-12-06T11:05:00+00:00;READY 2026-12-06T11:06:00+00:00")
    assert chaos.ready_spans(dead)[0][1] == datetime(2026, 12, 6, 11, 5, tzinfo=UTC)


def test_the_lake_is_compared_with_mysql_by_key_and_every_column_the_transforms_leave_alone() -> None:
    pipelines = config.load()
    orders = pipelines.get("shop_orders")
    columns = chaos.untouched_columns(
        orders,
        ["order_id", "customer_id", "status", "total", "currency", "created_at", "updated_at", "deleted_at"],
        ["order_id", "customer_id", "order_status", "total", "currency", "created_at", "updated_at", "deleted_at", "_attempt"],
    )
    assert columns == ["order_id", "customer_id", "currency", "created_at", "updated_at", "deleted_at"]
    when = datetime(2026, 12, 6, 10, 0, 0, 123456)
    source = [
        {"order_id": 1, "currency": "ZAR", "updated_at": when},
        {"order_id": 2, "currency": "ZAR", "updated_at": when},
        {"order_id": 3, "currency": "ZAR", "updated_at": when},
    ]
    lake = [
        {"order_id": 1, "currency": "ZAR", "updated_at": when.replace(microsecond=123000, tzinfo=UTC)},  # same to the ms
        {"order_id": 2, "currency": "USD", "updated_at": when.replace(tzinfo=UTC)},
        {"order_id": 4, "currency": "ZAR", "updated_at": when.replace(tzinfo=UTC)},
    ]
    assert chaos.differences("order_id", source, lake, ["currency", "updated_at"]) == [
        "order_id=3 missing from the lake",
        "order_id=4 in the lake, not in MySQL",
        "order_id=2: currency is 'ZAR' in MySQL, 'USD' in the lake",
    ]
    assert chaos.comparable(Decimal("1.50")) == chaos.comparable(Decimal("1.5"))


def test_prepare_writes_a_stack_of_one_minute_pipelines_and_a_rotating_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOTLAKE_STACK_DIR", str(tmp_path / ".stack"))
    assert chaos.main(["prepare"]) == 0
    folder = next((tmp_path / ".stack").rglob("chaos"))
    written = config.load(folder / "pipelines.yaml")
    assert {p.schedule for p in written.pipelines} == {"* * * * *"}
    pools = yaml.safe_load((folder / "pools.yaml").read_text())
    assert pools["pools"]["small"]["max_age"] == chaos.ROTATE_EVERY
    assert "make up" in capsys.readouterr().out


def test_the_report_names_kills_recovery_and_every_violation() -> None:
    faults = [
        chaos.Fault(1, "cluster", "small-0001", recovered_s=12.0, rows_checked=7000, round_s=150.0),
        chaos.Fault(2, "moto", "moto and s3", recovered_s=70.0, rows_checked=7010, round_s=200.0, revived=["airflow-scheduler"]),
        chaos.Fault(3, "cluster", "small-0002", recovered_s=20.0, rows_checked=7020, round_s=160.0, violations=["x differs"]),
    ]
    args = argparse.Namespace(rounds=3, seed=7)
    text = chaos.render(faults, args, 510.0, 900, 600, 1200)
    assert "3 rounds played, **2 passed**" in text
    assert "| cluster | 2 | 12.0 s | 20.0 s | - |" in text
    assert "| moto | 1 | 70.0 s | 70.0 s | airflow-scheduler |" in text
    assert "| 3 | cluster | small-0002 | 0.0 s | 20.0 s | 7020 | FAILED: x differs |" in text


def test_run_refuses_a_stack_not_started_with_the_soaks_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOTLAKE_STACK_DIR", str(tmp_path / ".stack"))  # no prepared files there
    monkeypatch.delenv("SPOTLAKE_PIPELINES", raising=False)
    assert chaos.main(["run", "--rounds", "1", "--print-only"]) == 2
    assert "run `python -m spotlake_dev.chaos prepare` and start the stack with the files it writes" in capsys.readouterr().err
