"""Build one extraction DAG per entry of ``config/pipelines.yaml``.

Each DAG runs on an interval timetable, so every run owns the window
[data_interval_start, data_interval_end): backfills mean something, and re-running
any run re-extracts exactly its window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from operators.extraction import ExtractWindowOperator
from spotlake import config
from spotlake.pools import airflow_pool

DOC = """\
### Extraction of `{p.database}.{p.table}` ({p.name})

Every run extracts the rows of `{p.database}.{p.table}` whose `{p.cursor}` lies in
**[data_interval_start − {lookback}, data_interval_end)** from source `{p.source.name}`
(credentials: Secrets Manager `{p.source.secret_id}`), applies {n} transformation(s), and
commits the window to **`{p.target}`** (`data/window_start=…/run=…/` + `_manifests/window_start=….json`).
It runs as a Livy batch on pool **`{p.pool}`**; schedule `{p.schedule}` (UTC).

Re-running a run replaces its window exactly; running it twice at once submits one batch.
Readers see only committed windows; the merged view de-duplicates by
`{pk}` (newest `{p.cursor}` wins).

**Backfill** a period from the UI (*Trigger → Backfill*) or:

    airflow backfill create --dag-id {p.dag_id} --from-date 2026-11-27T10:00:00+00:00 --to-date 2026-11-27T11:00:00+00:00 --reprocess-behavior completed

A run triggered by hand without a logical date extracts the latest complete window.
"""


def build_dag(pipeline: config.Pipeline) -> DAG:
    minutes = int(pipeline.lookback.total_seconds() // 60)
    with DAG(
        dag_id=pipeline.dag_id,
        schedule=CronDataIntervalTimetable(pipeline.schedule, timezone="UTC"),
        start_date=datetime.fromisoformat(pipeline.start_date),
        catchup=False,
        max_active_runs=4,
        doc_md=DOC.format(p=pipeline, lookback=f"{minutes} min", n=len(pipeline.transforms),
                          pk=", ".join(pipeline.primary_key)),
        tags=["spotlake", "extraction", f"pool:{pipeline.pool}"],
        default_args={"retries": pipeline.retries, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        ExtractWindowOperator(
            task_id="extract",
            pipeline_name=pipeline.name,
            pool_name=pipeline.pool,
            pool=airflow_pool(pipeline.pool),
            outlets=[Asset(uri=pipeline.asset_uri, name=f"lake_{pipeline.name}")],
            execution_timeout=timedelta(minutes=30),
        )
    return dag


def build_all() -> dict[str, DAG]:
    return {p.dag_id: build_dag(p) for p in config.load().pipelines}
