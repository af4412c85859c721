"""The operations page: a FastAPI app the Airflow API server mounts under ``/spotlake``.

``GET /spotlake/`` is the page (pools and clusters, moves, pipelines' freshness, streams, charts);
it reads ``api/overview`` (:func:`spotlake.status.collect`, the figures the status command prints)
and ``api/charts`` (:func:`spotlake.operations.history` drawn as Plotly figures,
:mod:`ui.charts`). Every route takes Airflow's own login: the session cookie the Airflow UI sets
(or an ``Authorization: Bearer`` token), checked by Airflow's auth manager.

:func:`create_app` takes an :class:`OperationsSource`, so tests serve the page from a registry of
fixture data; :class:`AirflowOperationsSource` is the one the plugin uses.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from spotlake import config, operations, pools, status, streaming
from spotlake.errors import SpotlakeError
from spotlake.registry import Registry
from ui import charts

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "operations.html"


class OperationsSource(Protocol):
    """Where the page's figures come from."""

    def overview(self, now: datetime) -> status.Snapshot: ...

    def history(self, now: datetime) -> operations.History: ...


class ConfigFiles:
    """The pools, pipelines and streams configuration, read again only when a file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[tuple[float, ...], Any] | None = None

    @staticmethod
    def _stamps() -> tuple[float, ...]:
        paths = (pools.pools_path(), config.config_path(), streaming.streams_path())
        return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)

    def load(self) -> tuple[pools.PoolsConfig, config.PipelinesConfig, streaming.StreamsConfig | None]:
        stamps = self._stamps()
        with self._lock:
            if self._cached is None or self._cached[0] != stamps:
                pools_cfg, pipelines = pools.load(), config.load()
                try:
                    streams_cfg: streaming.StreamsConfig | None = streaming.load()
                except SpotlakeError:
                    streams_cfg = None  # the status's warnings say why
                self._cached = (stamps, (pools_cfg, pipelines, streams_cfg))
            loaded: tuple[pools.PoolsConfig, config.PipelinesConfig, streaming.StreamsConfig | None] = self._cached[1]
            return loaded


class RegistrySource:
    """The figures of a registry and the configuration files; ``paused`` gives the DAGs' paused flags."""

    def __init__(self, registry: Callable[[], Registry], paused: Callable[[], dict[str, bool]] = dict) -> None:
        self._registry = registry
        self._paused = paused
        self._configs = ConfigFiles()

    def overview(self, now: datetime) -> status.Snapshot:
        pools_cfg, pipelines, streams_cfg = self._configs.load()
        return status.collect(self._registry(), pools_cfg, pipelines, now, streams_cfg, paused=self._paused())

    def history(self, now: datetime) -> operations.History:
        pools_cfg, pipelines, _ = self._configs.load()
        return operations.history(self._registry(), pools_cfg, pipelines, now)


def _json(data: Any) -> bytes:
    return json.dumps(data, default=str).encode()


class Refreshed:
    """A figure computed by ``compute`` at most every ``every_s`` seconds, and again in the
    background while people look (a request in the last ``idle_s``): a request waits for the
    registry only when the figure is older than two ``every_s`` (the first request, or the first
    after nobody looked), and any number of viewers cost one read per ``every_s``.
    ``every_s`` 0: computed for each request."""

    def __init__(self, compute: Callable[[], bytes], every_s: float, idle_s: float = 120.0) -> None:
        self.compute = compute
        self.every_s = every_s
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._value: bytes | None = None
        self._computed = 0.0
        self._asked = 0.0
        self._thread: threading.Thread | None = None

    def get(self) -> bytes:
        if self.every_s <= 0:
            return self.compute()
        with self._lock:
            self._asked = time.monotonic()
            if self._value is None or self._asked - self._computed > 2 * self.every_s:
                # the first request, or the first after nobody looked for a while: never an old figure
                self._value, self._computed = self.compute(), time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._refresh, name="spotlake-operations-refresh", daemon=True)
                self._thread.start()
            return self._value

    def _refresh(self) -> None:
        while time.monotonic() - self._asked < self.idle_s:
            time.sleep(self.every_s)
            try:
                value = self.compute()
            except Exception:
                log.exception("the operations page could not refresh its figures")
                with self._lock:
                    self._value = None
                return
            with self._lock:
                self._value, self._computed = value, time.monotonic()


def create_app(
    source: OperationsSource,
    authorize: Callable[..., Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    refresh_s: tuple[float, float] = (0.0, 0.0),
) -> FastAPI:
    """The page and its API over ``source``; ``authorize``: a FastAPI dependency that refuses a
    caller without Airflow's login (None: no check, for tests of the API alone); ``clock``: now;
    ``refresh_s``: how often the overview and the charts are read again while the page is open
    (:class:`Refreshed`; 0: at each request)."""
    overview_figures = Refreshed(lambda: _json(asdict(source.overview(clock()))), refresh_s[0])
    chart_figures = Refreshed(lambda: _json(charts.figures(source.history(clock()))), refresh_s[1])
    dependencies = [Depends(authorize)] if authorize is not None else []
    app = FastAPI(title="spotlake operations", dependencies=dependencies, docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPException)
    async def login_first(request: Request, exc: HTTPException) -> Response:
        # The page itself sends a browser that is not logged in to Airflow's login, and back.
        if exc.status_code in (401, 403) and request.url.path.rstrip("/").endswith("/spotlake"):
            return RedirectResponse(f"/auth/login?next={request.url}")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(charts.plotly_js_path(), media_type="text/javascript")

    @app.get("/api/overview")
    def overview() -> Response:
        return Response(overview_figures.get(), media_type="application/json")

    @app.get("/api/charts")
    def chart_data() -> Response:
        return Response(chart_figures.get(), media_type="application/json")

    return app


def airflow_user() -> Callable[..., Any]:
    """Airflow's own check of the caller: logged in (cookie or bearer token) and allowed to see plugins."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return requires_access_view(AccessView.PLUGINS)


def paused_dags() -> dict[str, bool]:
    """Each DAG's paused flag, from Airflow's metadata database."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return {dag_id: bool(paused) for dag_id, paused in session.query(DagModel.dag_id, DagModel.is_paused)}


def airflow_app() -> FastAPI:
    """The app the plugin mounts: the registry through the Airflow connection ``SPOTLAKE_AWS_CONN_ID``
    (default aws_default), built on first use."""
    from hooks import aws

    conn_id = os.environ.get("SPOTLAKE_AWS_CONN_ID", "aws_default")
    built: list[Registry] = []

    def registry() -> Registry:
        if not built:
            built.append(aws.registry(conn_id))
        return built[0]

    return create_app(
        RegistrySource(registry, paused_dags),
        authorize=airflow_user(),
        refresh_s=(
            float(os.environ.get("SPOTLAKE_PAGE_REFRESH_S", "10")),
            float(os.environ.get("SPOTLAKE_CHARTS_REFRESH_S", "60")),
        ),
    )
