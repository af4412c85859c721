"""Run a job as a statement in one of its pool's long-lived Livy sessions (warm execution).

:class:`SessionStatementMixin` gives a :class:`~operators.livy_batch.PoolBatchOperator` the
statement path of :mod:`spotlake.sessions`, with the batch path's guarantees: one live statement
per job key (a retried task reconnects to it), the job's own error from its report, a data error
failing without retries, and a session or cluster lost under the statement re-queueing the job
onto a new session or the replacement cluster inside the same task try. The task first waits for
its statement for up to ``sessions.inline_wait`` (most windows end well within it, so they pay no
deferral); a longer one defers on :class:`~triggers.livy.LivyStatementTrigger`. A statement
still running at ``sessions.statement_timeout`` is cancelled, its session replaced and the job
re-queued.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from hooks.livy import EndpointLivyHook
from operators.livy_batch import LOG_TAIL_LINES, NEXT_JOB, BatchFailed, DataErrorFailed, PoolBatchOperator
from spark_jobs.common.contract import DATA_ERROR_MARK, ERROR_MARK, last_marked
from spotlake import artifacts, pools, sessions
from spotlake.jobs import NoReadyCluster, report_uri
from spotlake.registry import Job, JobState
from triggers.livy import LivyStatementTrigger, not_before


def code_version(published: artifacts.JobArtifacts) -> str:
    """The content hash of what a session loads for a job: its package zip, jars and Spark settings."""
    document = json.dumps({"py_files": published.py_files, "jars": published.jars, "conf": published.conf}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()[:16]


if TYPE_CHECKING:
    # The mixin is only ever mixed into a PoolBatchOperator: type-check it as one.
    _MixinBase = PoolBatchOperator
else:
    _MixinBase = object


class SessionStatementMixin(_MixinBase):
    """The statement path; the operator says which jobs take it (:meth:`runs_in_session`) and what
    they run (:meth:`statement_request`, :meth:`statement_argv`)."""

    entry = "extraction"

    # ------------------------------------------------------------- subclasses
    def runs_in_session(self, context: Any) -> bool:
        return self.session_settings.enabled

    def statement_argv(self, context: Any, run_id: str) -> list[str]:
        raise NotImplementedError

    def statement_job_key(self, context: Any) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ config
    @cached_property
    def session_settings(self) -> pools.SessionSettings:
        return pools.load().get(self.pool_name).sessions

    @staticmethod
    def livy_sessions(endpoint: str) -> sessions.LivySessions:
        return sessions.LivySessions(EndpointLivyHook(endpoint))

    def statement_request(self, context: Any) -> tuple[sessions.StatementRequest, str]:
        """The request of this task's job, and the root its reports go under."""
        published = artifacts.publish(self.entry, s3=self.s3)
        request = sessions.StatementRequest(
            job_key=self.statement_job_key(context),
            pool=self.pool_name,
            code_version=code_version(published),
            py_files=list(published.py_files),
            jars=list(published.jars),
            conf={**published.conf, **artifacts.ONE_ATTEMPT},
            name=f"spotlake-{self.pool_name}",
            entry=self.entry,
        )
        return request, published.root or artifacts.artifacts_base()

    # --------------------------------------------------------------- execution
    def _run_in_session(self, context: Any, waiting_since: str = "") -> Any:
        settings = self.session_settings
        request, root = self.statement_request(context)

        def argv(run_id: str) -> list[str]:
            return [*self.statement_argv(context, run_id), "--report", report_uri(root, run_id)]

        submission = self.await_capacity(
            lambda: sessions.submit_or_reconnect(self.registry, request, self.livy_sessions, argv, settings),
            (NoReadyCluster, sessions.NoFreeSession),
            waiting_since,
        )
        job = self.job = submission.job
        self.started(context, job, submission.reconnected, submission.notes)
        event = {"session_id": job.session_id, "statement_id": job.statement_id, "job_key": job.job_key, "endpoint": job.endpoint}
        try:
            done = self.livy_sessions(job.endpoint).wait_statement(
                job.session_id, job.statement_id, settings.inline_wait.total_seconds()
            )
        except sessions.SessionLost as exc:
            return self.statement_complete(context, {**event, "status": "lost", "reason": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the trigger tells an unreachable cluster from a blip
            self.log.info("statement %s not polled (%s); deferring", job.statement_id, exc)
            done = None
        if done is not None:
            return self.statement_complete(context, {**event, "status": "done", "statement": done})
        submitted = datetime.fromisoformat(job.submitted_at) if job.submitted_at else datetime.now(UTC)
        deadline = submitted + settings.statement_timeout
        self.defer(
            trigger=LivyStatementTrigger(
                endpoint=job.endpoint,
                session_id=job.session_id,
                statement_id=job.statement_id,
                job_key=job.job_key,
                deadline=deadline.isoformat(),
                poll_interval=self.poll_interval,
                pool=job.pool,
                cluster_id=job.cluster_id,
                aws_conn_id=self.aws_conn_id,
                registry_prefix=self.registry.prefix,
                not_before=not_before(),
            ),
            method_name="statement_complete",
        )

    def statement_complete(self, context: Any, event: dict[str, Any]) -> Any:
        job = self.registry.get_job(event["job_key"])
        if job is None or (job.session_id, job.statement_id, job.endpoint) != (
            event["session_id"],
            event["statement_id"],
            event["endpoint"],
        ):
            self.log.info(
                "job %s moved on since statement %s of session %s; following it",
                event["job_key"],
                event["statement_id"],
                event["session_id"],
            )
            return self._submit_and_defer(context)
        self.job = job
        status = event["status"]
        if status == "done":
            return self._statement_done(context, job, event["statement"])
        # Hung past its deadline: its session is deleted with it. Lost or re-queued: the session or
        # its cluster is gone already.
        client = self.livy_sessions(job.endpoint) if status == "timeout" else None
        sessions.release_slot(
            self.registry, job.slot, job.cluster_id, job.run_id, discard=str(event.get("reason", status)), client=client
        )
        return self._requeue(context, job, event)

    def _statement_done(self, context: Any, job: Job, statement: dict[str, Any]) -> Any:
        report = self._report(job)
        status = sessions.statement_status(statement)
        text = sessions.statement_text(statement)
        succeeded = (report or {}).get("status") == "succeeded" or (
            report is None and status == "success" and sessions.exit_code(statement) == 0
        )
        if succeeded:
            try:
                result = self.on_success_recorded(context, job)
                self._finish(job, JobState.SUCCEEDED, "")
            finally:
                self._release_after(job, statement)
            if result is NEXT_JOB:
                return self._submit_and_defer(context)
            return result
        if report is None and status != "success":
            # No outcome from the job: did its session die under it (the driver killed)?
            try:
                state = self.livy_sessions(job.endpoint).state(job.session_id)
            except Exception:  # noqa: BLE001 - an endpoint that no longer answers lost the session too
                state = None
            if state is None or state in sessions.SESSION_GONE:
                said = sessions.statement_failure(statement)
                reason = f"session {job.session_id} on {job.cluster_id} is {state or 'gone'}: {said}"
                sessions.release_slot(self.registry, job.slot, job.cluster_id, job.run_id, discard=reason)
                return self._requeue(context, job, {"status": "lost", "reason": reason})
        # The job's own error: its report's, else its error line in what the statement printed (as
        # a batch's log has it), else the exception the statement raised.
        printed = text.splitlines()
        error = str(
            (report or {}).get("error")
            or last_marked(printed, ERROR_MARK)
            or sessions.statement_error(statement)
            or f"statement {job.statement_id} ended {statement.get('state')}"
        )
        data = bool((report or {}).get("data_error")) if report is not None else any(DATA_ERROR_MARK in ln for ln in printed)
        driver_log = self._session_log_tail(job)  # before the slot's release, which may delete the session
        self._finish(job, JobState.FAILED, error)
        self._release_after(job, statement)
        if data:
            self.log.error("data error: failing without retries (a retry would read the same value): %s", error)
        failed = DataErrorFailed if data else BatchFailed
        tail = "\n".join(printed[-LOG_TAIL_LINES:])
        raise failed(
            f"{job.job_key}: statement {job.statement_id} of session {job.session_id} on cluster {job.cluster_id} "
            f"failed: {error}\n--- statement output (tail) ---\n{tail}\n"
            f"--- session {job.session_id} log (tail) ---\n{driver_log}",
            error,
        )

    def _session_log_tail(self, job: Job) -> str:
        """The last lines of the session's log: its driver's output (Spark's own lines, the job's
        log lines), where the statement's output has only what the job printed."""
        try:
            lines = self.livy_sessions(job.endpoint).log_tail(job.session_id, LOG_TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy; the failure stands
            return f"(session log unavailable: {exc})"
        return "\n".join(lines) or "(empty)"

    def _release_after(self, job: Job, statement: dict[str, Any]) -> None:
        """Free the job's slot after its statement ended; a session that grew too large is deleted
        (the next window starts a new one)."""
        grown = sessions.grown_past(sessions.session_memory(statement), self.session_settings)
        if grown:
            self.log.info("replacing session %s on %s after this window: %s", job.session_id, job.cluster_id, grown)
        sessions.release_slot(
            self.registry,
            job.slot,
            job.cluster_id,
            job.run_id,
            discard=grown,
            client=self.livy_sessions(job.endpoint) if grown else None,
        )

    def _delete_quietly(self, job: Job) -> None:
        if not job.in_session:
            super()._delete_quietly(job)
            return
        try:
            self.livy_sessions(job.endpoint).cancel(job.session_id, job.statement_id)
        except Exception as exc:  # noqa: BLE001 - a dead cluster cannot answer; that is expected
            self.log.info("old statement %s on %s not cancelled: %s", job.statement_id, job.endpoint, exc)

    def on_kill(self) -> None:
        job = self.job
        if job is None or not job.in_session:
            super().on_kill()
            return
        if job.statement_id < 0:
            return
        self.log.info("killing statement %s with its session %s (%s)", job.statement_id, job.session_id, job.job_key)
        self._finish(job, JobState.FAILED, "task killed")
        sessions.release_slot(
            self.registry, job.slot, job.cluster_id, job.run_id, discard="task killed", client=self.livy_sessions(job.endpoint)
        )
