"""Every DAG file imports without errors and without touching a service."""

from __future__ import annotations

import ast
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_files_import_without_errors() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert bag.dags, "no DAG was found in dags/"


def test_dag_files_only_wire_the_factories() -> None:
    """A DAG file imports its factory (plugins/dag_factories/) and Airflow's DAG class, nothing else:
    the three DAG families are built the same way, and the building is tested in one place."""
    for path in sorted(DAGS.glob("*.py")):
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        imported |= {
            alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import) for alias in node.names
        }
        assert imported == {"__future__", "airflow.sdk", f"dag_factories.{path.stem}"}, (
            f"{path.name} imports {sorted(imported)}: build the DAGs in plugins/dag_factories/{path.stem}.py"
        )


def test_every_pipeline_has_a_reconciliation_dag() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    extraction = {d.removeprefix("extract_") for d in bag.dags if d.startswith("extract_")}
    assert extraction and {f"reconcile_{p}" for p in extraction} <= set(bag.dags)


def test_the_maintenance_dag_maintains_every_pipeline_and_every_streams_lake_tables() -> None:
    from spark_jobs.common.job_documents import MaintenanceJob
    from spotlake import config, streaming

    bag = DagBag(dag_folder=str(DAGS))
    tasks = {t.task_id: t for t in bag.dags["lake_maintenance"].tasks}
    pipelines = config.load()
    streams = [s for s in streaming.load().streams if s.lake is not None]
    assert streams, "config/streaming.yaml's streams write to the lake"
    assert set(tasks) == {f"maintain_{p.name}" for p in pipelines.pipelines} | {f"maintain_stream_{s.name}" for s in streams}
    # The stream's maintenance document: its two tables, as the Spark job reads it.
    stream = streams[0]
    lake = tasks[f"maintain_stream_{stream.name}"].lake_section()
    job = MaintenanceJob.from_dict(
        {
            "job_key": "k",
            "attempt": 1,
            "run_id": "r",
            "pipeline": f"stream_{stream.name}",
            "stream": stream.name,
            "lake": lake,
            "registry": {"prefix": "p"},
            "maintenance": {},
        }
    )
    assert job.stream == stream.name and job.context == f"stream {stream.name} (maintenance)"
    assert (job.lake.current_table, job.lake.changes_table) == (
        f"{pipelines.lake.catalog}.{stream.lake.namespace}.{stream.lake.events}",
        f"{pipelines.lake.catalog}.{stream.lake.namespace}.{stream.lake.dead_letters}",
    )


def test_windows_take_the_pools_slots_before_maintenance_and_reconciliation() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    window = bag.dags["extract_shop_orders"].get_task("extract")
    for dag_id, task_id in (("lake_maintenance", "maintain_shop_orders"), ("reconcile_shop_orders", "reconcile")):
        other = bag.dags[dag_id].get_task(task_id)
        assert other.pool == window.pool == "spotlake_small"
        assert (window.priority_weight, str(window.weight_rule)) == (100, "absolute")
        assert other.priority_weight < window.priority_weight and str(other.weight_rule) != "absolute"
    # Maintenance holds one slot at a time: the pool's other slots stay with the windows.
    assert bag.dags["lake_maintenance"].max_active_tasks == 1


def test_the_fleet_dag_is_one_deferrable_watch_per_pool() -> None:
    from sensors.cluster_health import ClusterHealthSensor

    bag = DagBag(dag_folder=str(DAGS))
    (watch,) = bag.dags["fleet_small"].tasks
    assert isinstance(watch, ClusterHealthSensor) and watch.task_id == "watch"


def test_the_alerts_dag_is_one_task_on_the_configured_schedule() -> None:
    from operators.alerts import AlertsOperator
    from spotlake import alert_config

    bag = DagBag(dag_folder=str(DAGS))
    dag = bag.dags["spotlake_alerts"]
    (task,) = dag.tasks
    assert isinstance(task, AlertsOperator) and task.task_id == "alerts"
    assert dag.timetable.expression == alert_config.load().schedule
    assert (dag.catchup, dag.max_active_runs, sorted(dag.tags)) == (False, 1, ["alerts", "spotlake"])
    assert dag.description and "stale pipelines" in dag.description
