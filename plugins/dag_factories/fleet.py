"""One fleet DAG per pool in config/pools.yaml: keep the pool supplied with a healthy cluster.

Building reads only local YAML files: no service is contacted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from sensors.cluster_health import ClusterHealthSensor
from spotlake import pools
from spotlake.fleet import span

WATCH_MINUTES = 5  # one run watches the pool this long; the next run takes over

DOC = """\
### Fleet of pool `{p.name}`

One run every five minutes, one at a time, one task. Provider: **{provider}** (`SPOTLAKE_PROVIDER`).
Serves pipelines {pipelines} and streams {streams}.

**`watch`** (a deferrable sensor) makes one whole pass over the pool, then waits in the
triggerer, which looks at the pool every **{interval}** (the registry, and a health probe of each
cluster) and wakes the task only when the fleet must act. Each pass:

- launches a cluster when the pool has none live, and makes a LAUNCHING cluster that is up READY;
- replaces the READY cluster once it is older than **{max_age}**: the replacement becomes READY
  first and takes the new jobs while the old one drains; stops a DRAINING cluster once it has no
  running job, or after **{drain}**, re-queueing what is left;
- checks every cluster; after **{threshold}** consecutive failed checks (at once when the provider
  reports the cluster gone) marks it DEAD, re-queues its running jobs and launches the replacement.

Re-queued jobs run on the replacement without using an Airflow retry. Every change is a
conditional write in the registry, so two runs at once never launch twice for one vacancy
nor leave two READY clusters. The task's log lists each pass's clusters, reasons and moved jobs;
`python -m spotlake.status` shows the whole picture.
"""


def description(pool: pools.PoolConfig, provider: str) -> str:
    """One line for the DAG list: the pool, what it keeps and for whom."""
    served = [
        f"{kind} {', '.join(names)}"
        for kind, names in (("pipelines", pool.serves_pipelines), ("streams", pool.serves_streams))
        if names
    ]
    return (
        f"pool {pool.name} ({provider}): keeps one healthy READY cluster, checked every {span(pool.health_check_interval)}, "
        f"replaced after {span(pool.max_age)}, for {' and '.join(served) or 'no pipeline or stream yet'}"
    )


def build_dag(pool: pools.PoolConfig, provider: str) -> DAG:
    with DAG(
        dag_id=pool.dag_id,
        description=description(pool, provider),
        schedule=CronTriggerTimetable(f"*/{WATCH_MINUTES} * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        doc_md=DOC.format(
            p=pool,
            provider=provider,
            max_age=span(pool.max_age),
            drain=span(pool.drain_deadline),
            interval=span(pool.health_check_interval),
            threshold=pool.failure_threshold,
            pipelines=", ".join(f"`{n}`" for n in pool.serves_pipelines) or "none",
            streams=", ".join(f"`{n}`" for n in pool.serves_streams) or "none",
        ),
        tags=["spotlake", "fleet", f"pool:{pool.name}"],
        default_args={"owner": pool.owner, "retries": 0, "execution_timeout": timedelta(minutes=WATCH_MINUTES + 30)},
    ) as dag:
        ClusterHealthSensor(
            task_id="watch",
            task_display_name="check cluster health",
            pool_name=pool.name,
            watch_for=timedelta(minutes=WATCH_MINUTES),
            timeout=(WATCH_MINUTES + 30) * 60,
        )
    return dag


def build_all() -> dict[str, DAG]:
    config = pools.load()
    return {pool.dag_id: build_dag(pool, config.provider) for pool in config.pools}
