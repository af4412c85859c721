"""The lake state contract (spark_jobs.common.lake_state) on moto's DynamoDB: watermark, window plans,
and the commit lock that only an attempt owning its job can take."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from spark_jobs.common.lake_state import (
    AttemptFenced,
    LakeState,
    LockBusy,
    LockLost,
    Owner,
    WindowRecord,
    iso,
    parse_history,
    parse_iso,
    parse_recent,
    snapshot_job_key,
)
from spotlake.registry import Cluster, Registry

T0 = datetime(2026, 12, 5, 5, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env() -> Iterator[tuple[Registry, LakeState, Clock, Cluster]]:
    with mock_aws():
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        registry.create_tables()
        cluster = Cluster(pool="small", cluster_id="a", provider="local", state="")
        registry.put_launching(cluster)
        registry.mark_ready(cluster, "http://a")
        clock = Clock()
        yield registry, LakeState(registry.client, "t", clock=clock), clock, cluster


def claim(registry: Registry, cluster: Cluster, job_key: str, run_id: str) -> Owner:
    job = registry.claim_job(job_key, "small", cluster, run_id, registry.get_job(job_key))
    return Owner(job_key, run_id, job.attempt)


def test_state_is_created_once_with_the_snapshot_pending_or_skipped(env: tuple) -> None:
    _, store, _, _ = env
    state = store.ensure("orders", True, T0)
    assert (state.snapshot, state.watermark, state.phase.finished) == ("PENDING", None, False)
    assert store.ensure("orders", False, T0).snapshot == "PENDING"  # created once: not replaced
    skipped = store.ensure("events", False, T0)
    assert (skipped.snapshot, skipped.watermark, skipped.phase.finished) == ("SKIPPED", iso(T0), True)


def test_a_window_plan_is_fixed_by_its_first_run(env: tuple) -> None:
    _, store, _, _ = env
    store.ensure("orders", True, T0)
    first = WindowRecord(
        pipeline="orders",
        window="20261205T050000Z",
        job_key="orders#20261205T050000Z",
        start=iso(T0),
        end=iso(T0),
        read_from="2026-12-05T04:00:00.000000+00:00",
        planned_at="p1",
    )
    assert store.plan_window(first) is first
    later = WindowRecord(**{**first.__dict__, "read_from": iso(T0), "planned_at": "p2"})
    assert store.plan_window(later).read_from == first.read_from
    assert [w.window for w in store.windows("orders")] == ["20261205T050000Z"]  # not the state item


def test_only_the_owner_of_its_job_takes_the_lock_and_a_zombie_holder_is_broken(env: tuple) -> None:
    registry, store, clock, cluster = env
    store.ensure("orders", True, T0)
    key = snapshot_job_key("orders")
    first = claim(registry, cluster, key, "run1")
    lock = store.acquire("orders", first, lease_s=60)
    store.renew(lock, lease_s=60)
    other = claim(registry, cluster, "orders#20261205T050000Z", "run9")
    with pytest.raises(LockBusy, match="held by orders#snapshot"):
        store.acquire("orders", other, lease_s=60)

    # The fleet re-queues the snapshot and attempt 2 claims it: attempt 1 is now a zombie.
    second = claim(registry, cluster, key, "run2")
    with pytest.raises(AttemptFenced, match="attempt 1 .* no longer owns its job"):
        store.renew(lock, lease_s=60)
    taken = store.acquire("orders", second, lease_s=60)  # breaks the zombie's lock at once
    assert taken.fence == lock.fence + 1
    with pytest.raises(AttemptFenced):
        store.acquire("orders", first, lease_s=60)
    with pytest.raises(LockLost):
        store.release(lock, {"watermark": iso(T0)})
    with pytest.raises(LockLost):
        store.mark_touched(lock, "snapshot", 1)
    assert store.get("orders").watermark is None

    store.release(taken, {"watermark": iso(T0), "failure_job": None})
    state = store.get("orders")
    assert (state.watermark, state.lock_owner) == (iso(T0), None)


def test_an_expired_lease_frees_the_lock(env: tuple) -> None:
    registry, store, clock, cluster = env
    store.ensure("orders", True, T0)
    a = claim(registry, cluster, "orders#w1", "run-a")
    b = claim(registry, cluster, "orders#w2", "run-b")
    held = store.acquire("orders", a, lease_s=30)
    clock.now += 31
    taken = store.acquire("orders", b, lease_s=30)
    assert taken.state.lock_owner == "run-b"
    with pytest.raises(LockLost):
        store.renew(held, lease_s=30)


def test_release_stores_the_window_result_with_its_touched_chunks(env: tuple) -> None:
    registry, store, _, cluster = env
    store.ensure("orders", True, T0)
    record = store.plan_window(
        WindowRecord(
            pipeline="orders", window="w1", job_key="orders#w1", start=iso(T0), end=iso(T0), read_from=iso(T0), planned_at="p"
        )
    )
    owner = claim(registry, cluster, "orders#w1", "run1")
    lock = store.acquire("orders", owner, lease_s=30)
    store.mark_touched(lock, "w1", 1)
    store.mark_touched(lock, "w1", 2)
    touched = store.window("orders", "w1")
    assert sorted(touched.touched) == [1, 2]
    done = WindowRecord(**{**touched.__dict__, "state": "COMMITTED", "rows_read": 5, "timings": {"read_s": 0.25}})
    store.release(lock, {"watermark": iso(T0)}, done)
    stored = store.window("orders", "w1")
    assert (stored.state, stored.rows_read, sorted(stored.touched), stored.timings) == ("COMMITTED", 5, [1, 2], {"read_s": 0.25})
    assert record.state == "PLANNED"


def test_a_failure_is_recorded_for_the_status(env: tuple) -> None:
    _, store, _, _ = env
    store.ensure("orders", True, T0)
    store.record_failure("orders", "orders#w1", "secret missing")
    state = store.get("orders")
    assert (state.failure_job, state.failure_reason) == ("orders#w1", "secret missing")


def test_a_commit_keeps_its_rows_and_watermark_for_the_status_page_and_asset_event(env: tuple) -> None:
    """The status command and the operations page (the state's ``recent`` and ``history``) and the
    Asset event (window_figures of the window's record) report the same rows and watermark."""
    from spotlake.freshness import read_states
    from spotlake.window_figures import window_figures

    registry, store, clock, cluster = env
    store.ensure("orders", False, T0)
    for n, (rows, minutes) in enumerate(((120, 5), (7, 10), (0, 15))):
        end = T0.replace(minute=minutes)
        record = store.plan_window(
            WindowRecord(
                pipeline="orders",
                window=f"w{n}",
                job_key=f"orders#w{n}",
                start=iso(T0),
                end=iso(end),
                read_from=iso(T0),
                planned_at="p",
            )
        )
        lock = store.acquire("orders", claim(registry, cluster, f"orders#w{n}", f"run{n}"), lease_s=30)
        done = WindowRecord(**{**record.__dict__, "state": "COMMITTED", "rows_written": rows, "committed_at": iso(end)})
        store.release(lock, {"watermark": iso(end)}, done)
        clock.now += 1
    state = read_states(store, ["orders"], history=True)["orders"]
    figures = window_figures(done, state)
    (*_, last) = parse_recent(state.recent)
    assert (
        (last.rows, last.watermark)
        == (figures["rows_written"], parse_iso(figures["watermark"]).timestamp())
        == (0, T0.replace(minute=15).timestamp())
    )
    assert [p.rows for p in parse_recent(state.recent)] == [120, 7, 0]
    # the day's history per ten minutes: 05:00-05:10 holds the first commit, 05:10-05:20 the other two
    # (their rows summed, the later watermark)
    assert [(p.rows, p.watermark) for p in parse_history(state.history)] == [
        (120, T0.replace(minute=5).timestamp()),
        (7, T0.replace(minute=15).timestamp()),
    ]
    # a reconciliation's release (no watermark) adds nothing
    lock = store.acquire("orders", claim(registry, cluster, "orders#reconcile", "r"), lease_s=30)
    store.release(lock, {"reconciled_at": iso(T0)}, WindowRecord(**{**done.__dict__, "window": "reconcile"}))
    assert read_states(store, ["orders"])["orders"].recent == state.recent
