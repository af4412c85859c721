"""The priority of a cluster pool's tasks in Airflow's scheduler.

Airflow gives a free pool slot to the waiting task of highest priority and, among equals, of the
oldest logical date. Every task of a cluster pool's Airflow pool (windows, reconciliation,
maintenance) gets one priority, so none waits behind newer ones (docs/architecture.md). A run
triggered from the CLI or the REST API without a logical date has none, and Airflow's PostgreSQL
metadata database sorts it after every dated run: under a pool its windows keep full, such a run
never got a slot, and one whose batch had ended kept its job SUBMITTED and its draining cluster
running. So a run that is not a scheduled window or a backfill (triggered by hand, by an asset,
by another DAG) goes one above the rest: it takes the next free slot.

Registered by the Airflow plugin (``spotlake_plugin.py``); tasks name it by its path,
``spotlake.pools.POOL_TASK_WEIGHT_RULE``, so a DAG file imports nothing of Airflow's scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.task.priority_strategy import PriorityWeightStrategy
from airflow.utils.types import DagRunType

from spotlake.pools import POOL_TASK_PRIORITY

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance

# Runs that carry the logical date their timetable or backfill gave them.
DATED_RUNS = (DagRunType.SCHEDULED, DagRunType.BACKFILL_JOB)


class PoolTaskPriority(PriorityWeightStrategy):
    """``POOL_TASK_PRIORITY`` for a scheduled or backfilled run's task, one more for any other."""

    def get_weight(self, ti: TaskInstance) -> int:
        if DagRunType.from_run_id(ti.run_id) in DATED_RUNS:
            return POOL_TASK_PRIORITY
        return POOL_TASK_PRIORITY + 1
