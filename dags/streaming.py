"""One supervisor DAG per stream in config/streaming.yaml (see dag_factories.streaming).

Parsing reads only local YAML files: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.streaming import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
