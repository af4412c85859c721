"""docker-compose.yaml for real: the images built, the stack started under Podman with its own
start order and health checks, one extraction window run through the Airflow API and one
micro-batch of the click stream, each checked against its source, then everything removed.

Run with ``make compose-test`` (tests/compose/setup.sh installs Podman first). What this covers
and what it cannot is in docs/docker.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg2
import pymysql
import pytest
import requests

from spark_jobs.common.lake_state import LakeState
from spotlake import config, lake
from spotlake import stack as spotlake_stack
from spotlake_dev.clickgen.answers import expected_aggregates, valid_events
from spotlake_dev.clickgen.delivery import KafkaSink
from tests.compose.podman_stack import REPORT, ROOT, ComposeStack, Images, build_images, missing_tools
from tests.support.stream_harness import click_records, to_ms

pytestmark = pytest.mark.compose

PIPELINE = "shop_orders"
EXTRACT_DAG = f"extract_{PIPELINE}"
STREAM_DAG = "stream_clicks"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the compose tier needs {', '.join(missing)}: run tests/compose/setup.sh (make compose-test does)")
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def stack(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    stack = ComposeStack(tmp_path_factory.mktemp("compose-tier"), images)
    started = time.monotonic()
    left: list[str] = []
    try:
        leftovers = stack.remove()  # what an interrupted run left behind
        assert leftovers == [], f"could not remove what an earlier run left: {leftovers}"
        stack.up()
        yield stack
    finally:
        stopping = time.monotonic()
        left = stack.down()
        stack.timings["down"] = time.monotonic() - stopping
        stack.timings["stack in all"] = time.monotonic() - started
        write_report(images, stack)
    assert left == [], f"podman-compose down left {left} behind"


def write_report(images: Images, stack: ComposeStack) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": [{"name": b.name, "seconds": round(b.seconds, 1), "rebuilt": b.rebuilt} for b in images.built],
        "images_seconds": round(images.seconds, 1),
        "stack": {name: round(seconds, 1) for name, seconds in stack.timings.items()},
        "health_check_failures": stack.health.failures,
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")


# ----------------------------------------------------------------------------- clients
class AirflowApi:
    """Airflow's REST API as a user reaches it: a token from the UI login, then /api/v2."""

    def __init__(self, stack: ComposeStack) -> None:
        self.base = f"http://127.0.0.1:{stack.env['SPOTLAKE_AIRFLOW_PORT']}"
        token = requests.post(
            f"{self.base}/auth/token",
            json={"username": "admin", "password": stack.env["SPOTLAKE_AIRFLOW_ADMIN_PASSWORD"]},
            timeout=30,
        )
        token.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def get(self, path: str) -> requests.Response:
        return self.session.get(f"{self.base}/api/v2{path}", timeout=30)

    def wait_for_dag(self, dag_id: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.get(f"/dags/{dag_id}").status_code != 200:
            assert time.monotonic() < deadline, f"DAG {dag_id} not parsed after {timeout:.0f} s"
            time.sleep(5)

    def unpause(self, dag_id: str) -> None:
        done = self.session.patch(f"{self.base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30)
        assert done.status_code == 200, done.text

    def trigger(self, dag_id: str) -> str:
        done = self.session.post(f"{self.base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None}, timeout=30)
        assert done.status_code == 200, done.text
        return str(done.json()["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}").json().get("state"))
            if state in ("success", "failed"):
                return state
            assert time.monotonic() < deadline, f"{dag_id} run {run_id} still {state} after {timeout:.0f} s"
            time.sleep(5)

    def task_log_tails(self, dag_id: str, run_id: str) -> str:
        tails = []
        for ti in self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json().get("task_instances", []):
            if ti.get("state") == "failed":
                log = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}")
                tails.append(f"--- {ti['task_id']}:\n{log.text[-3000:]}")
        return "\n".join(tails)


@pytest.fixture(scope="module")
def api(stack: ComposeStack) -> AirflowApi:
    return AirflowApi(stack)


@pytest.fixture(scope="module")
def aws(stack: ComposeStack) -> Iterator[dict[str, str]]:
    """The stack's moto and S3 as the host reaches them (the code's own clients read these)."""
    env = spotlake_stack.aws_env(stack.layout)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


def source(stack: ComposeStack) -> pymysql.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=int(stack.env["SPOTLAKE_MYSQL_PORT"]),
        user=stack.env["SPOTLAKE_MYSQL_USER"],
        password=stack.env["SPOTLAKE_MYSQL_PASSWORD"],
        database=stack.env["SPOTLAKE_MYSQL_DATABASE"],
        autocommit=True,
    )


# ------------------------------------------------------------------------------- tests
def test_every_service_is_up_and_the_one_shots_finished(stack: ComposeStack) -> None:
    for service, spec in stack.services.items():
        status, code, health, _ = stack.state(service)
        if spec.get("restart") == "no":
            assert (status, code) == ("exited", 0), f"{service}: {status} (exit {code})\n{stack.logs(service)}"
        else:
            assert status == "running", f"{service}: {status}\n{stack.logs(service)}"
            if spec.get("healthcheck"):
                assert health == "healthy", f"{service}: {health}\n{stack.logs(service)}"
    assert "click stream: topic 'clicks'" in stack.logs("spotlake-setup", lines=20)


def test_one_extraction_window_through_the_airflow_api(stack: ComposeStack, api: AirflowApi, aws: dict[str, str]) -> None:
    """A run triggered as a user does, on the cluster the fleet DAG launched in the scheduler's
    container; the lake then holds every source row up to the committed watermark, as pymysql reads it."""
    api.wait_for_dag(EXTRACT_DAG)
    run_id = api.trigger(EXTRACT_DAG)
    started = time.monotonic()
    state = api.wait_for_run(EXTRACT_DAG, run_id, timeout=1200)
    stack.timings["extraction window (trigger to success)"] = time.monotonic() - started
    assert state == "success", f"{EXTRACT_DAG} run {run_id} {state}:\n{api.task_log_tails(EXTRACT_DAG, run_id)}"

    lake_state = LakeState(boto3.client("dynamodb"), "spotlake").get(PIPELINE)
    assert lake_state is not None and lake_state.watermark, f"{PIPELINE} has no committed watermark: {lake_state}"
    watermark = datetime.fromisoformat(lake_state.watermark).astimezone(UTC).replace(tzinfo=None)
    with source(stack).cursor() as cur:
        cur.execute("SELECT order_id, status, total, updated_at FROM orders WHERE updated_at < %s", (watermark,))
        expected = {row[0]: (row[1], row[2], row[3]) for row in cur.fetchall()}
    assert expected, "the demo shop has no orders before the watermark"
    rows = lake.read(config.load(ROOT / "config/pipelines.yaml"), PIPELINE).to_pylist()
    found = {row["order_id"]: row for row in rows}
    assert len(found) == len(rows), "the lake holds an order twice"
    missing = sorted(set(expected) - set(found))
    assert not missing, f"{len(missing)} orders before the watermark are not in the lake, e.g. {missing[:5]}"
    for order_id, (status, total, updated_at) in expected.items():
        row = found[order_id]
        assert (row["order_status"], row["total"], row["updated_at"].replace(tzinfo=None)) == (status, total, updated_at), (
            order_id
        )
        assert row["total_cents"] == int(total * 100)


def test_one_stream_micro_batch_through_the_supervisor(stack: ComposeStack, api: AirflowApi) -> None:
    """Click events sent to the stack's Kafka, the stream started by unpausing its supervisor DAG:
    PostgreSQL's aggregates equal those computed here from the events sent."""
    records, _ = click_records(seed=19, count=300)
    sink = KafkaSink(spotlake_stack.kafka_bootstrap(stack.layout), "clicks", connect_timeout=30.0)
    for key, value in records:
        sink.send(key, value)
    totals = sink.close(60.0)
    assert totals.delivered == len(records) and totals.failed == 0, totals
    expected = expected_aggregates(valid_events(records))

    api.wait_for_dag(STREAM_DAG)
    api.unpause(STREAM_DAG)
    run_id = api.trigger(STREAM_DAG)
    started = time.monotonic()
    found: dict[Any, Any] = {}
    deadline = started + 1200
    while time.monotonic() < deadline:
        found = aggregates(stack)
        if found == expected:
            break
        time.sleep(10)
    stack.timings["stream micro-batch (unpause to aggregates)"] = time.monotonic() - started
    assert found == expected, (
        f"aggregates in PostgreSQL: {len(found)} windows, expected {len(expected)}; supervisor run {run_id}:\n"
        f"{api.task_log_tails(STREAM_DAG, run_id)}"
    )


def aggregates(stack: ComposeStack) -> dict[tuple[int, str, str], tuple[int, int, int]]:
    try:
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=int(stack.env["SPOTLAKE_POSTGRES_PORT"]),
            user=stack.env["SPOTLAKE_POSTGRES_USER"],
            password=stack.env["SPOTLAKE_POSTGRES_PASSWORD"],
            dbname=stack.env["SPOTLAKE_POSTGRES_DATABASE"],
        )
    except psycopg2.OperationalError:
        return {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT to_regclass('clickstream.click_aggregates')")
            if cur.fetchone()[0] is None:
                return {}
            cur.execute("SELECT window_start, page, event_type, events, users, sessions FROM clickstream.click_aggregates")
            return {
                (to_ms(w), page, etype): (events, users, sessions) for w, page, etype, events, users, sessions in cur.fetchall()
            }
    finally:
        connection.close()
