"""The operations page in a real browser, in a real Airflow: headless Chromium (Debian's package,
driven by Playwright) logs in to the Airflow API server of the local stack, opens *spotlake
operations* from Airflow's menu and reads what it shows.

The API server runs with the project's plugin on its own port and registry prefix, over the
stack's moto (DynamoDB) and PostgreSQL (Airflow's metadata database), so a developer's running
stack is not touched; the registry holds the operations fixture (tests/support/operations_fixture.py):
pools with clusters in every state, a stale pipeline, a failing one, streams. Screenshots are
saved under the folder printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from spotlake.registry import Registry
from spotlake.stack import StackLayout
from spotlake_dev.localstack import services
from spotlake_dev.localstack.process import ServiceSpec, Supervisor, free_port
from tests.support import operations_fixture as fixture
from tests.support.browser import SCREENSHOTS

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("SPOTLAKE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def screenshots(layout: StackLayout, request: pytest.FixtureRequest) -> Path:
    folder = layout.data_dir / "screenshots" / "operations-page"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    request.config.stash.setdefault(SCREENSHOTS, []).append(str(folder))
    return folder


@pytest.fixture(scope="module")
def airflow_ui(
    layout: StackLayout,
    supervisor: Supervisor,
    postgres: dict[str, str],
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """An Airflow API server with the plugin over a registry filled with the operations fixture."""
    folder = tmp_path_factory.mktemp("ops-ui")
    pipelines_path = folder / "pipelines.yaml"
    pipelines = fixture.pipelines_config(pipelines_path, extra=4)
    prefix = f"ui{uuid.uuid4().hex[:8]}"  # tables of its own, dropped at the end
    registry = Registry(boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1"), prefix)
    registry.create_tables()
    fixture.fill(registry, pipelines)

    services.migrate_airflow_db(layout)
    port = free_port(18280)
    home = folder / "airflow"
    home.mkdir()
    env = {
        **services.airflow_env(layout),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "SPOTLAKE_REGISTRY_PREFIX": prefix,
        "SPOTLAKE_PIPELINES": str(pipelines_path),
    }

    def ready() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    airflow = services.airflow_binary(layout)
    spec = ServiceSpec(
        name="airflow-api-server-uitest",
        argv=[airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        ports=[port],
        ready=ready,
        env=env,
        ready_timeout=180,
    )
    supervisor.start(spec)
    try:
        password = json.loads((home / "passwords.json").read_text())["admin"]
        yield {"url": f"http://127.0.0.1:{port}", "password": password, "expected": fixture.Expected()}
    finally:
        supervisor.stop(spec.name)
        for table in registry.client.list_tables()["TableNames"]:
            if table.startswith(f"{prefix}-"):
                registry.client.delete_table(TableName=table)


def test_an_operator_logs_in_and_reads_pools_staleness_and_charts(airflow_ui: dict[str, Any], screenshots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expected: fixture.Expected = airflow_ui["expected"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(airflow_ui["url"] + "/")
            page.wait_for_url("**/auth/login**", timeout=60000)
            page.screenshot(path=str(screenshots / "1-login.png"))
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(airflow_ui["password"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60000)

            # From Airflow's own menu: Browse -> spotlake operations
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="spotlake operations").click()
            page.wait_for_url("**/plugin/spotlake", timeout=30000)
            frame = page.frame_locator("iframe")
            expect(frame.locator("h3", has_text="pool small")).to_be_visible(timeout=60000)
            expect(frame.locator("h3", has_text="pool large")).to_contain_text("no READY cluster")
            expect(frame.locator("table.pool").first).to_contain_text("small-0002")

            stale = frame.locator("#pipelines tr", has_text=expected.paused_stale)
            expect(stale.locator("td[data-status]")).to_have_attribute("data-status", "stale")
            expect(stale).to_contain_text("STALE")
            failing = frame.locator("#pipelines tr", has_text=expected.failing)
            expect(failing).to_contain_text("STALE: window failed")
            expect(frame.locator("#pipelines tr", has_text=expected.fresh).first).to_contain_text("fresh")
            expect(frame.locator("#moves")).to_contain_text("small-0001 → small-0002")
            costs = frame.locator("#costs tr", has_text="small-0002")
            expect(costs).to_contain_text("m5.xlarge on-demand")
            expect(costs).to_contain_text("25.00 USD")  # the pool's budget a day

            # the charts: drawn by plotly.js (one SVG per chart, with the freshness traces)
            expect(frame.locator("#chart-freshness .main-svg").first).to_be_visible(timeout=60000)
            expect(frame.locator("#chart-freshness .legendtext", has_text=expected.fresh).first).to_be_attached()
            expect(frame.locator("#chart-clusters .main-svg").first).to_be_visible()
            page.screenshot(path=str(screenshots / "2-operations-in-airflow.png"), full_page=True)

            # the page on its own, whole
            direct = browser.new_page(viewport={"width": 1440, "height": 1000})
            direct.context.add_cookies(page.context.cookies())
            direct.goto(airflow_ui["url"] + "/spotlake/")
            expect(direct.locator("#chart-lag .main-svg").first).to_be_visible(timeout=60000)
            direct.screenshot(path=str(screenshots / "3-operations-page.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in screenshots.iterdir()) == [
        "1-login.png",
        "2-operations-in-airflow.png",
        "3-operations-page.png",
    ]


def test_the_page_refuses_a_caller_without_login(airflow_ui: dict[str, Any]) -> None:
    refused = requests.get(airflow_ui["url"] + "/spotlake/api/overview", timeout=10)
    assert refused.status_code == 401 and "Not authenticated" in refused.text
    page = requests.get(airflow_ui["url"] + "/spotlake/", timeout=10, allow_redirects=False)
    assert page.status_code == 307 and page.headers["location"].startswith("/auth/login?next=")
