"""Every DAG file imports without errors and without touching a service."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_files_import_without_errors() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert bag.dags, "no DAG was found in dags/"


def test_every_pipeline_has_a_reconciliation_dag() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    extraction = {d.removeprefix("extract_") for d in bag.dags if d.startswith("extract_")}
    assert extraction and {f"reconcile_{p}" for p in extraction} <= set(bag.dags)
