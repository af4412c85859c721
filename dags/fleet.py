"""One fleet DAG per pool in config/pools.yaml: keep the pool supplied with a healthy cluster.

Parsing reads only that local YAML file: no service is contacted at import.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable, TriggerRule

from operators.fleet import HealPoolOperator, LaunchClusterOperator, RotatePoolOperator
from sensors.cluster_health import ClusterHealthSensor
from spotlake import pools
from spotlake.fleet import span

DOC = """\
### Fleet of pool `{p.name}`

Runs every minute, one run at a time. Provider: **{provider}** (`SPOTLAKE_PROVIDER`).
Serves pipelines {pipelines} and streams {streams}.

- **`launch`**: makes a LAUNCHING cluster that is up READY; launches a cluster when the
  pool has none live.
- **`rotate`**: replaces the READY cluster once it is older than **{max_age}**: the
  replacement becomes READY first and takes the new jobs while the old one drains. Stops a
  DRAINING cluster once it has no running job, or after **{drain}**, re-queueing what is left.
- **`detect_dead`** (sensor): checks every cluster every **{interval}**; after **{threshold}**
  consecutive failed checks (at once when the provider reports the cluster gone) marks it
  DEAD and re-queues its running jobs. Succeeds with the dead cluster ids in its XCom;
  skipped when every cluster stayed healthy.
- **`heal`**: re-queues jobs left on dead clusters and launches the replacement.

Re-queued jobs run on the replacement without using an Airflow retry. Every change is a
conditional write in the registry, so two runs at once never launch twice for one vacancy
nor leave two READY clusters. Each task's log lists the clusters, reasons and moved jobs;
`python -m spotlake.status` shows the whole picture.
"""


def build_dag(pool: pools.PoolConfig, provider: str) -> DAG:
    interval = pool.health_check_interval.total_seconds()
    with DAG(
        dag_id=pool.dag_id,
        schedule=CronTriggerTimetable("* * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        doc_md=DOC.format(
            p=pool, provider=provider, max_age=span(pool.max_age), drain=span(pool.drain_deadline),
            interval=span(pool.health_check_interval), threshold=pool.failure_threshold,
            pipelines=", ".join(f"`{n}`" for n in pool.serves_pipelines) or "none",
            streams=", ".join(f"`{n}`" for n in pool.serves_streams) or "none",
        ),
        tags=["spotlake", "fleet", f"pool:{pool.name}"],
        default_args={"retries": 0, "execution_timeout": timedelta(minutes=30)},
    ) as dag:
        launch = LaunchClusterOperator(task_id="launch", pool_name=pool.name)
        rotate = RotatePoolOperator(task_id="rotate", pool_name=pool.name, trigger_rule=TriggerRule.ALL_DONE)
        detect_dead = ClusterHealthSensor(
            task_id="detect_dead", pool_name=pool.name, poke_interval=interval,
            timeout=max(interval, 45.0), soft_fail=True, trigger_rule=TriggerRule.ALL_DONE,
        )
        heal = HealPoolOperator(task_id="heal", pool_name=pool.name, trigger_rule=TriggerRule.ALL_DONE)
        launch >> rotate >> detect_dead >> heal
    return dag


def build_all() -> dict[str, DAG]:
    config = pools.load()
    return {pool.dag_id: build_dag(pool, config.provider) for pool in config.pools}


globals().update(build_all())
