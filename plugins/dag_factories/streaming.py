"""One supervisor DAG per stream in config/streaming.yaml: keep the stream running on its pool.

Building reads only local YAML files: no service is contacted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from operators.streaming import StreamSupervisorOperator
from spotlake import streaming
from spotlake.fleet import span
from spotlake.schedules import described

SCHEDULE = "* * * * *"

DOC = """\
### Click stream `{s.name}`

Every minute, one run at a time, the `supervise` task keeps the Structured Streaming job
`spark_jobs/clickstream/main.py` running as a Livy batch on pool **`{s.pool}`** (job key
`{s.name}`), reading topics {topics} and writing:

- per-{window} aggregates by page and event type, funnel counts, dead letters and late
  events into PostgreSQL schema **`{s.sink_schema}`** (secret `{s.sink_secret_id}`);
- every valid event (and dead letter) into the lake's Iceberg tables {lake},

all from one query, each micro-batch once.

Each run: checks the topics exist (fails naming them and the brokers otherwise), applies
the sink's migrations, then starts the stream if it has no live batch, restarts it from
its checkpoint `{s.checkpoint}` when its batch ended or its cluster was lost, and moves it
off a draining cluster. At most **{budget} restarts per {per}**: then it backs off and
this task fails every run until older restarts age out — look at the reason in the log.
The task log and `python -m spotlake.status` show the lag, the last committed micro-batch
and the watermark.

Created paused: unpause once the topics and the sink secret exist.
"""


def description(stream: streaming.StreamConfig) -> str:
    """One line for the DAG list: what the stream reads and writes, where it runs, how often it is checked."""
    sinks = [f"PostgreSQL {stream.sink_schema}"]
    if stream.lake is not None:
        sinks.append(f"lake {stream.lake.namespace}.{stream.lake.events}")
    return (
        f"Kafka {', '.join(stream.topics)} → {' and '.join(sinks)}, kept running on pool {stream.pool}, "
        f"checked {described(SCHEDULE)}"
    )


def build_dag(stream: streaming.StreamConfig) -> DAG:
    with DAG(
        dag_id=stream.dag_id,
        description=description(stream),
        schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=True,
        doc_md=DOC.format(
            s=stream,
            topics=", ".join(f"`{t}`" for t in stream.topics),
            window=span(stream.window),
            lake=(
                f"**`{stream.lake.namespace}.{stream.lake.events}`**"
                + (f" and `{stream.lake.namespace}.{stream.lake.dead_letters}`" if stream.lake.dead_letters else "")
                if stream.lake
                else "(none configured)"
            ),
            budget=stream.restart_budget.restarts,
            per=span(stream.restart_budget.per),
        ),
        tags=["spotlake", "streaming", f"pool:{stream.pool}"],
        default_args={"owner": stream.owner, "retries": 0, "execution_timeout": timedelta(minutes=5)},
    ) as dag:
        StreamSupervisorOperator(
            task_id="supervise", task_display_name=f"keep stream {stream.name} running", stream_name=stream.name
        )
    return dag


def build_all() -> dict[str, DAG]:
    return {stream.dag_id: build_dag(stream) for stream in streaming.load().streams}
