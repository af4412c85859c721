"""Reconciliation of each pipeline's lake with its source: one DAG per pipeline of
config/pipelines.yaml with ``reconcile.enabled`` (the default), on its ``reconcile.schedule``
(hourly by default).

Building reads only local YAML files: no service is contacted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from operators.reconcile import ReconcileOperator
from spotlake import config
from spotlake.pools import pool_task_args
from spotlake.schedules import described

DOC = """\
### Reconcile `{table}` with the lake

What the cursor windows cannot see: rows deleted from the source, rows updated without a new
`{cursor}`, rows a transaction committed past the windows. Compares row counts and row hashes
per chunk of keys (about {chunk_rows} rows each) on both sides, re-reads only the rows of the
chunks that differ, and records rows gone from the source as deletes ({deletes}). When nothing
changed it reads only the checksums. Runs as a Livy batch on pool **`{pool}`**; schedule
`{schedule}` (UTC). See docs/types.md.
"""


def build_dags(pipelines: config.PipelinesConfig) -> dict[str, DAG]:
    dags = {}
    for pipeline in pipelines.pipelines:
        if not pipeline.reconcile.enabled:
            continue
        settings = pipeline.reconcile
        source, lake = f"{pipeline.database}.{pipeline.table}", f"{pipelines.lake.namespace}.{pipeline.current_table}"
        with DAG(
            dag_id=f"reconcile_{pipeline.name}",
            description=(
                f"{source} against lake {lake}: finds and repairs rows the windows cannot see "
                f"(hard deletes, updates without a new {pipeline.cursor}), {described(settings.schedule)}"
            ),
            schedule=CronTriggerTimetable(settings.schedule, timezone="UTC"),
            start_date=datetime(2026, 1, 1),
            catchup=False,
            max_active_runs=1,
            doc_md=DOC.format(
                table=f"{pipeline.database}.{pipeline.table}",
                cursor=pipeline.cursor,
                chunk_rows=settings.chunk_rows,
                deletes=settings.deletes,
                pool=pipeline.pool,
                schedule=settings.schedule,
            ),
            tags=["spotlake", "lake", "reconcile", f"pool:{pipeline.pool}"],
            default_args={"owner": pipeline.owner, "retries": 1, "retry_delay": timedelta(minutes=5)},
        ) as dag:
            ReconcileOperator(
                task_id="reconcile",
                task_display_name=f"reconcile {source} with lake",
                pipeline_name=pipeline.name,
                pool_name=pipeline.pool,
                **pool_task_args(pipeline.pool),
                execution_timeout=timedelta(hours=2),
            )
        dags[dag.dag_id] = dag
    return dags


def build_all() -> dict[str, DAG]:
    return build_dags(config.load())
