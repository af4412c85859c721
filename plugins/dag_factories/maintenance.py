"""The lake's table maintenance: one task per pipeline of config/pipelines.yaml, on the
schedule of its ``lake.maintenance`` section (daily at 03:00 UTC by default).

Building reads only local YAML files: no service is contacted.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from operators.maintenance import LakeMaintenanceOperator, StreamMaintenanceOperator
from spotlake import config, streaming
from spotlake.errors import ConfigError
from spotlake.fleet import span
from spotlake.pools import pool_task_args
from spotlake.schedules import described

DOC = """\
### Maintenance of the lake's Iceberg tables

For each pipeline, under its commit lock (its windows wait meanwhile): compacts the
current-state table (sorted by its primary key, position deletes applied) and the changes
table, drops delete files that point at nothing, expires snapshots older than
**{retention}** (keeping the last {retain_last}) and removes files no snapshot references that
are older than **{orphan_age}**. A reader of a snapshot younger than the retention never loses
a file. Each click stream's events and dead-letters tables get the same compaction, expiry
and cleaning, without a lock (the stream only appends). Runs as Livy batches on pool
**`{pool}`**, {max_active} started at a time; schedule `{schedule}` (UTC).
"""


def description(pipelines: config.PipelinesConfig, streams: streaming.StreamsConfig | None) -> str:
    """One line for the DAG list: which tables, what is done to them, where and when."""
    maintenance = pipelines.lake.maintenance
    owners = [f"{len(pipelines.pipelines)} pipeline{'s' * (len(pipelines.pipelines) != 1)}"]
    lake_streams = [s for s in (streams.streams if streams is not None else ()) if s.lake is not None]
    if lake_streams:
        owners.append(f"{len(lake_streams)} stream{'s' * (len(lake_streams) != 1)}")
    return (
        f"compacts the lake tables of {' and '.join(owners)} and expires their snapshots older than "
        f"{span(maintenance.snapshot_retention)}, on pool {maintenance.pool}, {described(maintenance.schedule)}"
    )


def build_dag(pipelines: config.PipelinesConfig, streams: streaming.StreamsConfig | None = None) -> DAG:
    maintenance = pipelines.lake.maintenance
    lake = pipelines.lake
    with DAG(
        dag_id="lake_maintenance",
        description=description(pipelines, streams),
        schedule=CronTriggerTimetable(maintenance.schedule, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=maintenance.max_active,  # tasks started at once; a deferred one is not counted
        doc_md=DOC.format(
            retention=span(maintenance.snapshot_retention),
            retain_last=maintenance.retain_last,
            orphan_age=span(maintenance.orphan_age),
            pool=maintenance.pool,
            max_active=maintenance.max_active,
            schedule=maintenance.schedule,
        ),
        tags=["spotlake", "lake", "maintenance", f"pool:{maintenance.pool}"],
        default_args={"owner": pipelines.owner, "retries": 1, "retry_delay": timedelta(minutes=5)},
    ) as dag:
        common = {"pool_name": maintenance.pool, **pool_task_args(maintenance.pool), "execution_timeout": timedelta(hours=2)}
        for pipeline in pipelines.pipelines:
            LakeMaintenanceOperator(
                task_id=f"maintain_{pipeline.name}",
                task_display_name=f"maintain lake {lake.namespace}.{pipeline.current_table}",
                pipeline_name=pipeline.name,
                **common,
            )
        for stream in streams.streams if streams is not None else ():
            if stream.lake is not None:
                StreamMaintenanceOperator(
                    task_id=f"maintain_stream_{stream.name}",
                    task_display_name=f"maintain lake {stream.lake.namespace}.{stream.lake.events} (stream {stream.name})",
                    stream_name=stream.name,
                    **common,
                )
    return dag


def load_streams(lake: config.Lake) -> streaming.StreamsConfig | None:
    """The streams to maintain; a broken config/streaming.yaml drops only their tasks (the stream
    DAGs fail to import with the same error), never the pipelines' maintenance."""
    try:
        return streaming.load(catalog=lake)
    except ConfigError as exc:
        logging.getLogger(__name__).warning("lake_maintenance: no stream tasks: %s", exc)
        return None


def build_all() -> dict[str, DAG]:
    pipelines = config.load()
    dag = build_dag(pipelines, load_streams(pipelines.lake))
    return {dag.dag_id: dag}
