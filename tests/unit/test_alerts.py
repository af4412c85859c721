"""Alerts: the conditions a status snapshot holds, and one raise and one clear each, on moto's DynamoDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from spotlake.alert_store import AlertRecord, AlertState, AlertStore, AlertTableMissing, Delivery
from spotlake.alerts import (
    CLAIM_LEASE,
    AlertKind,
    Condition,
    Event,
    Severity,
    claim_undelivered,
    evaluate,
    reconcile_alerts,
    record_delivery,
)
from spotlake.freshness import Freshness, FreshnessStatus
from spotlake.registry import Registry
from spotlake.status import ClusterRow, PoolView, Snapshot, StreamRow

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def cluster(cluster_id: str, state: str, reason: str = "") -> ClusterRow:
    return ClusterRow(cluster_id, state, "12m", "http://10.0.0.1:8998", reason, active=state == "READY")


def stream(name: str, state: str, restarts: int = 0, reason: str = "") -> StreamRow:
    return StreamRow(name, state, "large-0001", 7, 41, "20s", 12, restarts, "30s", reason)


def snapshot(
    freshness: list[Freshness] | None = None, pools: list[PoolView] | None = None, streams: list[StreamRow] | None = None
) -> Snapshot:
    return Snapshot(
        NOW.isoformat(),
        "emr",
        pools if pools is not None else [PoolView("small", "", [cluster("small-0002", "READY")])],
        [],
        freshness or [],
        [],
        streams or [],
    )


FAILING = Freshness(
    "orders",
    FreshnessStatus.FAILING,
    "2026-12-05T11:30:00+00:00",
    "30m",
    "source secret 'spotlake/mysql/shop' cannot be read (orders#20261205T1140Z failed at 2026-12-05T11:46:00+00:00)",
)
STALE = Freshness(
    "customers",
    FreshnessStatus.STALE,
    "2026-12-05T11:20:00+00:00",
    "40m",
    "stale since 2026-12-05T11:20:00+00:00: no window committed for 40m (paused DAG, scheduler or pool small down?)",
)


# ------------------------------------------------------------------ evaluate


def test_a_failing_pipeline_raises_a_critical_condition_naming_the_failed_window_and_what_to_do() -> None:
    (condition,) = evaluate(snapshot(freshness=[FAILING]))
    assert condition.key == "pipeline:orders:stale" and condition.kind == AlertKind.STALE
    assert condition.severity == Severity.CRITICAL and condition.title == "pipeline orders is failing"
    assert "stale since 2026-12-05T11:30:00+00:00 (30m behind)" in condition.message
    assert "orders#20261205T1140Z failed at" in condition.message and "cannot be read" in condition.message
    assert "DAG extract_orders" in condition.message


def test_a_stale_pipeline_raises_a_warning_naming_its_dag() -> None:
    (condition,) = evaluate(snapshot(freshness=[STALE]))
    assert (condition.key, condition.severity, condition.title) == (
        "pipeline:customers:stale",
        Severity.WARNING,
        "pipeline customers is stale",
    )
    assert "40m behind" in condition.message and "paused DAG" in condition.message
    assert "Check that DAG extract_customers is unpaused" in condition.message


def test_fresh_loading_and_never_run_pipelines_raise_nothing() -> None:
    rows = [
        Freshness("a", FreshnessStatus.FRESH, "2026-12-05T11:55:00+00:00", "5m"),
        Freshness("b", FreshnessStatus.LOADING, "", "-", "initial snapshot: 3 chunks, 300 rows committed"),
        # a new pipeline's DAG is created paused: nothing is owed until it is unpaused
        Freshness("c", FreshnessStatus.NEVER, "", "-", "its DAG extract_c has not run (paused?)"),
    ]
    assert evaluate(snapshot(freshness=rows)) == []


def test_a_failed_initial_snapshot_is_a_failing_pipeline() -> None:
    row = Freshness(
        "d", FreshnessStatus.FAILING, "", "-", "initial snapshot: 2 chunks, 200 rows committed; boom (d#snapshot failed)"
    )
    (condition,) = evaluate(snapshot(freshness=[row]))
    assert condition.message.startswith("Its initial load has not finished: initial snapshot: 2 chunks")


def test_a_pool_without_a_ready_cluster_raises_and_lists_its_clusters() -> None:
    pools = [
        PoolView("small", "", [cluster("small-0003", "LAUNCHING"), cluster("small-0002", "DEAD", "spot capacity reclaimed")]),
        PoolView("large", "", []),
        PoolView("medium", "", [cluster("medium-0002", "READY"), cluster("medium-0001", "DRAINING")]),
    ]
    conditions = {c.key: c for c in evaluate(snapshot(pools=pools))}
    assert set(conditions) == {"pool:small:no_ready", "pool:large:no_ready"}
    small = conditions["pool:small:no_ready"]
    assert small.severity == Severity.CRITICAL and small.title == "pool small has no READY cluster"
    assert (
        "small-0003 LAUNCHING" in small.message and "small-0002 DEAD (12m since launch: spot capacity reclaimed)" in small.message
    )
    assert "DAG fleet_small" in small.message
    assert "It has no cluster." in conditions["pool:large:no_ready"].message


def test_a_stream_whose_supervisor_backed_off_raises_with_the_supervisors_reason() -> None:
    why = "5 restarts within 1h (restart_budget 5 per 1h): not restarting until ... is 1h old; the last: ended: OOM"
    streams = [stream("clicks", "BACKED_OFF", 5, why), stream("views", "RESTARTED", 4), stream("new", "(not supervised yet)")]
    (condition,) = evaluate(snapshot(streams=streams))
    assert condition.key == "stream:clicks:restart_budget" and condition.severity == Severity.CRITICAL
    assert why in condition.message and "DAG stream_clicks" in condition.message


def test_settings_disable_a_kind_and_delay_another() -> None:
    class Setting:
        def __init__(self, enabled: bool, after: timedelta) -> None:
            self.enabled, self.after = enabled, after

    found = evaluate(
        snapshot(freshness=[FAILING], pools=[PoolView("small", "", [])]),
        {AlertKind.STALE: Setting(False, timedelta(0)), AlertKind.NO_READY: Setting(True, timedelta(minutes=15))},
    )
    assert [(c.key, c.after) for c in found] == [("pool:small:no_ready", timedelta(minutes=15))]


# ------------------------------------------------------------------ raise once, clear once


@pytest.fixture
def store() -> Iterator[AlertStore]:
    with mock_aws():
        registry = Registry(boto3.client("dynamodb", region_name="us-east-1"), "t")
        registry.create_tables()
        yield AlertStore(registry.client, registry.prefix)


def condition(key_subject: str = "orders", after: timedelta = timedelta(0)) -> Condition:
    return Condition(AlertKind.STALE, key_subject, Severity.CRITICAL, f"pipeline {key_subject} is failing", "fix it", after)


def run(store: AlertStore, firing: list[Condition], minutes: float, delivered: bool = True) -> tuple[list[str], list[str]]:
    """One alerts run at NOW + ``minutes``: the keys it raised and cleared (their delivery recorded done)."""
    now = NOW + timedelta(minutes=minutes)
    raised, cleared = reconcile_alerts(store, firing, now)
    if delivered:
        for transition in raised + cleared:
            assert record_delivery(store, transition, {}, now)
    return [t.record.alert for t in raised], [t.record.alert for t in cleared]


def test_a_condition_raises_once_while_it_holds_and_clears_once(store: AlertStore) -> None:
    assert run(store, [condition()], 0) == (["pipeline:orders:stale"], [])
    assert run(store, [condition()], 5) == ([], [])
    assert run(store, [condition()], 10) == ([], [])
    assert run(store, [], 15) == ([], ["pipeline:orders:stale"])
    assert run(store, [], 20) == ([], [])
    record = store.get("pipeline:orders:stale")
    assert record is not None and record.state == AlertState.CLEARED and record.delivery == Delivery.DONE
    assert (record.raised_at, record.cleared_at) == ("2026-12-05T12:00:00+00:00", "2026-12-05T12:15:00+00:00")
    # it holds again: a new raise
    assert run(store, [condition()], 25) == (["pipeline:orders:stale"], [])


def test_the_clear_says_what_was_wrong_and_for_how_long(store: AlertStore) -> None:
    raised, _ = reconcile_alerts(store, [condition()], NOW)
    assert raised[0].headline == "CRITICAL: pipeline orders is failing" and raised[0].message == "fix it"
    _, cleared = reconcile_alerts(store, [], NOW + timedelta(minutes=42))
    (clear,) = cleared
    assert clear.event == Event.CLEARED and clear.headline == "resolved: pipeline orders is failing"
    assert clear.message == (
        "Raised at 2026-12-05T12:00:00+00:00, cleared at 2026-12-05T12:42:00+00:00 after 42m. It was: fix it"
    )
    context = clear.to_context()
    assert context["event"] == "cleared" and context["at"] == "2026-12-05T12:42:00+00:00"
    assert context["text"].startswith("resolved: pipeline orders is failing\nRaised at")


def test_a_condition_with_after_is_raised_only_once_it_has_held_that_long(store: AlertStore) -> None:
    pool = Condition(
        AlertKind.NO_READY, "small", Severity.CRITICAL, "pool small has no READY cluster", "m", timedelta(minutes=15)
    )
    assert run(store, [pool], 0) == ([], [])
    record = store.get("pool:small:no_ready")
    assert record is not None and record.state == AlertState.PENDING
    assert run(store, [pool], 10) == ([], [])
    assert run(store, [pool], 15) == (["pool:small:no_ready"], [])
    assert run(store, [], 20) == ([], ["pool:small:no_ready"])
    # held shorter than its after: never raised, so nothing to clear either
    assert run(store, [pool], 25) == ([], [])
    assert run(store, [], 30) == ([], [])
    record = store.get("pool:small:no_ready")
    assert record is not None and record.state == AlertState.CLEARED and record.raised_at == ""


def test_alerts_of_a_kind_left_out_are_left_as_they_are(store: AlertStore) -> None:
    run(store, [condition()], 0)
    raised, cleared = reconcile_alerts(store, [], NOW + timedelta(minutes=5), kinds=[AlertKind.NO_READY])
    assert (raised, cleared) == ([], [])
    record = store.get("pipeline:orders:stale")
    assert record is not None and record.state == AlertState.FIRING


def test_two_reconcilers_at_once_win_each_transition_once(store: AlertStore) -> None:
    """Two alert tasks at once, at their worst: both read the record before either writes, then
    both write what they decided. (Played in turn: moto checks a write's condition and writes
    without a lock, which DynamoDB does atomically, so threads would race inside moto itself.)"""

    class ReadEarlier(AlertStore):
        def __init__(self, records: list[AlertRecord]) -> None:
            super().__init__(store.client, store.prefix)
            self.records = records

        def all(self) -> list[AlertRecord]:
            return self.records

    def race(firing: list[Condition], at: datetime) -> list[tuple[list[str], list[str]]]:
        records = store.all()
        outcomes = []
        for _ in range(2):
            raised, cleared = reconcile_alerts(ReadEarlier(records), firing, at)
            outcomes.append((sorted(t.record.alert for t in raised), sorted(t.record.alert for t in cleared)))
        return outcomes

    firing = [condition("orders"), condition("customers")]
    assert race(firing, NOW) == [(["pipeline:customers:stale", "pipeline:orders:stale"], []), ([], [])]
    assert race(firing, NOW + timedelta(minutes=5)) == [([], []), ([], [])]
    assert race([], NOW + timedelta(minutes=10)) == [([], ["pipeline:customers:stale", "pipeline:orders:stale"]), ([], [])]
    # pending, then due: one promotes it
    pool = Condition(AlertKind.NO_READY, "small", Severity.CRITICAL, "t", "m", timedelta(minutes=15))
    assert race([pool], NOW + timedelta(minutes=20)) == [([], []), ([], [])]
    assert race([pool], NOW + timedelta(minutes=35)) == [(["pool:small:no_ready"], []), ([], [])]
    # and of two claims of an owed delivery, one wins
    (raised,), _ = reconcile_alerts(store, [condition("lineitems")], NOW + timedelta(minutes=40))
    assert record_delivery(store, raised, {"oncall": "down"}, NOW + timedelta(minutes=40))
    later = NOW + timedelta(minutes=45)
    records = store.all()
    first, second = claim_undelivered(ReadEarlier(records), later), claim_undelivered(ReadEarlier(records), later)
    # owed: the failed one, and the clears above, whose claims (never recorded) are older than the lease
    assert sorted((t.record.alert, t.event, t.notifiers) for t in first) == [
        ("pipeline:customers:stale", Event.CLEARED, None),
        ("pipeline:lineitems:stale", Event.RAISED, ("oncall",)),
        ("pipeline:orders:stale", Event.CLEARED, None),
    ]
    assert second == []


def test_the_alerts_table_missing_is_an_error_naming_the_setup_step() -> None:
    with mock_aws():
        store = AlertStore(boto3.client("dynamodb", region_name="us-east-1"), "none")
        with pytest.raises(AlertTableMissing, match=r"none-alerts .* `python -m spotlake.aws_setup --prefix none`"):
            reconcile_alerts(store, [condition()], NOW)


# ------------------------------------------------------------------ delivery owed


def test_a_failed_notifier_is_owed_the_transition_until_it_is_sent(store: AlertStore) -> None:
    (raised,), _ = reconcile_alerts(store, [condition()], NOW)
    assert raised.notifiers is None  # a new transition: every notifier of its kind
    assert record_delivery(store, raised, {"oncall": "SMTPConnectError: refused"}, NOW)
    record = store.get("pipeline:orders:stale")
    assert record is not None and (record.delivery, record.retry) == (Delivery.RETRY, ["oncall"])
    assert record.last_error == "oncall: SMTPConnectError: refused"

    later = NOW + timedelta(minutes=5)
    assert reconcile_alerts(store, [condition()], later) == ([], [])  # raised once
    (owed,) = claim_undelivered(store, later)
    assert (owed.event, owed.notifiers, owed.record.attempts) == (Event.RAISED, ("oncall",), 2)
    assert claim_undelivered(store, later) == []  # claimed: no other run sends it meanwhile
    assert record_delivery(store, owed, {}, later)
    assert claim_undelivered(store, later + timedelta(minutes=5)) == []
    record = store.get("pipeline:orders:stale")
    assert record is not None and (record.delivery, record.retry, record.last_error) == (Delivery.DONE, [], "")


def test_a_delivery_claimed_by_a_task_that_died_is_taken_over_after_the_lease(store: AlertStore) -> None:
    reconcile_alerts(store, [condition()], NOW)  # won, claimed, never recorded
    assert claim_undelivered(store, NOW + CLAIM_LEASE - timedelta(seconds=1)) == []
    (owed,) = claim_undelivered(store, NOW + CLAIM_LEASE)
    assert owed.event == Event.RAISED and owed.notifiers is None  # to every notifier: which ones it reached is unknown


def test_a_clear_supersedes_a_raise_still_owed(store: AlertStore) -> None:
    (raised,), _ = reconcile_alerts(store, [condition()], NOW)
    record_delivery(store, raised, {"oncall": "down"}, NOW)
    _, (clear,) = reconcile_alerts(store, [], NOW + timedelta(minutes=5))
    assert clear.notifiers is None and "It was: fix it" in clear.message
    assert claim_undelivered(store, NOW + timedelta(minutes=5)) == []


def test_recording_a_superseded_delivery_changes_nothing(store: AlertStore) -> None:
    (raised,), _ = reconcile_alerts(store, [condition()], NOW)
    _, (clear,) = reconcile_alerts(store, [], NOW + timedelta(minutes=1))
    assert not record_delivery(store, raised, {}, NOW + timedelta(minutes=1))
    record = store.get("pipeline:orders:stale")
    assert record is not None and record.state == AlertState.CLEARED and record.delivery == Delivery.SENDING
    assert record_delivery(store, clear, {}, NOW + timedelta(minutes=1))


def test_a_stored_record_reads_back_as_written(store: AlertStore) -> None:
    written = store.put(
        AlertRecord("pool:small:no_ready", "no_ready", "small", AlertState.FIRING, retry=["a", "b"], attempts=3), "t0"
    )
    assert written.version == 1
    assert store.get("pool:small:no_ready") == replace(written)
