"""One fleet DAG per pool in config/pools.yaml (see dag_factories.fleet).

Parsing reads only local YAML files: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.fleet import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
