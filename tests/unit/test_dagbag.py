"""Every DAG file imports without errors and without touching a service."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
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


def test_every_task_of_a_cluster_pool_has_one_priority_so_the_oldest_waiting_task_gets_a_free_slot() -> None:
    """Airflow orders waiting tasks by priority, then logical date. Windows above the rest starved
    them when windows kept the pool full: a reconciliation whose batch had ended never got the slot
    it needed to finish (seen in the chaos soak: its draining cluster kept running)."""
    bag = DagBag(dag_folder=str(DAGS))
    window = bag.dags["extract_shop_orders"].get_task("extract")
    for dag_id, task_id in (("lake_maintenance", "maintain_shop_orders"), ("reconcile_shop_orders", "reconcile")):
        other = bag.dags[dag_id].get_task(task_id)
        assert other.pool == window.pool == "spotlake_small"
        assert (other.priority_weight, str(other.weight_rule)) == (window.priority_weight, str(window.weight_rule))
        assert str(other.weight_rule) == "operators.priority.PoolTaskPriority"
    # Maintenance starts one task at a time (Airflow does not count a deferred one: docs/architecture.md).
    assert bag.dags["lake_maintenance"].max_active_tasks == 1


@pytest.fixture
def spotlake_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Airflow's plugin manager loading the plugins folder, as the scheduler and the DAG processor do."""
    from airflow import plugins_manager, settings

    cached = (plugins_manager._get_plugins, plugins_manager.get_priority_weight_strategy_plugins)
    monkeypatch.setattr(settings, "PLUGINS_FOLDER", str(DAGS.parent / "plugins"))
    for function in cached:
        function.cache_clear()
    yield
    monkeypatch.undo()
    for function in cached:
        function.cache_clear()


def test_a_run_without_a_logical_date_takes_the_next_free_slot_of_its_pool(spotlake_plugin: None) -> None:
    """Airflow sorts waiting tasks by priority, then logical date, and PostgreSQL puts a run without
    one (``airflow dags trigger``, the REST API) after every dated run: with windows keeping the pool
    full, a maintenance run triggered so never got a slot (seen in the chaos soak). The weight rule
    goes through Airflow's own serialization and task-instance creation, as in the scheduler."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization

    from operators.priority import PoolTaskPriority

    bag = DagBag(dag_folder=str(DAGS))
    run_ids = {
        "scheduled__2026-12-07T03:00:00+00:00": 100,
        "backfill__2026-12-01T00:00:00+00:00": 100,
        "manual__2026-12-07T01:54:46.573745+00:00": 101,
        "asset_triggered__2026-12-07T01:54:46+00:00": 101,
        "a-run-id-given-to-the-api": 101,
    }
    dag_run = SimpleNamespace(context_carrier={})
    for dag_id, task_id in (("lake_maintenance", "maintain_shop_orders"), ("extract_shop_orders", "extract")):
        dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
        task = dag.get_task(task_id)
        assert isinstance(task.weight_rule, PoolTaskPriority)
        weights = {
            run_id: TaskInstance.insert_mapping(run_id, task, -1, dag_version_id=None, dag_run=dag_run)["priority_weight"]
            for run_id in run_ids
        }
        assert weights == run_ids, dag_id


def test_the_fleet_dag_is_one_deferrable_watch_per_pool() -> None:
    from sensors.cluster_health import ClusterHealthSensor

    bag = DagBag(dag_folder=str(DAGS))
    (watch,) = bag.dags["fleet_small"].tasks
    assert isinstance(watch, ClusterHealthSensor) and watch.task_id == "watch"


def test_every_dag_says_in_one_line_what_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTLAKE_PROVIDER", raising=False)
    bag = DagBag(dag_folder=str(DAGS))
    assert {dag_id: bag.dags[dag_id].description for dag_id in DESCRIBED} == DESCRIBED
    for dag in bag.dags.values():
        assert dag.description and "\n" not in dag.description, dag.dag_id


DESCRIBED = {
    "extract_shop_orders": "shop.orders → lake shop.shop_orders, every 5 minutes (*/5 * * * *)",
    "fleet_small": (
        "pool small (local): keeps one healthy READY cluster, checked every 15s, replaced after 6h, for pipelines shop_*"
    ),
    "fleet_large": (
        "pool large (local): keeps one healthy READY cluster, checked every 15s, replaced after 12h, for streams clicks"
    ),
    "stream_clicks": (
        "Kafka clicks → PostgreSQL clickstream and lake clicks.events, kept running on pool large, "
        "checked every minute (* * * * *)"
    ),
    "lake_maintenance": (
        "compacts the lake tables of 3 pipelines and 1 stream and expires their snapshots older than 1d, "
        "on pool small, at 03:00 (0 3 * * *)"
    ),
    "reconcile_shop_orders": (
        "shop.orders against lake shop.shop_orders: finds and repairs rows the windows cannot see (hard deletes, "
        "updates without a new updated_at), at 30 minutes past the hour (30 * * * *)"
    ),
}


def test_tasks_have_display_names_and_keep_their_task_ids() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    names = {
        (dag_id, task.task_id): task.task_display_name
        for dag_id in ("extract_shop_orders", "fleet_small", "stream_clicks", "lake_maintenance", "reconcile_shop_orders")
        for task in bag.dags[dag_id].tasks
    }
    assert names == {
        ("extract_shop_orders", "extract"): "extract shop.orders → lake",
        ("fleet_small", "watch"): "check cluster health",
        ("stream_clicks", "supervise"): "keep stream clicks running",
        ("lake_maintenance", "maintain_shop_customers"): "maintain lake shop.shop_customers",
        ("lake_maintenance", "maintain_shop_orders"): "maintain lake shop.shop_orders",
        ("lake_maintenance", "maintain_shop_order_items"): "maintain lake shop.shop_order_items",
        ("lake_maintenance", "maintain_stream_clicks"): "maintain lake clicks.events (stream clicks)",
        ("reconcile_shop_orders", "reconcile"): "reconcile shop.orders with lake",
    }


def test_each_dag_is_owned_as_its_config_says() -> None:
    from dag_factories import extraction, fleet, maintenance, reconcile, streaming
    from tests.support import stream_configs
    from tests.support.fleet_fakes import pool_config
    from tests.support.pipeline_configs import parse, with_pipeline

    bag = DagBag(dag_folder=str(DAGS))
    assert {task.owner for dag in bag.dags.values() for task in dag.tasks} == {"data-platform"}
    raw = with_pipeline(owner="shop-team")
    raw["defaults"] = {"owner": "lake-admins"}
    pipelines = parse(raw)
    dags = {
        "extract": extraction.build_dag(pipelines.get("orders"), pipelines),
        "reconcile": reconcile.build_dags(pipelines)["reconcile_orders"],
        "maintenance": maintenance.build_dag(pipelines),
        "fleet": fleet.build_dag(pool_config(owner="platform-oncall"), "local"),
        "stream": streaming.build_dag(stream_configs.parse(owner="streaming").get("clicks")),
    }
    owners = {name: (dag.default_args["owner"], {task.owner for task in dag.tasks}) for name, dag in dags.items()}
    assert owners == {
        "extract": ("shop-team", {"shop-team"}),
        "reconcile": ("shop-team", {"shop-team"}),
        "maintenance": ("lake-admins", {"lake-admins"}),
        "fleet": ("platform-oncall", {"platform-oncall"}),
        "stream": ("streaming", {"streaming"}),
    }


def test_each_lake_table_is_an_asset_of_the_lake_group_that_says_what_the_table_is() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    (asset,) = bag.dags["extract_shop_orders"].get_task("extract").outlets
    assert (asset.name, asset.uri, asset.group) == ("lake_shop_orders", "iceberg://lake/shop/shop_orders", "spotlake-lake")
    assert asset.extra == {
        "table": "lake.shop.shop_orders",
        "changes_table": "lake.shop.shop_orders_changes",
        "source": "shop.orders",
        "primary_key": ["order_id"],
        "format": "iceberg",
        "location": "s3://spotlake-lake/warehouse/shop/shop_orders",
    }


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
