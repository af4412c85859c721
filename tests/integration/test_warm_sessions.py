"""Windows as statements in long-lived Livy sessions (warm execution), driven as Airflow drives
them: real Livy servers (interactive sessions through the local REPL driver of jvm/livy-repl),
Spark, MariaDB, moto's DynamoDB and the lake's Iceberg catalog. Every check of the lake compares it
with an independent read of MySQL (pymysql) through pyiceberg.

A statement is held "running" for as long as a test needs by ``LOCK TABLES ... WRITE`` on the
source table in another MySQL connection: the window's read waits on it. The tests kill the
session or the cluster, retry the task or let the statement hang past its deadline while it
waits, then release the lock and check that the window finished exactly once on a new session.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
import yaml
from airflow.exceptions import TaskDeferred

from hooks.livy import EndpointLivyHook
from spark_jobs.common.lake_state import parse_iso
from spotlake.registry import Cluster, ClusterState, JobState
from tests.support.extraction_harness import (
    FIVE,
    ExtractionEnv,
    FakeTaskInstance,
    aws_connection,
    base_window,
    create_table,
    floor5,
    insert,
    lake_rows,
    naive,
    run_operator,
    source_rows,
    update,
)

pytestmark = pytest.mark.integration

SESSIONS = {"per_cluster": 2, "inline_wait": "20s", "statement_timeout": "30m", "start_timeout": "3m"}


@contextmanager
def environ(env: ExtractionEnv, moto_endpoint: str) -> Iterator[None]:
    values = {**env.environ(), "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(moto_endpoint)}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def livy_url(start_livy: Any) -> str:
    return start_livy("warm")


@pytest.fixture(scope="module")
def warm(
    mysql: dict[str, str], moto_endpoint: str, catalog_secret: str, livy_url: str, tmp_path_factory: pytest.TempPathFactory
) -> ExtractionEnv:
    return ExtractionEnv(mysql, moto_endpoint, livy_url, tmp_path_factory.mktemp("warm"), catalog_secret, sessions=dict(SESSIONS))


@pytest.fixture
def in_warm(warm: ExtractionEnv, moto_endpoint: str) -> Iterator[ExtractionEnv]:
    set_sessions(warm)
    with environ(warm, moto_endpoint):
        yield warm


def set_sessions(env: ExtractionEnv, **changes: Any) -> None:
    settings = yaml.safe_load(env.pools_path.read_text())
    settings["pools"][env.pool]["sessions"] = {**SESSIONS, **changes}
    env.pools_path.write_text(yaml.safe_dump(settings))


def livy(env: ExtractionEnv, path: str, method: str = "GET", url: str | None = None) -> Any:
    """Livy's answer to ``method path`` (JSON), through the same hook the operators use."""
    response = EndpointLivyHook(url or env.livy_url).run_method(path.lstrip("/"), method)
    response.raise_for_status()
    return response.json() if response.content else None


def window_statements(env: ExtractionEnv, session_id: int, url: str | None = None) -> list[dict[str, Any]]:
    """The statements of a session that ran a job (not the code loading)."""
    found = livy(env, f"/sessions/{session_id}/statements", url=url)["statements"]
    return [s for s in found if "_spotlake_run" in s["code"]]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_in_thread(step: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = step()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@contextmanager
def table_locked(env: ExtractionEnv, table: str) -> Iterator[Callable[[], None]]:
    """Hold ``LOCK TABLES table WRITE``: every read of the table waits. Yields the release."""
    conn = env.connect()
    with conn.cursor() as cur:
        cur.execute(f"LOCK TABLES {table} WRITE")
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            with conn.cursor() as cur:
                cur.execute("UNLOCK TABLES")
            released.set()

    try:
        yield release
    finally:
        release()
        conn.close()


def new_pipeline(env: ExtractionEnv, name: str) -> tuple[str, str, datetime]:
    """A table with 300 rows and its pipeline without an initial snapshot (``initial_load: false``):
    its first window, a statement, reads the 300 rows (their cursors lie in its lookback). Returns
    (table, pipeline, the next window)."""
    table = create_table(env, name)
    w0 = base_window()
    insert(env, table, [(i, f"c{i % 7}", "placed", Decimal(i) / 4, w0 - timedelta(seconds=i)) for i in range(1, 301)])
    pipeline = env.add_pipeline(f"{name}_{env.tag}", table, initial_load=False)
    first = run_operator(env.operator(pipeline), w0, w0 + FIVE)
    assert first["rows_read"] == 300 and parse_iso(env.state(pipeline).watermark) == w0 + FIVE
    return table, pipeline, w0 + FIVE


def change_rows(env: ExtractionEnv, table: str, window: datetime, first_id: int) -> None:
    """Inserts, updates and a soft delete with cursors inside ``window``."""
    insert(env, table, [(first_id + i, "new", "placed", Decimal("9.99"), window + timedelta(seconds=10 + i)) for i in range(25)])
    update(env, table, "status = 'paid', updated_at = %s WHERE id <= 20", naive(window + timedelta(seconds=50)))
    update(
        env,
        table,
        "deleted_at = %s, updated_at = %s WHERE id = 21",
        naive(window + timedelta(seconds=55)),
        naive(window + timedelta(seconds=55)),
    )


def running_statement(env: ExtractionEnv, job_key: str, attempt: int = 1) -> Any:
    """The job once its attempt ``attempt`` has a statement that Livy runs."""

    def found() -> Any:
        job = env.registry.get_job(job_key)
        if job is None or job.attempt != attempt or job.statement_id < 0:
            return None
        statement = livy(env, f"/sessions/{job.session_id}/statements/{job.statement_id}", url=job.endpoint)
        return job if statement["state"] == "running" else None

    return wait_for(found, 240, f"attempt {attempt} of {job_key} running as a statement")


# --------------------------------------------------------------------- tests
def test_windows_as_statements_commit_what_batches_commit(
    in_warm: ExtractionEnv,
    mysql: dict[str, str],
    moto_endpoint: str,
    catalog_secret: str,
    livy_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = in_warm
    table, pipeline, w = new_pipeline(env, "same")
    change_rows(env, table, w, 1000)
    warm_result = run_operator(env.operator(pipeline), w, w + FIVE)
    job = env.registry.get_job(f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}")
    assert job.in_session and job.session_id >= 0 and job.batch_id == -1 and job.state == JobState.SUCCEEDED
    assert warm_result["rows_read"] == 46
    # The next window reads the lookback again (the same rows, merged to the same state); the one
    # after it is quiet: nothing changed in its range, so it commits no data file and only moves
    # the watermark.
    again = run_operator(env.operator(pipeline), w + FIVE, w + 2 * FIVE)
    assert again["rows_read"] == 46
    current_before = env.lake_table(pipeline).num_rows
    quiet = run_operator(env.operator(pipeline), w + 2 * FIVE, w + 3 * FIVE)
    assert (quiet["rows_read"], quiet["rows_written"]) == (0, 0)
    assert quiet["current_snapshot_id"] == again["current_snapshot_id"]
    assert parse_iso(env.state(pipeline).watermark) == w + 3 * FIVE
    assert env.lake_table(pipeline).num_rows == current_before
    assert lake_rows(env, pipeline) == source_rows(env, table)

    # The same table through the batch path, in a lake of its own: the same rows.
    cold = ExtractionEnv(mysql, moto_endpoint, livy_url, tmp_path_factory.mktemp("cold"), catalog_secret)
    cold.add_pipeline(pipeline, table)
    with environ(cold, moto_endpoint):
        run_operator(cold.operator(pipeline), base_window(), base_window() + FIVE)  # snapshot: now all rows
        cold_w = floor5(parse_iso(cold.state(pipeline).watermark)) + FIVE
        cold_result = run_operator(cold.operator(pipeline), cold_w, cold_w + FIVE)
        assert cold.registry.get_job(f"{pipeline}#{cold_w.strftime('%Y%m%dT%H%M%SZ')}").batch_id >= 0
    assert cold_result["current_rows"] == warm_result["current_rows"] == 325
    assert lake_rows(cold, pipeline) == lake_rows(env, pipeline) == source_rows(env, table)


def test_a_session_killed_during_its_statement_is_replaced_and_the_window_finishes(in_warm: ExtractionEnv) -> None:
    env = in_warm
    table, pipeline, w = new_pipeline(env, "killsess")
    change_rows(env, table, w, 2000)
    job_key = f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}"
    with table_locked(env, table) as release:
        thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
        first = running_statement(env, job_key)
        livy(env, f"/sessions/{first.session_id}", method="DELETE")  # the session's driver dies
        second = wait_for(
            lambda: (j := env.registry.get_job(job_key)).attempt == 2 and j.statement_id >= 0 and j,
            240,
            "the window re-queued onto a new session",
        )
        release()
        thread.join(300)
    assert "error" not in out, out.get("error")
    assert second.session_id != first.session_id and second.moves == 1
    assert env.registry.get_job(job_key).state == JobState.SUCCEEDED
    assert out["result"]["rows_read"] == 46
    assert lake_rows(env, pipeline) == source_rows(env, table)
    slot = env.registry.get_slot(first.cluster_id, first.slot)
    assert slot.session_id != first.session_id


def test_a_retried_task_reconnects_to_its_running_statement(in_warm: ExtractionEnv) -> None:
    env = in_warm
    set_sessions(env, inline_wait="0s")
    table, pipeline, w = new_pipeline(env, "retry")
    change_rows(env, table, w, 3000)
    job_key = f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}"
    with table_locked(env, table) as release:
        # Try 1 posts its statement and defers; then its worker dies (the deferral is dropped).
        context: dict[str, Any] = {"data_interval_start": w, "data_interval_end": w + FIVE, "ti": FakeTaskInstance()}
        with pytest.raises(TaskDeferred):
            env.operator(pipeline).execute(context)
        first = running_statement(env, job_key)
        before = window_statements(env, first.session_id)
        # Try 2 (a new operator, as Airflow runs a retry) reconnects instead of posting again.
        thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
        time.sleep(3)
        release()
        thread.join(300)
    assert "error" not in out, out.get("error")
    job = env.registry.get_job(job_key)
    assert (job.attempt, job.session_id, job.statement_id) == (1, first.session_id, first.statement_id)
    # One statement for the window in Livy's list, not two.
    assert [s["id"] for s in window_statements(env, first.session_id)] == [s["id"] for s in before]
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_a_statement_hung_past_its_deadline_is_cancelled_and_finishes_on_a_new_session(
    in_warm: ExtractionEnv,
) -> None:
    env = in_warm
    set_sessions(env, inline_wait="2s", statement_timeout="20s")
    table, pipeline, w = new_pipeline(env, "hung")
    change_rows(env, table, w, 4000)
    job_key = f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}"
    with table_locked(env, table) as release:
        thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
        first = running_statement(env, job_key)
        second = wait_for(
            lambda: (j := env.registry.get_job(job_key)).attempt == 2 and j.statement_id >= 0 and j,
            240,
            "the hung statement re-queued",
        )
        release()
        thread.join(300)
    assert "error" not in out, out.get("error")
    assert second.session_id != first.session_id and second.moves == 1
    # The hung statement's session was deleted, and whatever it still ran with it.
    try:
        state = livy(env, f"/sessions/{first.session_id}")["state"]
    except requests.HTTPError as exc:
        state = f"HTTP {exc.response.status_code}"
    assert state in ("HTTP 404", "dead", "killed", "shutting_down"), state
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_a_cluster_killed_during_a_statement_moves_the_window_to_the_replacement(
    in_warm: ExtractionEnv,
    start_livy: Any,
    supervisor: Any,
) -> None:
    env = in_warm
    set_sessions(env, inline_wait="2s")
    # A pool of its own with a cluster of its own, so the module's cluster survives.
    doomed_url = start_livy("warm-doomed")
    pool = env.pool
    active = env.registry.ready_cluster(pool)
    doomed = Cluster(pool=pool, cluster_id=f"doomed-{env.tag}", provider="local", state="")
    env.registry.put_launching(doomed)
    env.registry.transition_cluster(active, ClusterState.DRAINING, "test: make way for the doomed cluster")
    env.registry.mark_ready(doomed, doomed_url)
    table, pipeline, w = new_pipeline(env, "killclu")
    change_rows(env, table, w, 5000)
    job_key = f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}"
    try:
        with table_locked(env, table) as release:
            thread, out = run_in_thread(lambda: run_operator(env.operator(pipeline), w, w + FIVE))
            first = running_statement(env, job_key)
            assert first.cluster_id == doomed.cluster_id
            supervisor.kill("livy-warm-doomed")  # the cluster and every session driver on it
            # What the fleet does: the dead cluster out, a READY one in (the module's, again).
            dead = env.registry.get_cluster(pool, doomed.cluster_id)
            env.registry.transition_cluster(dead, ClusterState.DEAD, "test: killed")
            back = env.registry.get_cluster(pool, active.cluster_id)
            replacement = Cluster(pool=pool, cluster_id=f"repl-{env.tag}", provider="local", state="")
            env.registry.put_launching(replacement)
            env.registry.mark_ready(replacement, back.endpoint)
            second = wait_for(
                lambda: (j := env.registry.get_job(job_key)).attempt == 2 and j.statement_id >= 0 and j,
                240,
                "the window re-queued onto the replacement",
            )
            release()
            thread.join(300)
    finally:
        supervisor.stop("livy-warm-doomed")
    assert "error" not in out, out.get("error")
    assert second.cluster_id == replacement.cluster_id and second.moves == 1
    assert env.registry.get_job(job_key).state == JobState.SUCCEEDED
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_new_job_code_replaces_the_session(in_warm: ExtractionEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env = in_warm
    table, pipeline, w = new_pipeline(env, "code")
    run_operator(env.operator(pipeline), w, w + FIVE)
    first = env.registry.get_job(f"{pipeline}#{w.strftime('%Y%m%dT%H%M%SZ')}")
    import operators.livy_session as livy_session

    real = livy_session.code_version
    monkeypatch.setattr(livy_session, "code_version", lambda published: "f" * 16 if real(published) else "")
    run_operator(env.operator(pipeline), w + FIVE, w + 2 * FIVE)
    second = env.registry.get_job(f"{pipeline}#{(w + FIVE).strftime('%Y%m%dT%H%M%SZ')}")
    slot = env.registry.get_slot(second.cluster_id, second.slot)
    assert slot.code_version == "f" * 16
    if second.slot == first.slot:
        assert second.session_id != first.session_id
    assert lake_rows(env, pipeline) == source_rows(env, table)


def test_a_session_grown_past_its_memory_limit_is_replaced_after_its_window(in_warm: ExtractionEnv) -> None:
    env = in_warm
    table, pipeline, w = new_pipeline(env, "grown")
    session_ids = []
    # Limits every session exceeds: the driver heap (live after GC) and then the Python process.
    for n, (limits, reason) in enumerate(
        [
            ({"recycle_heap": "0.01%"}, r"driver heap live after GC (\d+) of (\d+) MiB \(sessions.recycle_heap 0%\)"),
            ({"recycle_python_mb": 1}, r"session Python process at (\d+) MiB \(sessions.recycle_python_mb 1\)"),
        ]
    ):
        set_sessions(env, **limits)
        start = w + n * FIVE
        change_rows(env, table, start, 3000 + 1000 * n)
        run_operator(env.operator(pipeline), start, start + FIVE)
        job = env.registry.get_job(f"{pipeline}#{start.strftime('%Y%m%dT%H%M%SZ')}")
        assert job.state == JobState.SUCCEEDED and job.session_id not in session_ids
        session_ids.append(job.session_id)
        slot = env.registry.get_slot(job.cluster_id, job.slot)
        found = re.search(reason, slot.reason)
        assert slot.session_id == -1 and found, slot  # the figures the session reported
        assert all(int(figure) > 0 for figure in found.groups())
        # Deleted at once, not left to Livy's idle timeout.
        gone = job.session_id
        wait_for(
            lambda: gone not in {s["id"] for s in livy(env, "/sessions")["sessions"]},  # noqa: B023
            30,
            f"session {gone} deleted",
        )
    assert lake_rows(env, pipeline) == source_rows(env, table)
