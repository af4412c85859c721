"""The spotlake_alerts DAG (see dag_factories.alerts).

Parsing reads only local YAML files: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.alerts import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
