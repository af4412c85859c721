"""One extraction DAG per pipeline in config/pipelines.yaml (see dag_factories.extraction).

Parsing reads only that local YAML file: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.extraction import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
