"""The chaos soak's own logic: its seeded plan, and the checks it applies after each round (two
READY clusters from the recorded transitions, the lake compared with MySQL row by row)."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from spotlake import config
from spotlake.aws_setup import ensure_tables
from spotlake.registry import Cluster, Registry
from spotlake_dev import chaos


def test_the_plan_is_seeded_and_plays_every_kind_as_often_as_the_others() -> None:
    kinds = chaos.plan(20, seed=7)
    assert kinds == chaos.plan(20, seed=7) and kinds != chaos.plan(20, seed=8)
    counts = Counter(kinds)
    assert set(counts) == set(chaos.KINDS) and max(counts.values()) - min(counts.values()) <= 1
    assert sorted(kinds[:6]) == sorted(chaos.KINDS)  # each block of six has each kind once


def cluster(cluster_id: str, transitions: str, state: str = "READY") -> Cluster:
    return Cluster(pool="small", cluster_id=cluster_id, provider="local", state=state, transitions=transitions)


def test_a_run_started_minutes_after_another_waits_until_its_compared_windows_hold_none_of_its_events() -> None:
    """A run compares the stream's aggregates from 330 s before its oldest event, which may be
    300 s older than its sending: windows that recent may still hold the last run's events (a
    run started seven minutes after another failed its first round on them)."""
    minute = 60_000
    now = 1_800_000_000_000
    assert chaos.quiet_wait_s(None, now) == 0.0  # a stream that never counted anything
    assert chaos.quiet_wait_s(now - 7 * minute, now) == 330.0  # 11.5 min of reach and 1 min of margin, less 7 min
    assert chaos.quiet_wait_s(now - 20 * minute, now) == 0.0
    # after the wait, the earliest window the run can compare starts after the last run's windows end
    latest_end = now - 7 * minute
    sent = now + int(chaos.quiet_wait_s(latest_end, now) * 1000)
    oldest_event = sent - 300 * 1000
    since = oldest_event - 330 * 1000
    assert since - since % minute >= latest_end


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
    watch = chaos.ReadyWatch(None)
    watch.samples, watch.torn = 900, 1
    text = chaos.render(faults, args, 510.0, watch, 600, 1200)
    assert "3 rounds played, **2 passed**" in text
    assert "900 READY samples (1 of them read during a take-over's transaction" in text
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


class Sampled:
    """A stack whose Query shows ``queried`` READY and whose transactional re-read shows ``confirmed``."""

    def __init__(self, queried: list[str], confirmed: list[str] | None) -> None:
        self.queried, self.confirmed, self.asked = queried, confirmed, []

    def clusters(self, pool: str) -> list[Cluster]:
        return [cluster(c, "") for c in self.queried]

    def ready_together(self, pool: str, ids: list[str]) -> list[str] | None:
        self.asked.append(ids)
        return self.confirmed


@pytest.mark.parametrize(
    ("confirmed", "violation", "torn"),
    [
        (["small-0002"], "", 1),  # a Query during the take-over's transaction: one READY when read again
        (["small-0001", "small-0002"], "READY ['small-0001', 'small-0002']", 0),
        (None, "the registry did not answer the read that confirms it", 0),
    ],
)
def test_two_ready_in_a_sample_are_a_violation_only_if_a_transactional_read_confirms_them(
    monkeypatch: pytest.MonkeyPatch, confirmed: list[str] | None, violation: str, torn: int
) -> None:
    monkeypatch.setattr(chaos.ReadyWatch, "CONFIRM_AFTER", 0.0)
    stack = Sampled(["small-0001", "small-0002"], confirmed)
    watch = chaos.ReadyWatch(stack)
    watch.sample("small")
    assert stack.asked == [["small-0001", "small-0002"]]
    assert (watch.samples, watch.torn) == (1, torn)
    if violation:
        (found,) = watch.violations
        assert violation in found
    else:
        assert watch.violations == []
    one = Sampled(["small-0002"], None)
    chaos.ReadyWatch(one).sample("small")
    assert one.asked == []  # one READY: nothing to confirm


def test_the_confirming_read_is_one_transactional_read_of_the_pools_clusters() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        registry = Registry(client, "t")
        ensure_tables(client, "t")
        for cluster_id, state in (("small-0001", "DRAINING"), ("small-0002", "READY"), ("small-0003", "READY")):
            client.put_item(
                TableName=registry.clusters_table,
                Item={"pool": {"S": "small"}, "cluster_id": {"S": cluster_id}, "state": {"S": state}},
            )
        stack = object.__new__(chaos.Stack)
        stack.client, stack.registry = client, registry
        assert stack.ready_together("small", ["small-0001", "small-0002"]) == ["small-0002"]
        assert stack.ready_together("small", ["small-0002", "small-0003", "small-0009"]) == ["small-0002", "small-0003"]
