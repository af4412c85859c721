"""One reconciliation DAG per pipeline with reconcile.enabled (see dag_factories.reconcile).

Parsing reads only local YAML files: no service is contacted at import.
"""

from __future__ import annotations

from airflow.sdk import DAG

from dag_factories.reconcile import build_all

dags: dict[str, DAG] = build_all()
globals().update(dags)
