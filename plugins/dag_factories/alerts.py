"""The spotlake_alerts DAG: raise and clear the alerts of config/alerts.yaml on its schedule.

Building reads only local YAML files: no service is contacted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from operators.alerts import AlertsOperator
from spotlake import alert_config
from spotlake.alerts import AlertKind
from spotlake.fleet import span

DAG_ID = "spotlake_alerts"

DOC = """\
### Alerts

Schedule `{schedule}` (UTC), one run at a time, one task. Each run reads what
`python -m spotlake.status` shows and raises **one** event when a condition starts holding, and
**one** when it clears:

{conditions}

Each event goes to the condition's notifiers ({notifiers}; `config/alerts.yaml`). The alerts'
state is in the registry's `<prefix>-alerts` table, changed only by conditional writes, so two
runs at once never send an event twice. A notifier that fails is retried by the next run (for
that event and that notifier only), and the task fails naming it; the others were sent.
See docs/operations.md, *Alerts*.
"""

WHAT = {
    AlertKind.STALE: "a pipeline `STALE` beyond its threshold, or `FAILING` (not one that never ran: its DAG is created paused)",
    AlertKind.NO_READY: "a pool without a READY cluster",
    AlertKind.RESTART_BUDGET: "a stream whose restart budget is spent (its supervisor backed off)",
    AlertKind.BUDGET: "a pool whose spend today (UTC) is above its `budget_per_day` (the cost ledger)",
}


def build_dag(settings: alert_config.AlertsConfig) -> DAG:
    lines = []
    for kind in AlertKind:
        condition = settings.condition(kind)
        if not condition.enabled:
            lines.append(f"- `{kind.value}`: {WHAT[kind]}: **disabled**")
            continue
        after = f", once it has held {span(condition.after)}" if condition.after else ""
        lines.append(f"- `{kind.value}`: {WHAT[kind]}{after}; to {', '.join(f'`{n}`' for n in condition.notify)}")
    with DAG(
        dag_id=DAG_ID,
        description="Raise and clear spotlake's alerts: stale pipelines, pools without a READY cluster, streams over budget",
        schedule=CronTriggerTimetable(settings.schedule, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        # It only reads the state and sends notifications: it runs from the start.
        is_paused_upon_creation=False,
        doc_md=DOC.format(
            schedule=settings.schedule,
            conditions="\n".join(lines),
            notifiers=", ".join(f"`{n.name}` ({n.type.value})" for n in settings.notifiers),
        ),
        tags=["spotlake", "alerts"],
        # No retry: the next run retries what failed. The timeout stays well below the delivery
        # claim's lease (spotlake.alerts.CLAIM_LEASE), after which another run takes a claim over.
        default_args={"retries": 0, "execution_timeout": timedelta(minutes=5), "owner": settings.owner},
    ) as dag:
        AlertsOperator(task_id="alerts")
    return dag


def build_all() -> dict[str, DAG]:
    dag = build_dag(alert_config.load())
    return {dag.dag_id: dag}
