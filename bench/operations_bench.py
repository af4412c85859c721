"""The operations page's API with 200 pipelines and 20 clusters in the registry: latency p50/p95.

A moto server process (DynamoDB over HTTP on loopback, as the local stack's registry) is filled
with the operations fixture (tests/support/operations_fixture.py) scaled to ``--pipelines``
pipelines (each with a day of commits every five minutes, and an hour of finished jobs) and 20
clusters in every state; the page's app (plugins/ui/app.py, the same code and refresh settings
the Airflow plugin mounts) is served by uvicorn on loopback, and ``--requests`` GETs of
``api/overview`` (the tables) and of ``api/charts`` (the four charts) are timed one after the
other. Beside them, how long one read of the registry for each takes (what the page's background
refresh costs, and how old its figures can be). ``--screenshot PATH`` also saves the page as
headless Chromium draws it (Debian's chromium through Playwright).

    .venv/bin/python bench/operations_bench.py --pipelines 200 --requests 100

Writes docs/benchmarks/operations-page.md unless --print-only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import requests
import uvicorn

from spotlake.registry import Cluster, JobState, Registry
from tests.support import operations_fixture as fixture
from ui.app import RegistrySource, create_app

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "operations-page.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def timed(url: str, count: int) -> tuple[list[float], int]:
    session = requests.Session()
    times, size = [], 0
    for _ in range(count):
        start = time.perf_counter()
        response = session.get(url, timeout=30)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return times, size


def timed_call(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def finished_jobs(registry: Registry, pipelines: list[str], per_pipeline: int) -> int:
    """``per_pipeline`` finished window jobs of each pipeline (an hour of five-minute windows)."""
    cluster = Cluster(pool="small", cluster_id="small-0002", provider="local", state="READY", endpoint="http://127.0.0.1:1")
    count = 0
    for name in pipelines:
        for n in range(per_pipeline):
            job = registry.claim_job(f"{name}#w{n:02d}", "small", cluster, "bench", None)
            registry.update_job(job, state=JobState.SUCCEEDED)
            count += 1
    return count


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("SPOTLAKE_CHROMIUM", "/usr/bin/chromium"))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#chart-lag .main-svg", timeout=30000)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args(argv)

    moto_port, app_port = free_port(), free_port()
    moto_bin = Path(sys.executable).with_name("moto_server")
    moto = subprocess.Popen(
        [str(moto_bin), "-H", "127.0.0.1", "-p", str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "SPOTLAKE_REGISTRY_PREFIX": "opsbench"})
    try:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{moto_port}")
        for _ in range(100):
            try:
                client.list_tables()
                break
            except Exception:  # noqa: BLE001 - the server is starting
                time.sleep(0.1)
        registry = Registry(client)
        registry.create_tables()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pipelines.yaml"
            base = len(fixture.pipelines_config(path).pipelines)
            pipelines = fixture.pipelines_config(path, extra=args.pipelines - base)
            os.environ["SPOTLAKE_PIPELINES"] = str(path)
            started = time.perf_counter()
            fixture.fill(registry, pipelines, clusters_per_pool=17)  # and 3 in pool large: 20
            clusters = sum(len(registry.clusters(p)) for p in ("small", "large"))
            jobs = finished_jobs(registry, [p.name for p in pipelines.pipelines], per_pipeline=12)
            fill_s = time.perf_counter() - started
            source = RegistrySource(lambda: registry, lambda: fixture.paused(pipelines))
            reads = {
                "overview": [timed_call(lambda: source.overview(datetime.now(UTC))) for _ in range(5)],
                "charts": [timed_call(lambda: source.history(datetime.now(UTC))) for _ in range(5)],
            }
            app = create_app(source, refresh_s=(10.0, 60.0))
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=app_port, log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            base_url = f"http://127.0.0.1:{app_port}"
            timed(f"{base_url}/api/overview", 3)  # warm up: the configuration's first parse
            timed(f"{base_url}/api/charts", 1)
            overview, overview_bytes = timed(f"{base_url}/api/overview", args.requests)
            charts, charts_bytes = timed(f"{base_url}/api/charts", args.requests)
            if args.screenshot:
                screenshot(f"{base_url}/", args.screenshot)
            server.should_exit = True
            thread.join(10)
    finally:
        moto.terminate()
        moto.wait(10)
    lines = [
        "# The operations page's API",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this project's 2-core machine with "
        f"`.venv/bin/python bench/operations_bench.py --pipelines {args.pipelines} --requests {args.requests}`: "
        f"{len(pipelines.pipelines)} pipelines (each with a day "
        f"of commits every five minutes in its state's history), {jobs} finished jobs (an hour of windows) and a moved "
        f"one, {clusters} clusters in every state over two pools, two streams, in a moto server's DynamoDB on loopback "
        "(the local stack's registry); the page's app served by uvicorn on loopback with the plugin's refresh settings "
        f"(overview every 10 s, charts every 60 s while the page is open), {args.requests} sequential GETs of each "
        f"endpoint after a warm-up. Filling the registry took {fill_s:.0f} s (not in the figures).",
        "",
        "| endpoint | what it returns | p50 ms | p95 ms | max ms | response |",
        "|---|---|---|---|---|---|",
        f"| `api/overview` | pools, clusters, moves, every pipeline's freshness and last windows, streams | "
        f"{statistics.median(overview):.0f} | {p95(overview):.0f} | {max(overview):.0f} | {overview_bytes / 1024:.0f} KiB |",
        f"| `api/charts` | the four charts as Plotly figures (a day at 10-minute steps) | "
        f"{statistics.median(charts):.0f} | {p95(charts):.0f} | {max(charts):.0f} | {charts_bytes / 1024:.0f} KiB |",
        "",
        "One read of the registry behind each (what a background refresh costs, so how much older than its "
        '"as of" the page can be, and what the first request after nobody looked waits for), median of five:',
        "",
        "| read | median ms | max ms |",
        "|---|---|---|",
        *(f"| {name} | {statistics.median(values):.0f} | {max(values):.0f} |" for name, values in reads.items()),
        "",
        "The page asks for `api/overview` first and draws its tables, then `api/charts`. Reads per refresh: one "
        "`BatchGetItem` per hundred pipeline states (only the attributes shown; the charts add the day's history, about "
        "2 KB a pipeline), one query per pool for its clusters and pointer, a filtered scan of the jobs table (running, "
        "re-queued and moved jobs cross the wire) and a scan of the streams' small table; the configuration files are "
        "parsed again only when one changes. moto answers much slower than DynamoDB (tens of milliseconds a request "
        "here), so the reads are the local stack's worst case.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.print_only:
        DOC.write_text(text)
        print(f"written to {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
