"""The fleet's logic on moto DynamoDB with a fake provider and a fake clock."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hooks.livy import probe_livy
from spotlake.fleet import Fleet, FleetReport
from spotlake.providers.base import (
    Cause,
    ClusterHealth,
    LaunchFailed,
    Liveness,
    ProviderError,
)
from spotlake.registry import Cluster, ClusterState, Job, JobState, Registry
from spotlake_dev.localstack.provider import LocalClusterProvider
from tests.support.fleet_fakes import FakeProvider, pool_config

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        yield reg


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def fleet(registry: Registry, provider: FakeProvider, clock: FakeClock) -> Fleet:
    return Fleet(registry, provider, clock)


def states(registry: Registry, pool: str = "small") -> dict[str, str]:
    return {c.cluster_id: c.state for c in registry.clusters(pool)}


def ready(registry: Registry, pool: str = "small") -> list[str]:
    return [c.cluster_id for c in registry.clusters(pool) if c.state == ClusterState.READY]


def submit(registry: Registry, job_key: str, pool: str = "small") -> Job:
    cluster = registry.ready_cluster(pool)
    job = registry.claim_job(job_key, pool, cluster, "run", expected=None)
    return registry.update_job(job, batch_id=1)


# --------------------------------------------------------------------------- launch


def test_launch_when_empty_then_nothing_to_do(fleet: Fleet, registry: Registry, provider: FakeProvider) -> None:
    pool = pool_config()
    report = fleet.reconcile(pool)
    assert provider.launched == ["small-0001"] and report.launched == ["small-0001"]
    cluster = registry.ready_cluster("small")
    assert cluster.cluster_id == "small-0001" and cluster.endpoint == "http://small-0001:8998"
    assert cluster.provider_id == "fake-small-0001" and cluster.launched_at.startswith("2026-11-27T12:00")
    assert any("launching: pool has no READY cluster" in line for line in report.lines())

    again = fleet.reconcile(pool)
    assert provider.launched == ["small-0001"] and again.events == []
    assert again.lines() == ["pool small: nothing to do"]


def test_booting_cluster_becomes_ready_on_a_later_run(registry: Registry, clock: FakeClock) -> None:
    provider = FakeProvider(boot_checks=2)
    fleet = Fleet(registry, provider, clock)
    pool = pool_config()
    fleet.launch(pool)
    assert states(registry) == {"small-0001": "LAUNCHING"} and registry.ready_cluster("small") is None
    fleet.launch(pool)  # still booting: no second launch
    assert provider.launched == ["small-0001"]
    report = fleet.launch(pool)
    assert states(registry) == {"small-0001": "READY"} and report.clusters("ready") == ["small-0001"]


def test_failed_launch_leaves_no_live_cluster_and_the_next_run_retries(
    fleet: Fleet, registry: Registry, provider: FakeProvider
) -> None:
    pool = pool_config()
    provider.fail_launch = LaunchFailed("EMR RunJobFlow failed: ValidationException: bad subnet")
    report = fleet.launch(pool)
    assert states(registry) == {"small-0001": "DEAD"}
    assert "launch failed" in registry.get_cluster("small", "small-0001").reason
    assert report.errors and "bad subnet" in report.errors[0]
    provider.fail_launch = None
    fleet.launch(pool)
    assert ready(registry) == ["small-0002"]


def test_launch_stuck_past_launch_timeout_is_declared_dead_and_replaced(registry: Registry, clock: FakeClock) -> None:
    provider = FakeProvider(boot_checks=1000)
    fleet = Fleet(registry, provider, clock)
    pool = pool_config()
    fleet.launch(pool)
    clock.advance(minutes=10)
    assert fleet.check_health(pool).events == []  # booting within launch_timeout is fine
    clock.advance(minutes=11)
    report = fleet.check_health(pool)
    assert report.dead == ["small-0001"] and provider.terminated == [("small-0001", "launch-timeout")]
    assert "launch_timeout 20m" in registry.get_cluster("small", "small-0001").reason
    provider.boot_checks = 0
    fleet.heal(pool)
    assert ready(registry) == ["small-0002"]


# --------------------------------------------------------------------------- health


def test_dead_cluster_detected_after_threshold_jobs_requeued_and_replaced(
    fleet: Fleet, registry: Registry, provider: FakeProvider
) -> None:
    pool = pool_config(failure_threshold=3)
    fleet.reconcile(pool)
    submit(registry, "shop_orders#w1")
    submit(registry, "shop_customers#w1")
    done = submit(registry, "shop_order_items#w1")
    registry.update_job(done, state=JobState.SUCCEEDED)

    provider.fail("small-0001")
    for count in (1, 2):
        report = fleet.check_health(pool)
        assert report.clusters("failed-check") == ["small-0001"] and report.dead == []
        cluster = registry.get_cluster("small", "small-0001")
        assert (cluster.state, cluster.failures) == ("READY", count)
        assert "connection refused" in cluster.last_failure
    assert registry.ready_cluster("small").cluster_id == "small-0001"  # still takes work

    report = fleet.check_health(pool)
    dead = registry.get_cluster("small", "small-0001")
    assert report.dead == ["small-0001"] and dead.state == ClusterState.DEAD
    assert "3 consecutive failed health checks" in dead.reason and "connection refused" in dead.reason
    assert provider.terminated == [("small-0001", "unhealthy")]
    assert sorted(report.requeued_jobs) == ["shop_customers#w1", "shop_orders#w1"]
    for key in ("shop_orders#w1", "shop_customers#w1"):
        job = registry.get_job(key)
        assert (job.state, job.moves) == (JobState.REQUEUED, 1) and "small-0001 DEAD" in job.reason
    assert registry.get_job("shop_order_items#w1").state == JobState.SUCCEEDED

    report = fleet.heal(pool)
    assert report.launched == ["small-0002"] and ready(registry) == ["small-0002"]
    assert registry.ready_cluster("small").cluster_id == "small-0002"
    assert registry.get_cluster("small", "small-0002").replaces == "small-0001"


def test_a_passing_check_resets_the_failure_count(fleet: Fleet, registry: Registry, provider: FakeProvider) -> None:
    pool = pool_config(failure_threshold=2)
    fleet.reconcile(pool)
    provider.fail("small-0001")
    fleet.check_health(pool)
    del provider.health_of["small-0001"]
    report = fleet.check_health(pool)
    assert report.clusters("recovered") == ["small-0001"]
    assert "healthy again after 1 failed check(s)" in report.lines()[0]
    provider.fail("small-0001")
    fleet.check_health(pool)
    assert registry.get_cluster("small", "small-0001").state == ClusterState.READY


def test_provider_saying_gone_is_dead_at_once(fleet: Fleet, registry: Registry, provider: FakeProvider) -> None:
    pool = pool_config(failure_threshold=5)
    fleet.reconcile(pool)
    submit(registry, "shop_orders#w1")
    provider.health_of["small-0001"] = ClusterHealth(
        Liveness.DEAD, "EMR cluster j-1 lost its spot capacity", Cause.SPOT_LOSS, definitive=True
    )
    report = fleet.reconcile(pool)
    assert report.dead == ["small-0001"] and report.requeued_jobs == ["shop_orders#w1"]
    assert provider.terminated == []  # already gone; nothing to terminate
    assert ready(registry) == ["small-0002"]


@pytest.fixture
def livy_answering_500() -> Iterator[str]:
    """A server on loopback that answers every GET with 500, as a Livy whose backend broke."""

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(500)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_livy_answering_500_is_a_failed_check_with_a_clear_reason(
    registry: Registry, clock: FakeClock, livy_answering_500: str
) -> None:
    class Processes:
        """Stands in for LocalProvider: the Livy process runs; terminating it is recorded."""

        def __init__(self) -> None:
            self.supervisor = self
            self.terminated: list[str] = []

        def is_running(self, name: str) -> bool:
            return name not in (f"livy-{c}" for c in self.terminated)

        def terminate(self, cluster_id: str) -> None:
            self.terminated.append(cluster_id)

    processes = Processes()
    provider = LocalClusterProvider(processes=processes, probe=probe_livy)  # type: ignore[arg-type]
    fleet = Fleet(registry, provider, clock)
    pool = pool_config(failure_threshold=2)
    cluster = Cluster(pool="small", cluster_id="small-0001", provider="local", state="", generation=1)
    registry.put_launching(cluster)
    registry.mark_ready(cluster, livy_answering_500)

    report = fleet.check_health(pool)
    [line] = report.lines()
    assert line == (
        f"pool small: cluster small-0001 failed-check: 1/2: Livy at {livy_answering_500} "
        "answered HTTP 500 Internal Server Error on GET /batches"
    )
    report = fleet.check_health(pool)
    assert report.dead == ["small-0001"] and processes.terminated == ["small-0001"]
    assert "HTTP 500" in registry.get_cluster("small", "small-0001").reason


# --------------------------------------------------------------------------- rotation


def test_rotation_replacement_ready_first_then_old_drains_and_stops_when_idle(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    pool = pool_config(max_age=timedelta(hours=6))
    fleet.reconcile(pool)
    job = submit(registry, "shop_orders#w1")
    clock.advance(hours=5, minutes=59)
    assert fleet.rotate(pool).events == []

    seen_while_launching: list[str] = []
    provider.on_launch = lambda _: seen_while_launching.append(registry.ready_cluster("small").cluster_id)
    clock.advance(minutes=2)
    report = fleet.rotate(pool)
    assert seen_while_launching == ["small-0001"]  # the old one took work while its replacement started
    assert report.launched == ["small-0002"] and "rotation of small-0001: 6h 1m old" in report.lines()[0]
    assert states(registry) == {"small-0001": "DRAINING", "small-0002": "READY"}
    assert registry.ready_cluster("small").cluster_id == "small-0002"
    assert registry.get_cluster("small", "small-0002").replaces == "small-0001"
    assert set(report.clusters("draining")) == {"small-0001"}  # still has a running job

    clock.advance(minutes=5)
    report = fleet.rotate(pool)
    assert states(registry)["small-0001"] == "DRAINING" and provider.terminated == []
    assert "1 job(s) still running; drain deadline in 25m" in report.lines()[0]

    registry.update_job(job, state=JobState.SUCCEEDED)
    report = fleet.rotate(pool)
    assert provider.terminated == [("small-0001", "rotation")]
    assert states(registry) == {"small-0001": "TERMINATED", "small-0002": "READY"}
    assert report.clusters("terminated") == ["small-0001"] and report.requeued_jobs == []
    # Our own termination is not mistaken for a death afterwards.
    assert fleet.check_health(pool).events == []


def test_a_drained_cluster_waits_for_the_jobs_index_before_it_counts_as_idle(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    """A job claimed on the old cluster just before the takeover reaches the index by cluster a
    moment later: the cluster is not terminated as idle within INDEX_SETTLE of its drain start."""
    pool = pool_config(max_age=timedelta(hours=1))
    fleet.reconcile(pool)
    clock.advance(hours=1)
    report = fleet.rotate(pool)
    assert states(registry) == {"small-0001": "DRAINING", "small-0002": "READY"}
    assert "no running job seen yet; idle check in 30s" in " ".join(report.lines())
    clock.advance(seconds=29)
    assert fleet.rotate(pool).clusters("terminated") == [] and provider.terminated == []
    clock.advance(seconds=1)
    assert fleet.rotate(pool).clusters("terminated") == ["small-0001"]


def test_drain_deadline_terminates_and_requeues_what_is_left(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    pool = pool_config(max_age=timedelta(hours=1), drain_deadline=timedelta(minutes=30))
    fleet.reconcile(pool)
    submit(registry, "shop_orders#w1")
    clock.advance(hours=1)
    fleet.reconcile(pool)
    assert states(registry) == {"small-0001": "DRAINING", "small-0002": "READY"}
    clock.advance(minutes=29)
    fleet.reconcile(pool)
    assert states(registry)["small-0001"] == "DRAINING"
    clock.advance(minutes=1)
    report = fleet.reconcile(pool)
    assert provider.terminated == [("small-0001", "drain-deadline")]
    assert states(registry)["small-0001"] == "TERMINATED"
    assert report.requeued_jobs == ["shop_orders#w1"]
    job = registry.get_job("shop_orders#w1")
    assert job.state == JobState.REQUEUED and job.reason.startswith("drain deadline")
    assert "drain deadline" in registry.get_cluster("small", "small-0001").reason


def test_replacement_dying_while_launching_is_replaced_without_losing_the_old(registry: Registry, clock: FakeClock) -> None:
    provider = FakeProvider()
    fleet = Fleet(registry, provider, clock)
    pool = pool_config(max_age=timedelta(hours=1))
    fleet.reconcile(pool)
    clock.advance(hours=2)
    provider.boot_checks = 10**6  # the replacement never comes up
    fleet.rotate(pool)
    assert states(registry) == {"small-0001": "READY", "small-0002": "LAUNCHING"}
    clock.advance(minutes=21)
    fleet.check_health(pool)
    assert registry.ready_cluster("small").cluster_id == "small-0001"  # still serving
    provider.boot_checks = 0
    fleet.rotate(pool)
    # The replacement took over; the old one drains, and having no job left once the jobs index
    # had time to show a late claim, is stopped.
    assert states(registry) == {"small-0001": "DRAINING", "small-0002": "DEAD", "small-0003": "READY"}
    clock.advance(seconds=30)
    fleet.rotate(pool)
    assert states(registry) == {"small-0001": "TERMINATED", "small-0002": "DEAD", "small-0003": "READY"}


# --------------------------------------------------------------------------- races


def test_interleaved_reconciles_launch_once_per_vacancy(registry: Registry, provider: FakeProvider, clock: FakeClock) -> None:
    pool = pool_config()
    a, b = Fleet(registry, provider, clock), Fleet(registry, provider, clock)
    seen_by_a = a.vacancy(pool)
    seen_by_b = b.vacancy(pool)
    assert seen_by_a == seen_by_b and seen_by_a.cluster_id == "small-0001"
    b.fill(pool, seen_by_b)
    report = FleetReport("small")
    assert a.fill(pool, seen_by_a, report) is None  # a acts on its stale read: loses the claim
    assert report.clusters("lost-race") == ["small-0001"]
    assert provider.launched == ["small-0001"] and ready(registry) == ["small-0001"]

    # Much staler: the vacancy a saw was filled, that cluster died and was replaced since.
    stale = a.vacancy(pool, rotation=False)
    assert stale is None
    seen_by_a = Fleet(registry, provider, clock).vacancy(pool_config(max_age=timedelta(0)), rotation=True)
    provider.fail("small-0001")
    for _ in range(3):
        b.check_health(pool)
    b.heal(pool)
    assert ready(registry) == ["small-0002"]
    assert a.fill(pool, seen_by_a) is None  # its id small-0002 exists already
    assert provider.launched == ["small-0001", "small-0002"] and ready(registry) == ["small-0002"]


def test_interleaved_rotations_give_one_replacement_and_never_two_ready(
    registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    pool = pool_config(max_age=timedelta(hours=1))
    a, b = Fleet(registry, provider, clock), Fleet(registry, provider, clock)
    a.reconcile(pool)
    clock.advance(hours=2)
    seen_by_a, seen_by_b = a.vacancy(pool, rotation=True), b.vacancy(pool, rotation=True)
    assert seen_by_a == seen_by_b and seen_by_a.replaces == "small-0001"

    ready_counts: list[int] = []
    provider.on_launch = lambda _: ready_counts.append(len(ready(registry)))
    b.fill(pool, seen_by_b)
    a.fill(pool, seen_by_a)
    a.rotate(pool)
    b.rotate(pool)
    ready_counts.append(len(ready(registry)))
    assert provider.launched == ["small-0001", "small-0002"]
    assert ready_counts == [1, 1] and ready(registry) == ["small-0002"]
    assert states(registry)["small-0001"] in ("DRAINING", "TERMINATED")


def test_two_runs_promoting_the_same_cluster_make_it_ready_once(registry: Registry, clock: FakeClock) -> None:
    provider = FakeProvider()
    pool = pool_config(max_age=timedelta(hours=1))
    a, b = Fleet(registry, provider, clock), Fleet(registry, provider, clock)
    a.reconcile(pool)
    clock.advance(hours=2)
    provider.boot_checks = 3
    a.rotate(pool)  # small-0002 LAUNCHING, booting
    assert states(registry) == {"small-0001": "READY", "small-0002": "LAUNCHING"}
    launching_a = registry.get_cluster("small", "small-0002")
    launching_b = registry.get_cluster("small", "small-0002")
    report_a, report_b = FleetReport("small"), FleetReport("small")
    b._promote(pool, launching_b, "http://small-0002:8998", report_b)
    a._promote(pool, launching_a, "http://small-0002:8998", report_a)  # stale copy
    assert report_b.clusters("ready") == ["small-0002"] and report_a.clusters("lost-race") == ["small-0002"]
    assert ready(registry) == ["small-0002"] and states(registry)["small-0001"] == "DRAINING"


def test_stale_health_check_cannot_kill_a_cluster_that_moved_on(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    pool = pool_config(failure_threshold=1, max_age=timedelta(hours=1))
    fleet.reconcile(pool)
    submit(registry, "shop_orders#w1")
    stale = registry.get_cluster("small", "small-0001")
    clock.advance(hours=2)
    fleet.rotate(pool)  # small-0001 -> DRAINING (its job still runs)
    provider.fail("small-0001")
    report = FleetReport("small")
    fleet._check(pool, stale, provider.health(stale), report)
    assert report.clusters("lost-race") == ["small-0001"]
    assert states(registry)["small-0001"] == "DRAINING"
    assert registry.get_job("shop_orders#w1").state == JobState.SUBMITTED


def test_report_says_which_cluster_why_and_which_jobs(fleet: Fleet, registry: Registry, provider: FakeProvider) -> None:
    pool = pool_config(failure_threshold=1)
    fleet.reconcile(pool)
    submit(registry, "shop_orders#w1")
    provider.fail("small-0001", "Livy process livy-small-0001 is not running")
    report = fleet.reconcile(pool)
    data = report.to_dict()
    assert data["dead"] == ["small-0001"] and data["requeued_jobs"] == ["shop_orders#w1"]
    assert any(
        line.startswith(
            "pool small: cluster small-0001 dead: 1 consecutive failed health checks; last: "
            "Livy process livy-small-0001 is not running; re-queued 1 job(s): shop_orders#w1"
        )
        for line in report.lines()
    )
    assert any(line.startswith("pool small: cluster small-0002 ready") for line in report.lines())


def test_each_look_at_the_clusters_is_reported_with_their_state_and_health(
    fleet: Fleet, registry: Registry, provider: FakeProvider
) -> None:
    pool = pool_config(failure_threshold=2)
    assert fleet.check_health(pool).log_lines() == [
        "pool small: checked no cluster (none LAUNCHING, READY or DRAINING)",
        "pool small: nothing to do",
    ]
    fleet.reconcile(pool)
    assert fleet.check_health(pool).log_lines() == ["pool small: checked small-0001 READY healthy", "pool small: nothing to do"]
    provider.fail("small-0001", "Livy at http://small-0001:8998 did not answer")
    report = fleet.check_health(pool)
    assert report.log_lines() == [
        "pool small: checked small-0001 READY failed: Livy at http://small-0001:8998 did not answer",
        "pool small: cluster small-0001 failed-check: 1/2: Livy at http://small-0001:8998 did not answer",
    ]
    assert report.to_dict()["checks"] == [
        [{"cluster": "small-0001", "state": "READY", "result": "failed: Livy at http://small-0001:8998 did not answer"}]
    ]


# ------------------------------------------------------------------- the pool's watcher


def test_attention_says_when_the_fleet_must_act_and_is_quiet_otherwise(
    fleet: Fleet,
    registry: Registry,
    provider: FakeProvider,
    clock: FakeClock,
) -> None:
    pool = pool_config()
    assert fleet.attention(pool) == ("urgent", "the pool has no READY or LAUNCHING cluster")
    fleet.launch(pool)
    assert fleet.attention(pool) == ("", "")  # one healthy READY cluster: nothing to do
    (cluster_id,) = ready(registry)
    provider.fail(cluster_id)
    kind, reason = fleet.attention(pool)
    assert kind == "urgent" and f"cluster {cluster_id} failed a health check" in reason
    assert states(registry) == {cluster_id: ClusterState.READY}  # it only looks
    del provider.health_of[cluster_id]
    clock.advance(hours=7)
    assert fleet.attention(pool) == ("periodic", f"cluster {cluster_id} is due for rotation (max_age 6h)")


def test_a_pass_confirms_a_failing_cluster_dead_and_launches_its_replacement(
    fleet: Fleet,
    registry: Registry,
    provider: FakeProvider,
) -> None:
    pool = pool_config(failure_threshold=3)
    fleet.launch(pool)
    (first,) = ready(registry)
    job = submit(registry, "p#w")
    provider.fail(first)
    waits: list[float] = []
    report = fleet.tend(pool, sleep=waits.append)
    assert waits == [15.0, 15.0]  # three checks, one health_check_interval apart, within the pass
    assert report.dead == [first] and report.requeued_jobs == [job.job_key]
    assert states(registry)[first] == ClusterState.DEAD and len(ready(registry)) == 1
    assert registry.get_job(job.job_key).state == JobState.REQUEUED
    # Terminated by this pass; the next one asks the provider whether it is gone.
    assert fleet.attention(pool) == ("periodic", f"cluster {first} is DEAD; the provider has not confirmed it gone")
    assert fleet.tend(pool, sleep=waits.append).clusters("confirmed") == [first]
    assert fleet.attention(pool) == ("", "")


def test_the_fleets_per_minute_path_queries_and_never_scans(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    """The watch's question and its passes (launch, rotate and drain, check, confirm a death,
    re-queue, heal) read clusters and jobs with Query and GetItem: no Scan, however many finished
    jobs the table holds."""
    calls: list[str] = []
    registry.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    pool = pool_config(max_age=timedelta(hours=1), failure_threshold=2)
    fleet.tend(pool, sleep=lambda _: None)
    for n in range(30):
        registry.update_job(submit(registry, f"old#{n}"), state=JobState.SUCCEEDED)
    running = submit(registry, "shop_orders#w1")
    fleet.attention(pool)
    clock.advance(hours=1)
    fleet.tend(pool, sleep=lambda _: None)  # rotation: small-0001 drains with a job on it
    assert states(registry) == {"small-0001": "DRAINING", "small-0002": "READY"}
    provider.fail("small-0001")
    fleet.attention(pool)
    report = fleet.tend(pool, sleep=lambda _: None)  # it dies while draining: its job is re-queued
    assert report.dead == ["small-0001"] and report.requeued_jobs == [running.job_key]
    fleet.heal(pool)
    assert "Scan" not in calls and {"Query", "GetItem"} <= set(calls)


def test_an_ended_cluster_is_asked_about_until_the_provider_confirms_it_gone(
    fleet: Fleet, registry: Registry, provider: FakeProvider
) -> None:
    pool = pool_config(failure_threshold=1)
    fleet.launch(pool)
    provider.fail("small-0001")
    provider.fail_terminate, provider.keep_failing = ProviderError("TerminateJobFlows: InternalServerError"), True
    report = fleet.tend(pool, sleep=lambda _: None)
    assert report.dead == ["small-0001"] and "could not be terminated" in report.errors[0]
    assert fleet.attention(pool) == ("periodic", "cluster small-0001 is DEAD; the provider has not confirmed it gone")

    report = fleet.tend(pool, sleep=lambda _: None)
    assert report.errors == [
        "cluster small-0001 is DEAD but still runs; termination request 1 failed (asked again next pass): "
        "TerminateJobFlows: InternalServerError"
    ]
    dead = registry.get_cluster("small", "small-0001")
    assert (dead.terminate_attempts, dead.terminate_error, dead.terminated_at) == (
        1,
        "TerminateJobFlows: InternalServerError",
        "",
    )

    provider.fail_terminate = None
    report = fleet.tend(pool, sleep=lambda _: None)
    assert report.clusters("still-running") == ["small-0001"] and provider.terminated == [("small-0001", "unhealthy")]
    report = fleet.tend(pool, sleep=lambda _: None)
    assert report.lines() == [
        "pool small: cluster small-0001 confirmed: DEAD: the provider confirms it no longer runs after 2 repeated request(s)"
    ]
    assert registry.get_cluster("small", "small-0001").terminated_at == T0.isoformat(timespec="milliseconds")
    assert fleet.attention(pool) == ("", "") and fleet.tend(pool, sleep=lambda _: None).events == []


def test_a_pass_over_a_healthy_pool_does_nothing_and_does_not_wait(fleet: Fleet, registry: Registry) -> None:
    pool = pool_config()
    fleet.launch(pool)
    waits: list[float] = []
    report = fleet.tend(pool, sleep=waits.append)
    assert waits == [] and report.lines() == ["pool small: nothing to do"]


def test_the_watch_trigger_wakes_on_a_failed_check_and_holds_periodic_needs(
    fleet: Fleet,
    registry: Registry,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from triggers.fleet import PoolWatchTrigger

    pool = pool_config()
    fleet.launch(pool)
    until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    trigger = PoolWatchTrigger(pool_name="small", until=until, interval=0.01, hold=60.0)
    assert PoolWatchTrigger(**trigger.serialize()[1]).serialize() == trigger.serialize()
    monkeypatch.setattr(trigger, "_fleet", lambda: (fleet, pool))

    async def first() -> Any:
        async def one() -> Any:
            async for event in trigger.run():
                return event.payload

        return await asyncio.wait_for(one(), timeout=2)

    (cluster_id,) = ready(registry)
    provider.fail(cluster_id)
    event = asyncio.run(first())
    assert event["status"] == "attention" and event["kind"] == "urgent" and cluster_id in event["reason"]
    # A rotation due is periodic: held for `hold` seconds, so the watch ends without waking first.
    del provider.health_of[cluster_id]
    fleet.clock = lambda: datetime.now(UTC) + timedelta(hours=7)
    trigger.until = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
    assert asyncio.run(first()) == {"status": "done"}


# --------------------------------------------------------------------------- meter (the cost ledger)


def test_the_fleet_meters_each_live_cluster_every_ten_minutes_and_once_more_when_its_end_is_confirmed(
    fleet: Fleet, registry: Registry, provider: FakeProvider, clock: FakeClock
) -> None:
    from spotlake.providers.base import InstanceUsage, decode_instances

    pool = pool_config(failure_threshold=1)
    started = T0.isoformat(timespec="milliseconds")
    provider.usage["small-0001"] = [InstanceUsage("m5.xlarge", "ON_DEMAND", "MASTER", started)]
    fleet.tend(pool, sleep=lambda _: None)
    metered = registry.get_cluster("small", "small-0001")
    assert decode_instances(metered.instances) == provider.usage["small-0001"]
    assert metered.metered_at == started and provider.instance_calls == ["small-0001"]

    clock.advance(minutes=9)
    fleet.tend(pool, sleep=lambda _: None)
    assert provider.instance_calls == ["small-0001"]  # not due yet
    clock.advance(minutes=2)
    provider.usage["small-0001"].append(InstanceUsage("r5.xlarge", "SPOT", "TASK", started))
    fleet.tend(pool, sleep=lambda _: None)
    assert len(decode_instances(registry.get_cluster("small", "small-0001").instances)) == 2

    # a provider that cannot tell fails nothing: the last record stays, asked again next pass
    clock.advance(minutes=11)
    provider.fail_instances = ProviderError("ListInstances: ThrottlingException")
    report = fleet.tend(pool, sleep=lambda _: None)
    assert report.errors == [] and len(decode_instances(registry.get_cluster("small", "small-0001").instances)) == 2
    provider.fail_instances = None

    # its end: the instances as the provider reports them when it confirms the cluster gone
    provider.fail("small-0001")
    ended = (clock.now + timedelta(minutes=1)).isoformat(timespec="milliseconds")
    provider.usage["small-0001"] = [InstanceUsage("m5.xlarge", "ON_DEMAND", "MASTER", started, ended)]
    fleet.tend(pool, sleep=lambda _: None)  # DEAD, terminated
    clock.advance(minutes=1)
    fleet.tend(pool, sleep=lambda _: None)  # confirmed gone
    gone = registry.get_cluster("small", "small-0001")
    assert gone.terminated_at == clock.now.isoformat(timespec="milliseconds")
    assert decode_instances(gone.instances)[0].end == ended
