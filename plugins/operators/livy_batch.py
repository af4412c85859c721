"""Run a Spark job as a Livy batch on its pool's READY cluster, deferrably.

The operator is a thin wrapper over :mod:`spotlake.jobs`: it claims the job key
in the registry, submits (or reconnects to a live batch of the same key), defers
on :class:`triggers.livy.LivyBatchTrigger`, and on the event either finishes,
fails with the job's own error from the batch log, or — when the cluster died
under the batch — re-queues the job onto the pool's replacement cluster inside
the same task try, up to ``max_moves`` times.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, NoReturn, TypeVar

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hooks import aws
from hooks.livy import EndpointLivyHook
from operators.links import LIVY_LOG_KEY, livy_log_value
from spark_jobs.common.contract import DATA_ERROR_MARK, ERROR_MARK, RESULT_MARK, last_marked, window_label
from spotlake import artifacts, config
from spotlake.jobs import BatchRequest, NoReadyCluster, report_uri, submit_or_reconnect
from spotlake.registry import Job, JobState, Registry, StaleState
from triggers.livy import MIN_DEFERRAL, LivyBatchTrigger, not_before

NEXT_JOB = object()  # on_batch_success: the task goes on with its next job
T = TypeVar("T")
LOG_TAIL_LINES = 40  # of the driver's log, in a failed job's message
# YARN's own diagnostics of a container whose node was taken away (a spot reclaim, a decommission):
# exit status -100 (released on a lost node) or -102 (preempted). A memory kill (137, 143, "memory
# limits") is the job's own failure and never matches.
LOST_NODE = re.compile(r"(?:Exit status|exitCode): -10[02]\b|released on a \*lost\* node")
OWN_FAILURE = re.compile(r"memory limits|(?:Exit status|exitCode): (?:137|143)\b", re.IGNORECASE)
# A job error that lost capacity can explain: a stage aborted because its executors went away.
EXECUTOR_LOSS = re.compile(r"ExecutorLostFailure|FetchFailed")


def lost_capacity(error: str, log: str) -> str | None:
    """Why the batch counts as having lost its capacity rather than failed on its own, or None.

    ``error`` is the job's own error (its report or its error line; empty when the driver died
    without one), ``log`` the batch log's tail. Capacity was lost when YARN says a node was taken
    away, and the job either said nothing or failed on executors it lost; any other job error is
    the job's own, whatever the log also shows (a spot reclaim Spark recovered from leaves its
    lines there too).
    """
    lost = next((line.strip()[:300] for line in log.splitlines() if LOST_NODE.search(line)), None)
    if lost is None or OWN_FAILURE.search(error) or OWN_FAILURE.search(log):
        return None
    if error and not EXECUTOR_LOSS.search(error):
        return None
    return lost


class BatchFailed(AirflowException):
    """The batch ended with the job's own failure; ``error`` is the job's one error line."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


class DataErrorFailed(BatchFailed, AirflowFailException):
    """The job failed on a value it can never write as configured: the task fails without retries."""


class OutcomeNotRecorded(AirflowException):
    """The batch or statement ended well, but what the job must record (a window's commit, the
    snapshot's end) is not in the registry. The job is marked FAILED, so that a retry runs it
    again as a new attempt instead of reconnecting to the same finished batch."""


class PoolBatchOperator(BaseOperator):
    """Base of spotlake's batch operators; subclasses say what to run and what success means."""

    ui_color = "#d6ecf3"

    def __init__(
        self,
        *,
        pool_name: str,
        aws_conn_id: str | None = "aws_default",
        poll_interval: float = 2.0,
        max_moves: int = 3,
        wait_for_cluster: timedelta = timedelta(minutes=15),
        cluster_poll_interval: timedelta = timedelta(seconds=2),
        capacity_inline_wait: timedelta = timedelta(seconds=20),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self.max_moves = max_moves
        self.wait_for_cluster = wait_for_cluster
        self.cluster_poll_interval = cluster_poll_interval
        self.capacity_inline_wait = capacity_inline_wait
        self.job: Job | None = None

    # ------------------------------------------------------------- subclasses
    def build_request(self, context: Any) -> BatchRequest:
        raise NotImplementedError

    def build_args(self, context: Any, run_id: str) -> list[str]:
        raise NotImplementedError

    def on_batch_success(self, context: Any, job: Job) -> Any:
        """What the task returns once the batch succeeded; :data:`NEXT_JOB` to submit the next
        job of the task (``build_request`` then says which) instead of finishing."""
        return {"job_key": job.job_key, "batch_id": job.batch_id, "cluster": job.cluster_id}

    def start_line(self, job: Job, reconnected: bool, notes: tuple[str, ...] = ()) -> str:
        """The one line a job's start logs: what runs it (batch, or statement of a session), where,
        which attempt, and what it took to get there (``notes``)."""
        if job.in_session:
            runs = f"{'reconnected to' if reconnected else 'posted'} statement {job.statement_id} of session {job.session_id}"
        else:
            runs = f"{'reconnected to' if reconnected else 'submitted'} batch {job.batch_id}"
        line = f"{runs} of {job.job_key} on cluster {job.cluster_id} ({job.endpoint}), attempt {job.attempt}"
        return "; ".join([line, *notes])

    def push(self, context: Any, key: str, value: Any) -> None:
        """Push ``value`` to XCom under ``key`` for the task's extra links (operators/links.py)."""
        ti = context.get("ti")
        if ti is not None and self.do_xcom_push:
            ti.xcom_push(key=key, value=value)

    def started(self, context: Any, job: Job, reconnected: bool, notes: tuple[str, ...]) -> None:
        """A job runs: its one start line, and where its Livy log is (the task's Livy log link)."""
        self.log.info("%s", self.start_line(job, reconnected, notes))
        kind, livy_id = ("session", job.session_id) if job.in_session else ("batch", job.batch_id)
        self.push(context, LIVY_LOG_KEY, livy_log_value(job.endpoint, kind, livy_id))

    # ------------------------------------------------------------------ hooks
    @cached_property
    def registry(self) -> Registry:
        return aws.registry(self.aws_conn_id)

    @staticmethod
    def livy(endpoint: str) -> EndpointLivyHook:
        return EndpointLivyHook(endpoint)

    # -------------------------------------------------------------- execution
    def execute(self, context: Any) -> Any:
        return self._submit_and_defer(context)

    def _submit_and_defer(self, context: Any, waiting_since: str = "") -> Any:
        request = self.build_request(context)
        submission = self.await_capacity(
            lambda: submit_or_reconnect(
                self.registry, request, self.livy, build_args=lambda run_id: self.build_args(context, run_id)
            ),
            (NoReadyCluster,),
            waiting_since,
        )
        self.job = submission.job
        self.started(context, self.job, submission.reconnected, submission.notes)
        self.defer(
            trigger=LivyBatchTrigger(
                endpoint=self.job.endpoint,
                batch_id=self.job.batch_id,
                job_key=self.job.job_key,
                poll_interval=self.poll_interval,
                pool=self.job.pool,
                cluster_id=self.job.cluster_id,
                aws_conn_id=self.aws_conn_id,
                registry_prefix=self.registry.prefix,
                not_before=not_before(),
            ),
            method_name="execute_complete",
        )

    def await_capacity(self, submit: Callable[[], T], lacking: tuple[type[Exception], ...], waiting_since: str) -> T:
        """``submit()``. While it finds the pool without capacity (one of ``lacking``: no READY
        cluster, no free session), it is tried again in the task every ``cluster_poll_interval``
        for up to ``capacity_inline_wait`` (within ``wait_for_cluster``), then the task defers
        (:meth:`wait_for_capacity`) for at least ``MIN_DEFERRAL``: a deferral resumed within
        seconds can be failed by Airflow's scheduler."""
        since = waiting_since
        started = time.monotonic()
        budget = min(self.capacity_inline_wait, self.wait_for_cluster).total_seconds()
        pause = self.cluster_poll_interval.total_seconds()
        while True:
            try:
                return submit()
            except lacking as exc:
                since = since or datetime.now(UTC).isoformat()
                if time.monotonic() - started + pause > budget:
                    self.wait_for_capacity(exc, since)
                self.log.info("%s; trying again in %.0f s", exc, pause)
                time.sleep(pause)

    def wait_for_capacity(self, exc: Exception, waiting_since: str) -> NoReturn:
        """Defer and try again in ``cluster_poll_interval``, at least ``MIN_DEFERRAL``
        (``resume_waiting``): the pool has no READY cluster, or no free session (``exc`` says which).
        Fails the task after ``wait_for_cluster``."""
        since = waiting_since or datetime.now(UTC).isoformat()
        if datetime.now(UTC) - datetime.fromisoformat(since) > self.wait_for_cluster:
            lacking = "READY cluster" if isinstance(exc, NoReadyCluster) else "free session"
            raise AirflowException(
                f"pool '{self.pool_name}' had no {lacking} for {self.wait_for_cluster}; "
                f"check the fleet DAG and `spotlake status` ({exc})"
            ) from exc
        self.log.warning("%s; waiting (since %s)", exc, since)
        self.defer(
            trigger=TimeDeltaTrigger(max(self.cluster_poll_interval, MIN_DEFERRAL)),
            method_name="resume_waiting",
            kwargs={"since": since},
        )

    def resume_waiting(self, context: Any, event: Any = None, since: str = "") -> Any:
        """Try again after a wait for a READY cluster; ``since`` is when the wait began."""
        return self._submit_and_defer(context, waiting_since=since)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        job = self.registry.get_job(event["job_key"])
        if job is None or job.batch_id != event["batch_id"] or job.endpoint != event["endpoint"]:
            # The job moved on (another run re-submitted it): follow it.
            self.log.info("job %s moved on since batch %s; reconnecting", event["job_key"], event["batch_id"])
            return self._submit_and_defer(context)
        self.job = job
        status = event["status"]
        if status == "success":
            result = self.on_success_recorded(context, job)
            self._finish(job, JobState.SUCCEEDED, "")
            if result is NEXT_JOB:
                return self._submit_and_defer(context)
            return result
        if status == "failed":
            error, tail, data = self._batch_error(job)
            lost = None if data else lost_capacity(error, tail)
            if lost:
                # A node taken from under the batch (spot reclaim): not the job's failure.
                said = f"; the job said: {error}" if error else ""
                return self._requeue(context, job, {"reason": f"batch {job.batch_id} lost capacity: {lost}{said}"})
            self._finish(job, JobState.FAILED, error or f"batch ended {event.get('state')}")
            failed = DataErrorFailed if data else BatchFailed
            if data:
                self.log.error("data error: failing without retries (a retry would read the same value): %s", error)
            raise failed(
                f"{job.job_key}: batch {job.batch_id} on cluster {job.cluster_id} ended "
                f"'{event.get('state')}': {error or 'see the batch log below'}\n--- batch log (tail) ---\n{tail}",
                error or f"batch {job.batch_id} on cluster {job.cluster_id} ended '{event.get('state')}'",
            )
        # requeued / lost / unreachable: the cluster went away under the batch.
        return self._requeue(context, job, event)

    def _requeue(self, context: Any, job: Job, event: dict[str, Any]) -> Any:
        """Re-queue onto the pool's (replacement) cluster without consuming an Airflow retry."""
        # The fleet may have re-queued it already (its cluster declared DEAD): that move is counted.
        requeued = job.state == JobState.REQUEUED
        earlier = job.moves - 1 if requeued else job.moves
        if earlier >= self.max_moves:
            self._finish(job, JobState.FAILED, f"moved {earlier} times; {event.get('reason')}")
            raise AirflowException(
                f"{job.job_key}: its cluster or capacity was lost {earlier + 1} times (limit max_moves="
                f"{self.max_moves}); last: {event.get('reason')}"
            )
        try:
            if not requeued:
                self.registry.update_job(
                    job, state=JobState.REQUEUED, moves=job.moves + 1, reason=str(event.get("reason", event.get("status")))
                )
        except StaleState:
            self.log.info("job %s changed while re-queueing; following it", job.job_key)
        self._delete_quietly(job)
        self.log.warning("re-queueing %s: %s", job.job_key, event.get("reason"))
        return self._submit_and_defer(context)

    def _delete_quietly(self, job: Job) -> None:
        """Kill what may be left of the old batch (a drained cluster still runs it)."""
        try:
            self.livy(job.endpoint).delete_batch(job.batch_id)
        except Exception as exc:  # noqa: BLE001 - a dead cluster cannot answer; that is expected
            self.log.info("old batch %s on %s not deleted: %s", job.batch_id, job.endpoint, exc)

    def on_success_recorded(self, context: Any, job: Job) -> Any:
        """:meth:`on_batch_success`, marking the job FAILED when the job did not record its outcome."""
        try:
            return self.on_batch_success(context, job)
        except OutcomeNotRecorded as exc:
            self._finish(job, JobState.FAILED, str(exc))
            raise

    def _finish(self, job: Job, state: JobState, reason: str) -> None:
        try:
            self.registry.update_job(job, state=state, reason=reason[:1000])
        except StaleState:
            self.log.warning("job %s changed before it could be marked %s", job.job_key, state)

    @cached_property
    def s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def _report(self, job: Job) -> dict[str, Any] | None:
        """The outcome the job wrote beside its artifacts (spark_jobs/common/report.py), found whatever the
        deploy mode; None when it wrote none (a job killed before its end, an older job)."""
        base = artifacts.artifacts_base()
        return artifacts.read_report(
            report_uri(base, job.run_id), self.s3 if base.startswith("s3://") else None, run_id=job.run_id
        )

    def _batch_result(self, job: Job) -> dict[str, Any] | None:
        """The job's result: from its report, else its result line (``SPOTLAKE_RESULT: <json>``) in
        the batch log."""
        report = self._report(job)
        if report is not None and report.get("status") == "succeeded":
            return report.get("result")
        try:
            lines = self.livy(job.endpoint).get_batch_logs(job.batch_id, -1, 1000).get("log", [])
        except Exception as exc:  # noqa: BLE001 - the result line is for the log; the registry is the record
            self.log.info("batch log of %s unavailable: %s", job.batch_id, exc)
            return None
        line = last_marked(lines, RESULT_MARK)
        try:
            return json.loads(line) if line else None
        except ValueError:
            return None

    def _batch_error(self, job: Job) -> tuple[str, str, bool]:
        """The job's own error (its report's, else its ``SPOTLAKE_ERROR: ...`` line), the tail of the
        batch log (the driver's output in client mode: Livy keeps the last lines of it), and whether
        the job said its error is a data error."""
        report = self._report(job)
        try:
            # from -1: Livy's last lines, where a long log's error line is
            lines = self.livy(job.endpoint).get_batch_logs(job.batch_id, -1, 1000).get("log", [])
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy; the failure stands
            lines = [f"(batch log unavailable: {exc})"]
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        if report is not None and report.get("status") == "failed":
            return str(report.get("error", "")), tail, bool(report.get("data_error"))
        error = last_marked(lines, ERROR_MARK) or ""
        return error, tail, any(DATA_ERROR_MARK in ln for ln in lines)

    def on_kill(self) -> None:
        job = self.job
        if job is None or job.batch_id < 0:
            return
        self.log.info("killing batch %s of %s on %s", job.batch_id, job.job_key, job.endpoint)
        try:
            self.livy(job.endpoint).delete_batch(job.batch_id)
        finally:
            self._finish(job, JobState.FAILED, "task killed")


class PipelineBatchOperator(PoolBatchOperator):
    """A batch that works on one pipeline's lake tables (maintenance, reconciliation): its job key
    is ``<pipeline>#<kind>-<the run's data interval end>``."""

    template_fields = ("pipeline_name",)
    job_kind = "batch"

    def __init__(self, *, pipeline_name: str, **kwargs: Any) -> None:
        self.pipeline_name = pipeline_name
        super().__init__(**kwargs)

    @cached_property
    def config(self) -> config.PipelinesConfig:
        return config.load()

    def job_key(self, context: Any) -> str:
        moment = context.get("data_interval_end") or context.get("logical_date")
        label = window_label(moment) if moment is not None else "manual"
        return f"{self.pipeline_name}#{self.job_kind}-{label}"
