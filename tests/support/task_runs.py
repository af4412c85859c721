"""One try of a task through Airflow's own task runner, in this process: the state Airflow gives
it (success, skipped, deferred, failed...), as a worker would report it to the scheduler.

The runner talks to its supervisor over ``SUPERVISOR_COMMS``; here a stand-in takes every message
(rendered fields, XComs, the final state) and answers nothing, so no API server or database is
involved. ``next_method``/``next_kwargs`` resume a deferred task as the scheduler does after its
trigger fired.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from airflow.sdk import BaseOperator
from airflow.sdk.api.datamodels._generated import DagRun, DagRunState, DagRunType, TIRunContext
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import ToSupervisor
from airflow.utils.state import TaskInstanceState


@dataclass
class Supervisor:
    """What the task runner sends its supervisor."""

    sent: list[ToSupervisor] = field(default_factory=list)

    def send(self, msg: ToSupervisor) -> None:
        self.sent.append(msg)


@dataclass(frozen=True)
class TaskTry:
    state: TaskInstanceState
    message: ToSupervisor | None  # the final one the runner sends (SucceedTask, DeferTask, TaskState...)
    error: BaseException | None


def run_try(
    task: BaseOperator,
    monkeypatch: pytest.MonkeyPatch,
    logical_date: datetime | None = None,
    next_method: str | None = None,
    next_kwargs: dict[str, Any] | None = None,
) -> TaskTry:
    """Run one try of ``task`` (which belongs to a DAG) and return how it ended."""
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor(), raising=False)
    now = datetime.now(UTC)
    moment = logical_date or now
    run = DagRun(
        dag_id=task.dag_id,
        run_id="scheduled__test",
        logical_date=moment,
        data_interval_start=moment,
        data_interval_end=moment,
        run_after=moment,
        start_date=now,
        end_date=None,
        run_type=DagRunType.SCHEDULED,
        state=DagRunState.RUNNING,
        consumed_asset_events=[],
        partition_key=None,
    )
    context = TIRunContext(dag_run=run, max_tries=0, next_method=next_method, next_kwargs=next_kwargs)
    ti = task_runner.RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=task.dag_id,
        run_id=run.run_id,
        try_number=1,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        task=task,
        bundle_instance=None,
        start_date=now,
        max_tries=0,
    )
    ti._ti_context_from_server = context
    state, message, error = task_runner.run(ti, ti.get_template_context(), structlog.get_logger())
    return TaskTry(state, message, error)
