from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from spark_jobs.common.lake_state import LakeState
from spotlake import config, pools, stack, status
from spotlake.registry import Cluster, ClusterState, JobState, Registry

NOW = datetime(2026, 11, 27, 14, 10, tzinfo=UTC)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "st")
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"))
        reg.create_tables()
        yield reg


def seed(registry: Registry) -> None:
    old = Cluster(
        pool="small", cluster_id="small-0001", provider="local", state="", generation=1, launched_at="2026-11-27T12:00:00+00:00"
    )
    registry.put_launching(old)
    registry.mark_ready(old, "http://127.0.0.1:18998")
    registry.transition_cluster(old, ClusterState.DEAD, "Livy process livy-small-0001 is not running")
    new = Cluster(
        pool="small", cluster_id="small-0002", provider="local", state="", generation=2, launched_at="2026-11-27T14:00:00+00:00"
    )
    registry.put_launching(new)
    registry.mark_ready(new, "http://127.0.0.1:18999")
    running = registry.claim_job("shop_orders#20261127T1400", "small", new, "r1", None)
    registry.update_job(running, batch_id=4)
    moved = registry.claim_job("shop_customers#20261127T1400", "small", old, "r2", None)
    registry.update_job(moved, state=JobState.REQUEUED, reason="cluster small-0001 DEAD")
    store = LakeState(registry.client, registry.prefix)
    # shop_orders committed up to 14:00; shop_order_items stopped at 13:30 and its last window failed.
    for pipeline, watermark in (("shop_orders", "2026-11-27T14:00:00+00:00"), ("shop_order_items", "2026-11-27T13:30:00+00:00")):
        store.ensure(pipeline, False, datetime.fromisoformat(watermark))
    store.record_failure("shop_order_items", "shop_order_items#20261127T1335", "source secret 'x' cannot be read")


def test_status_shows_clusters_jobs_and_freshness(registry: Registry) -> None:
    seed(registry)
    snapshot = status.collect(registry, pools.load(provider="local"), config.load(), NOW)
    text = status.render(snapshot)
    assert "small-0002 *  READY  10m" in text and "http://127.0.0.1:18999" in text
    assert "small-0001" in text and "DEAD" in text and "livy-small-0001 is not running" in text
    assert "JOBS: 1 running, 1 re-queued or queued" in text
    assert "shop_customers#20261127T1400" in text and "cluster small-0001 DEAD" in text
    words = " ".join(text.split())  # the table's columns, whatever their widths
    assert "shop_orders fresh 2026-11-27T14:00:00.000000+00:00 10m 10m - -" in words
    assert "shop_customers never run - -" in words and "extract_shop_customers has not run" in words
    assert (
        "shop_order_items FAILING (stale) 2026-11-27T13:30:00.000000+00:00 40m 10m - - source secret 'x' cannot be "
        "read (shop_order_items#20261127T1335 failed at"
    ) in words
    assert "pool large" in text and "no cluster yet" in text


def test_status_shows_whether_the_provider_confirmed_ended_clusters_gone_and_what_the_sweep_did(registry: Registry) -> None:
    """An ended cluster the provider has not confirmed gone is shown however old (it may still
    bill), with the repeated termination requests and their last error; a swept one with why."""
    seed(registry)  # small-0001 DEAD, not confirmed
    dead = registry.get_cluster("small", "small-0001")
    registry.update_cluster(dead, terminate_attempts=2, terminate_error="EMR TerminateJobFlows j-1 failed: InternalServerError")
    for n in range(3, 7):  # four more ended clusters, confirmed gone: more than the recent ones shown
        ended = Cluster(pool="small", cluster_id=f"small-000{n}", provider="local", state="", generation=n)
        registry.put_launching(ended)
        ended = registry.transition_cluster(ended, ClusterState.TERMINATED, "drained: no running jobs")
        registry.update_cluster(ended, terminated_at="2026-11-27T14:05:00.000+00:00")
    swept = Cluster(pool="small", cluster_id="small-0042", provider="local", state="", provider_id="4242", generation=42)
    registry.put_swept(swept, "swept: cluster small-0042 (4242) runs under the project's tags but is not in the registry")
    text = status.render(status.collect(registry, pools.load(provider="local"), config.load(), NOW))
    words = " ".join(text.split())
    assert "NOT CONFIRMED: 2 repeated termination request(s); last error: EMR TerminateJobFlows j-1 failed" in words
    assert "small-0042 TERMINATED" in words and "swept: cluster small-0042 (4242) runs under the project's tags" in words
    assert "confirmed 2026-11-27T14:05:00" in words
    shown = [c.cluster_id for c in status.collect(registry, pools.load(provider="local"), config.load(), NOW).pools[0].clusters]
    assert "small-0001" in shown and "small-0003" not in shown  # the oldest confirmed one is not shown; the unconfirmed is


def test_main_prints_json_from_the_environment_client(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    seed(registry)
    assert status.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["cluster_id"] for c in data["pools"][0]["clusters"]] == ["small-0002", "small-0001"]
    assert {j["state"] for j in data["jobs"]} == {"SUBMITTED", "REQUEUED"}


def test_main_explains_an_unreachable_registry(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "missing")
    with mock_aws():
        assert status.main([]) == 2
    assert "cannot read the registry" in capsys.readouterr().err


def test_main_local_reads_the_local_stacks_registry(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotlake.stack import StackLayout

    seed(registry)
    made: list[dict[str, object]] = []
    real_client = boto3.client

    def client(service: str, **kwargs: object) -> object:
        made.append(kwargs)
        return real_client(service, region_name="us-east-1")  # moto's in-process mock stands in for the server

    monkeypatch.setattr(boto3, "client", client)
    assert status.main(["--local", "--json"]) == 0
    expected = stack.aws_env(StackLayout.default())
    assert made == [
        {
            "region_name": expected["AWS_DEFAULT_REGION"],
            "endpoint_url": expected["AWS_ENDPOINT_URL"],
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
    ]
    assert json.loads(capsys.readouterr().out)["jobs"]
