"""Build one extraction DAG per entry of ``config/pipelines.yaml``.

Each DAG runs on an interval timetable, so every run owns the window
[data_interval_start, data_interval_end) as its label; what it reads starts at the
pipeline's committed watermark (see spotlake.windows).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from operators.extraction import ExtractWindowOperator
from spotlake import config
from spotlake.pools import pool_task_args
from spotlake.schedules import described

ASSET_GROUP = "spotlake-lake"  # the lake tables' Assets, together in the UI's asset list

DOC = """\
### Extraction of `{p.database}.{p.table}` ({p.name})

Every run reads the rows of `{p.database}.{p.table}` whose `{p.cursor}` lies in
**[min(data_interval_start, committed watermark) − {lookback}, data_interval_end)** from
source `{p.source.name}` (credentials: Secrets Manager `{p.source.secret_id}`), applies {n}
transformation(s), and commits them to the Iceberg tables **`{current}`** (one row per
`{pk}`, newest `{p.cursor}` wins) and **`{changes}`** (every row version read).
The pipeline's first run loads the table's existing rows first (the initial snapshot,
resumable, never repeated). It runs as a Livy batch on pool **`{p.pool}`**; schedule
`{p.schedule}` (UTC).

Reading from the committed watermark means a pause, an outage or a failed window leaves
no gap: the next run covers it. Re-running a run reads its planned range again and
replaces its rows; running it twice at once submits one batch.

**Backfill** a period from the UI (*Trigger → Backfill*) or:

    airflow backfill create --dag-id {p.dag_id} --from-date 2026-11-27T10:00:00+00:00 \\
        --to-date 2026-11-27T11:00:00+00:00 --reprocess-behavior completed

A run triggered by hand without a logical date extracts the latest complete window.
"""


def description(pipeline: config.Pipeline, lake: config.Lake) -> str:
    """One line for the DAG list: source table → lake table, schedule in words and cron."""
    return (
        f"{pipeline.database}.{pipeline.table} → lake {lake.namespace}.{pipeline.current_table}, {described(pipeline.schedule)}"
    )


def lake_asset(pipeline: config.Pipeline, pipelines: config.PipelinesConfig) -> Asset:
    """The Asset of the pipeline's current-state table. Its extra says what the table is; each run's
    Asset event says what its window committed (spotlake.window_figures)."""
    lake = pipelines.lake
    return Asset(
        uri=pipelines.asset_uri(pipeline),
        name=f"lake_{pipeline.name}",
        group=ASSET_GROUP,
        extra={
            "table": lake.qualified(pipeline.current_table),
            "changes_table": lake.qualified(pipeline.changes_table),
            "source": f"{pipeline.database}.{pipeline.table}",
            "primary_key": list(pipeline.primary_key),
            "format": "iceberg",
            "location": lake.table_location(pipeline.current_table),
        },
    )


def build_dag(pipeline: config.Pipeline, pipelines: config.PipelinesConfig) -> DAG:
    lake = pipelines.lake
    minutes = int(pipeline.lookback.total_seconds() // 60)
    with DAG(
        dag_id=pipeline.dag_id,
        description=description(pipeline, lake),
        schedule=CronDataIntervalTimetable(pipeline.schedule, timezone="UTC"),
        start_date=datetime.fromisoformat(pipeline.start_date),
        catchup=False,
        max_active_runs=4,
        doc_md=DOC.format(
            p=pipeline,
            lookback=f"{minutes} min",
            n=len(pipeline.transforms),
            pk=", ".join(pipeline.primary_key),
            current=lake.qualified(pipeline.current_table),
            changes=lake.qualified(pipeline.changes_table),
        ),
        tags=["spotlake", "extraction", f"pool:{pipeline.pool}"],
        default_args={"owner": pipeline.owner, "retries": pipeline.retries, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        ExtractWindowOperator(
            task_id="extract",
            task_display_name=f"extract {pipeline.database}.{pipeline.table} → lake",
            pipeline_name=pipeline.name,
            pool_name=pipeline.pool,
            **pool_task_args(pipeline.pool),
            outlets=[lake_asset(pipeline, pipelines)],
            execution_timeout=timedelta(minutes=30),
        )
    return dag


def build_all() -> dict[str, DAG]:
    pipelines = config.load()
    return {p.dag_id: build_dag(p, pipelines) for p in pipelines.pipelines}
