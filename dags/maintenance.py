"""The lake_maintenance DAG (see dag_factories.maintenance).

Parsing reads only local YAML files: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.maintenance import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
