"""Warm execution's session slots and statements (spotlake.sessions) over moto's DynamoDB and an
in-memory Livy that keeps the session and statement states of Livy's REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spotlake import pools, sessions
from spotlake.errors import ConfigError
from spotlake.jobs import NoReadyCluster
from spotlake.pools import SessionSettings
from spotlake.registry import Cluster, JobState, Registry
from tests.support.session_livy import FakeLivy, Response
from triggers.livy import LivyBatchTrigger, LivyStatementTrigger

SETTINGS = SessionSettings(per_cluster=2, recycle_after=3, start_timeout=timedelta(seconds=5))


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        yield reg


@pytest.fixture
def livy() -> FakeLivy:
    return FakeLivy()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions.time, "sleep", lambda s: None)


def ready(registry: Registry, pool: str = "small", cluster_id: str = "c1") -> Cluster:
    cluster = Cluster(pool=pool, cluster_id=cluster_id, provider="local", state="")
    registry.put_launching(cluster)
    return registry.mark_ready(cluster, f"http://{cluster_id}")


def request(job_key: str, version: str = "v1") -> sessions.StatementRequest:
    return sessions.StatementRequest(
        job_key=job_key, pool="small", code_version=version, py_files=["s3://a/v1/spark_jobs.zip"], jars=["s3://a/x.jar"]
    )


def submit(registry: Registry, livy: FakeLivy, job_key: str, version: str = "v1", settings: SessionSettings = SETTINGS) -> Any:
    return sessions.submit_or_reconnect(
        registry,
        request(job_key, version),
        lambda endpoint: sessions.LivySessions(livy),
        lambda run_id: ["--job", run_id],
        settings,
    )


def finish(registry: Registry, job_key: str) -> None:
    job = registry.get_job(job_key)
    registry.update_job(job, state=JobState.SUCCEEDED)
    sessions.release_slot(registry, job.slot, job.cluster_id, job.run_id)


def test_a_session_is_started_and_loads_the_code_once_then_serves_the_next_windows(
    registry: Registry,
    livy: FakeLivy,
) -> None:
    ready(registry)
    first = submit(registry, livy, "p#w1").job
    assert (first.slot, first.session_id, first.statement_id, first.batch_id) == ("0", 0, 1, -1)
    assert livy.created[0]["kind"] == "pyspark" and livy.created[0]["jars"] == ["s3://a/x.jar"]
    assert "--job" in livy.window_statements(0)[0]["code"] and first.run_id in livy.window_statements(0)[0]["code"]
    finish(registry, "p#w1")
    second = submit(registry, livy, "p#w2").job
    assert (second.slot, second.session_id) == ("0", 0)
    assert len(livy.created) == 1 and livy.loads(0) == 1 and len(livy.window_statements(0)) == 2
    assert registry.get_slot("c1", "0").statements == 1


def test_windows_at_once_get_their_own_sessions_and_one_more_than_the_slots_waits(
    registry: Registry,
    livy: FakeLivy,
) -> None:
    ready(registry)
    a, b = submit(registry, livy, "p#a").job, submit(registry, livy, "q#a").job
    assert {a.slot, b.slot} == {"0", "1"} and a.session_id != b.session_id
    with pytest.raises(sessions.NoFreeSession, match="session slots of cluster c1"):
        submit(registry, livy, "r#a")


def test_a_statements_time_counts_from_its_post_not_from_the_sessions_start(
    registry: Registry, livy: FakeLivy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """statement_timeout is the statement's: a session that took long to start does not eat it."""
    ready(registry)
    clock = iter(datetime(2026, 12, 6, 1, 0, s, tzinfo=UTC) for s in range(0, 60, 1))
    stamps: list[str] = []

    def now() -> str:
        stamps.append(next(clock).isoformat(timespec="milliseconds"))
        return stamps[-1]

    monkeypatch.setattr(sessions, "now_iso", now)
    monkeypatch.setattr("spotlake.registry.now_iso", now)
    job = submit(registry, livy, "p#w1").job
    assert job.statement_id >= 0
    claimed = registry.get_slot("c1", "0").started_at  # the session started after the claim
    assert stamps[0] < claimed < job.submitted_at, (stamps, claimed, job.submitted_at)


def test_a_lease_whose_job_moved_on_is_taken_over(registry: Registry, livy: FakeLivy) -> None:
    ready(registry)
    submit(registry, livy, "p#a")
    submit(registry, livy, "q#a")
    # p#a's task died without releasing; its job was since marked FAILED by a retry's bookkeeping.
    job = registry.get_job("p#a")
    registry.update_job(job, state=JobState.FAILED)
    # A lease its job does not name is live for a grace period (its attempt may be claiming the job).
    with pytest.raises(sessions.NoFreeSession):
        submit(registry, livy, "r#a")
    slot = registry.get_slot("c1", job.slot)
    registry.update_slot(slot, leased_at="2026-01-01T00:00:00.000+00:00")
    taken = submit(registry, livy, "r#a").job
    assert taken.slot == job.slot and taken.session_id == job.session_id
    assert registry.get_slot("c1", job.slot).lease_job == "r#a"


def test_a_retried_task_reconnects_to_the_running_statement(registry: Registry, livy: FakeLivy) -> None:
    livy.statement_polls = 100
    ready(registry)
    first = submit(registry, livy, "p#a")
    again = submit(registry, livy, "p#a")
    assert again.reconnected and not first.reconnected
    assert again.job.statement_id == first.job.statement_id and len(livy.window_statements(0)) == 1


def test_a_run_claiming_a_job_keeps_its_fresh_lease_from_a_second_run_of_the_same_window(
    registry: Registry,
    livy: FakeLivy,
) -> None:
    cluster = ready(registry)
    settings = SessionSettings(per_cluster=1, start_timeout=timedelta(seconds=5))
    first = sessions.acquire_slot(registry, cluster, "p#a", "run-1", settings, "v1")
    # A second run of p#a arrives before the first claimed the job: the lease is not stale for it.
    with pytest.raises(sessions.NoFreeSession):
        sessions.acquire_slot(registry, cluster, "p#a", "run-2", settings, "v1")
    # But the attempt a retry replaces (its statement is gone) frees its lease at once.
    taken = sessions.acquire_slot(registry, cluster, "p#a", "run-2", settings, "v1", replacing="run-1")
    assert (taken.slot, taken.lease_run) == (first.slot, "run-2")


def test_a_dead_statement_of_the_only_session_is_replaced_by_the_retry(registry: Registry, livy: FakeLivy) -> None:
    ready(registry)
    settings = SessionSettings(per_cluster=1, start_timeout=timedelta(seconds=5))
    livy.statement_polls = 100
    first = submit(registry, livy, "p#a", settings=settings).job
    del livy.sessions[first.session_id]  # the session died with the statement
    again = submit(registry, livy, "p#a", settings=settings)
    assert not again.reconnected and again.job.attempt == 2 and again.job.session_id != first.session_id


def test_a_finished_statement_nobody_handled_is_reconnected_to_not_run_again(
    registry: Registry,
    livy: FakeLivy,
) -> None:
    ready(registry)
    first = submit(registry, livy, "p#a").job
    sessions.LivySessions(livy).wait_statement(first.session_id, first.statement_id, 1)  # it ends
    again = submit(registry, livy, "p#a")
    assert again.reconnected and len(livy.window_statements(0)) == 1


def test_a_dead_session_a_code_change_and_the_recycle_count_each_replace_the_session(
    registry: Registry,
    livy: FakeLivy,
) -> None:
    ready(registry)
    settings = SessionSettings(per_cluster=1, recycle_after=2, start_timeout=timedelta(seconds=5))
    submit(registry, livy, "p#1", settings=settings)
    finish(registry, "p#1")
    livy.sessions[0]["state"] = "dead"
    assert submit(registry, livy, "p#2", settings=settings).job.session_id == 1
    finish(registry, "p#2")
    assert submit(registry, livy, "p#3", version="v2", settings=settings).job.session_id == 2
    assert livy.deleted == [1]
    finish(registry, "p#3")
    assert submit(registry, livy, "p#4", version="v2", settings=settings).job.session_id == 2
    finish(registry, "p#4")
    assert submit(registry, livy, "p#5", version="v2", settings=settings).job.session_id == 3  # 2 windows ran
    assert "recycle_after" in registry.get_slot("c1", "0").reason


def test_a_session_that_never_starts_fails_the_submission_and_frees_the_slot(
    registry: Registry,
    livy: FakeLivy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready(registry)
    real = livy.run_method

    def dying(endpoint: str, method: str = "GET", data: Any = None, headers: Any = None) -> Response:
        response = real(endpoint, method, data, headers)
        if endpoint.count("/") == 2 and method == "GET":
            livy.sessions[int(endpoint.rsplit("/", 1)[1])]["state"] = "dead"
            return Response(200, {"state": "dead"})
        return response

    monkeypatch.setattr(livy, "run_method", dying)
    with pytest.raises(sessions.SubmitFailed, match="session 0 is dead"):
        submit(registry, livy, "p#a")
    assert registry.get_job("p#a").state == JobState.FAILED
    slot = registry.get_slot("c1", "0")
    assert (slot.lease_run, slot.session_id) == ("", -1)


def test_no_ready_cluster_is_said(registry: Registry, livy: FakeLivy) -> None:
    with pytest.raises(NoReadyCluster, match="pool 'small' has no READY cluster"):
        submit(registry, livy, "p#a")


@pytest.mark.parametrize(
    ("statement", "status", "code", "error"),
    [
        ({"state": "running"}, "running", None, ""),
        ({"state": "available", "output": {"status": "ok", "data": {"text/plain": "x\nSPOTLAKE_EXIT: 2"}}}, "success", 2, ""),
        (
            {"state": "available", "output": {"status": "error", "ename": "ValueError", "evalue": "bad\nvalue"}},
            "failed",
            None,
            "ValueError: bad value",
        ),
        ({"state": "cancelled", "output": None}, "cancelled", None, ""),
    ],
)
def test_statement_outcomes(statement: dict[str, Any], status: str, code: int | None, error: str) -> None:
    assert sessions.statement_status(statement) == status
    assert sessions.exit_code(statement) == code
    assert sessions.statement_error(statement) == error


def test_the_livy_triggers_serialize_to_what_they_were_built_from() -> None:
    statement = LivyStatementTrigger(
        endpoint="http://e",
        session_id=3,
        statement_id=7,
        job_key="p#w",
        deadline="2026-01-01T00:00:00+00:00",
        pool="small",
        cluster_id="c1",
        registry_prefix="t",
    )
    batch = LivyBatchTrigger(endpoint="http://e", batch_id=5, job_key="p#w", poll_interval=3.0, pool="small")
    for trigger, kind in ((statement, LivyStatementTrigger), (batch, LivyBatchTrigger)):
        path, kwargs = trigger.serialize()
        assert path == f"triggers.livy.{kind.__name__}"
        assert kind(**kwargs).serialize() == (path, kwargs)
    assert statement.serialize()[1]["statement_id"] == 7 and batch.serialize()[1]["poll_interval"] == 3.0


def test_pool_sessions_settings_default_to_the_pools_slots_and_refuse_bad_values(tmp_path: Path) -> None:
    def parse(sessions_entry: Any) -> Any:
        raw = {
            "pools": {
                "small": {
                    "max_batches": 3,
                    "local": {"master": "local[1]"},
                    **({"sessions": sessions_entry} if sessions_entry is not None else {}),
                }
            }
        }
        return pools.parse(raw, tmp_path / "pools.yaml").get("small").sessions

    default = parse(None)
    assert (default.enabled, default.per_cluster, default.inline_wait) == (True, 3, timedelta(seconds=20))
    sized = parse({"driver_memory": "2g", "num_executors": 2, "conf": {"spark.dynamicAllocation.enabled": True}})
    assert sized.livy_body() == {"driverMemory": "2g", "numExecutors": 2}
    assert dict(sized.conf) == {"spark.dynamicAllocation.enabled": "True"}
    with pytest.raises(ConfigError, match="driver_memory: '2 GB' is not a Spark memory size"):
        parse({"driver_memory": "2 GB"})
    with pytest.raises(ConfigError, match="per_cluster: 0 is not a positive integer"):
        parse({"per_cluster": 0})
    with pytest.raises(ConfigError, match="unknown"):
        parse({"sessions_per_cluster": 2})
    assert (default.recycle_heap, default.recycle_python_mb) == (0.8, 2048)
    assert parse({"recycle_heap": "65%"}).recycle_heap == 0.65 and parse({"recycle_heap": 0.5}).recycle_heap == 0.5
    for bad in ("0%", "120%", "most", True):
        with pytest.raises(ConfigError, match="recycle_heap: .* is not a share of the driver's heap; write e.g. 80%"):
            parse({"recycle_heap": bad})


def memory_statement(memory: dict[str, Any] | str) -> dict[str, Any]:
    line = memory if isinstance(memory, str) else json.dumps(memory)
    text = f"job output\nSPOTLAKE_EXIT: 0\n{sessions.MEMORY_MARK}{line}"
    return {"state": "available", "output": {"status": "ok", "data": {"text/plain": text}}}


@pytest.mark.parametrize(
    ("memory", "why"),
    [
        ({"heap_live_mb": 300.0, "heap_max_mb": 1000.0, "python_rss_mb": 150.0}, ""),
        (
            {"heap_live_mb": 820.0, "heap_max_mb": 1000.0, "python_rss_mb": 150.0},
            "driver heap live after GC 820 of 1000 MiB (sessions.recycle_heap 80%)",
        ),
        (
            {"heap_live_mb": 10.0, "heap_max_mb": 1000.0, "python_rss_mb": 2100.0},
            "session Python process at 2100 MiB (sessions.recycle_python_mb 2048)",
        ),
        ({"heap_live_mb": None, "heap_max_mb": None, "python_rss_mb": None}, ""),  # nothing readable: kept
        ("{not json", ""),
    ],
)
def test_a_session_that_grew_past_its_limits_is_recycled(memory: Any, why: str) -> None:
    found = sessions.session_memory(memory_statement(memory))
    assert sessions.grown_past(found, SessionSettings()) == why
    assert sessions.session_memory({"state": "available", "output": {"status": "ok"}}) == {}


def test_the_job_side_reports_its_session_memory_in_the_line_the_operator_reads() -> None:
    from spark_jobs.common import session

    class Usage:
        def __init__(self, used: int) -> None:
            self.used = used

        def getUsed(self) -> int:
            return self.used

        def getMax(self) -> int:
            return 1000 * session.MB

    class Pool:
        def __init__(self, kind: str, after_gc: int | None) -> None:
            self.kind, self.after_gc = kind, after_gc

        def getType(self) -> Any:
            return type("MemoryType", (), {"toString": lambda _: self.kind})()

        def getCollectionUsage(self) -> Usage | None:
            return None if self.after_gc is None else Usage(self.after_gc)

    class Management:
        @staticmethod
        def getMemoryPoolMXBeans() -> list[Pool]:
            return [
                Pool("Heap memory", 600 * session.MB),
                Pool("Heap memory", 20 * session.MB),
                Pool("Non-heap memory", 900 * session.MB),
                Pool("Non-heap memory", None),
            ]

        @staticmethod
        def getMemoryMXBean() -> Any:
            return type("Bean", (), {"getHeapMemoryUsage": staticmethod(lambda: Usage(0))})()

    class Spark:
        sparkContext = type(
            "SC",
            (),
            {
                "_jvm": type(
                    "JVM",
                    (),
                    {
                        "java": type(
                            "J", (), {"lang": type("L", (), {"management": type("M", (), {"ManagementFactory": Management})})}
                        )
                    },
                )
            },
        )

    found = session.memory(Spark())
    assert (found["heap_live_mb"], found["heap_max_mb"]) == (620.0, 1000.0)
    assert found["python_rss_mb"] is not None and found["python_rss_mb"] > 10
    assert sessions.grown_past(found, SessionSettings(recycle_heap=0.6)).startswith("driver heap live after GC 620")
    assert session.memory(object())["heap_live_mb"] is None  # no JVM: only the Python figure


def test_the_job_a_session_runs_is_one_the_artifacts_publish() -> None:
    """The statement path publishes the job it names and the session runs it by the same name."""
    from operators.livy_session import SessionStatementMixin
    from spark_jobs.common.session import ENTRIES
    from spotlake import artifacts

    assert SessionStatementMixin.entry in ENTRIES
    assert set(ENTRIES) <= set(artifacts.JOBS)
    for job in artifacts.JOBS:
        assert (artifacts.JOBS_DIR / job / "main.py").is_file(), f"spark_jobs/{job}/main.py is missing"


@pytest.mark.parametrize(
    ("statement", "said"),
    [
        (
            {"id": 0, "state": "available", "output": {"status": "error", "ename": "ImportError", "evalue": "no x"}},
            "ImportError: no x",
        ),
        ({"id": 0, "state": "error", "output": None}, "Livy statement 0 ended in state 'error' with no output"),
        (
            {"id": 2, "state": "cancelled", "output": {"status": "aborted"}},
            """Livy statement 2 ended in state 'cancelled' with {"status": "aborted"}""",
        ),
    ],
)
def test_a_statement_that_failed_without_error_text_is_named_by_its_state(statement: dict[str, Any], said: str) -> None:
    """A bootstrap statement that Livy ends without an error of its own still says why it stopped."""
    assert sessions.statement_failure(statement) == said
