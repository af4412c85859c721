"""The operations page's charts as Plotly figures (plotly.js draws them in the browser).

Each figure is built with Plotly's own graph objects from :class:`spotlake.operations.History`
and sent as its JSON; the page hands it to ``Plotly.newPlot``. plotly.js itself is the copy the
``plotly`` package ships, served by the app (no download from a CDN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go

from spotlake.operations import STEP, History, Series

HEATMAP_FROM = 13  # more pipelines than this: freshness as a heat map, one row per pipeline
STATE_COLOURS = {
    "LAUNCHING": "#6baed6",
    "READY": "#31a354",
    "DRAINING": "#fdae6b",
    "TERMINATING": "#969696",
    "DEAD": "#de2d26",
}
LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
    "height": 300,
    "legend": {"orientation": "h", "y": -0.2},
    "template": "plotly_white",
}


def plotly_js_path() -> Path:
    """The plotly.js bundle of the installed ``plotly`` package."""
    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def freshness_figure(history: History) -> go.Figure:
    """The committed watermark's age over the day: lines (and each threshold, dotted) for a few
    pipelines, a heat map for many."""
    if len(history.freshness) >= HEATMAP_FROM:
        ordered = sorted(history.freshness, key=lambda s: max((y for y in s.y if y is not None), default=0), reverse=True)
        figure = go.Figure(
            go.Heatmap(
                x=ordered[0].x if ordered else [],
                y=[s.name for s in ordered],
                z=[[None if y is None else y / history.stale_after.get(s.name, 1) for y in s.y] for s in ordered],
                zmin=0,
                zmax=2,
                colorscale=[[0, "#31a354"], [0.5, "#ffffbf"], [1, "#de2d26"]],
                colorbar={"title": {"text": "age / stale after"}},
            )
        )
        figure.update_layout(**{**LAYOUT, "height": max(300, 14 * len(ordered) + 80)})
    else:
        figure = go.Figure()
        for series in history.freshness:
            figure.add_trace(go.Scatter(x=series.x, y=series.y, mode="lines", name=series.name, line={"shape": "hv"}))
            threshold = history.stale_after.get(series.name)
            if threshold is not None and series.x:
                figure.add_trace(
                    go.Scatter(
                        x=[series.x[0], series.x[-1]],
                        y=[threshold, threshold],
                        mode="lines",
                        name=f"{series.name} stale after",
                        line={"dash": "dot", "width": 1},
                        showlegend=False,
                    )
                )
        figure.update_layout(**LAYOUT, yaxis_title="minutes behind")
    figure.update_layout(title={"text": "Freshness: age of the committed watermark, last 24 h"})
    return figure


def _bars(series: list[Series], title: str, yaxis: str, colours: dict[str, str] | None = None) -> go.Figure:
    # Each bar as wide as its ten minutes (on a date axis, in milliseconds): Plotly's own width
    # would follow the closest two samples, and the last one is "now", seconds after the one before.
    width = STEP.total_seconds() * 1000 * 0.9
    figure = go.Figure(
        [go.Bar(x=s.x, y=s.y, name=s.name, width=width, marker_color=(colours or {}).get(s.name)) for s in series],
    )
    figure.update_layout(**LAYOUT, barmode="stack", bargap=0.05, title={"text": title}, yaxis_title=yaxis)
    return figure


def rows_figure(history: History) -> go.Figure:
    return _bars(history.rows, "Rows written per window (summed per 10 min), last 24 h", "rows")


def clusters_figure(history: History) -> go.Figure:
    return _bars(history.clusters, "Clusters by state, last 24 h", "clusters", STATE_COLOURS)


def lag_figure(history: History) -> go.Figure:
    figure = go.Figure([go.Scatter(x=s.x, y=s.y, mode="lines+markers", name=s.name) for s in history.lag])
    figure.update_layout(**LAYOUT, title={"text": "Stream lag (records behind Kafka), last 24 h"}, yaxis_title="records")
    return figure


def figures(history: History) -> dict[str, Any]:
    """Every chart of the page, as Plotly's JSON (``data`` and ``layout``), by name."""
    built = {
        "freshness": freshness_figure(history),
        "rows": rows_figure(history),
        "clusters": clusters_figure(history),
        "lag": lag_figure(history),
    }
    return {"at": history.at, **{name: json.loads(figure.to_json()) for name, figure in built.items()}}
