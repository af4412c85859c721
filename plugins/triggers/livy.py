"""Triggers that wait for a Livy batch or statement without holding a worker slot.

A trigger has no side effects (it may run more than once, on any triggerer): it
only observes and yields one event; the operator acts on the event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from hooks.livy import TERMINAL_STATES, EndpointLivyAsyncHook

# The shortest time from a deferral to its trigger's event. A task resumed seconds after it
# deferred can be RUNNING before Airflow's scheduler has read the deferred try's exit; the scheduler
# then fails it as changed externally and spends a retry (apache/airflow#72716).
MIN_DEFERRAL = timedelta(seconds=15)


def not_before() -> str:
    """When the event of a trigger deferred on now may be yielded at the earliest (``not_before``)."""
    return (datetime.now(UTC) + MIN_DEFERRAL).isoformat()


class JobTrigger(BaseTrigger):
    """What the Livy triggers share: the job they watch, where it runs, how often to look, and the
    registry's view of it (a job the fleet re-queued, or whose cluster is DEAD, runs no more)."""

    FIELDS = (
        "endpoint",
        "job_key",
        "poll_interval",
        "unreachable_timeout",
        "pool",
        "cluster_id",
        "aws_conn_id",
        "registry_prefix",
        "not_before",
    )
    OWN_FIELDS: tuple[str, ...] = ()  # the subclass's ids of what runs the job

    def __init__(
        self,
        endpoint: str,
        job_key: str,
        poll_interval: float,
        unreachable_timeout: float = 45.0,
        pool: str = "",
        cluster_id: str = "",
        aws_conn_id: str | None = "aws_default",
        registry_prefix: str | None = None,
        not_before: str = "",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger.__init__ has no annotations
        self.endpoint = endpoint
        self.job_key = job_key
        self.poll_interval = poll_interval
        self.unreachable_timeout = unreachable_timeout
        self.pool = pool
        self.cluster_id = cluster_id
        self.aws_conn_id = aws_conn_id
        self.registry_prefix = registry_prefix
        self.not_before = not_before  # ISO time ("": none) before which no event is yielded

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {name: getattr(self, name) for name in (*self.OWN_FIELDS, *self.FIELDS)},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The first event of :meth:`watch`, held until ``not_before``."""
        async for event in self.watch():
            if self.not_before:
                wait = (datetime.fromisoformat(self.not_before) - datetime.now(UTC)).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
            yield event
            return

    def watch(self) -> AsyncIterator[TriggerEvent]:
        raise NotImplementedError

    def _event(self, status: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                **{name: getattr(self, name) for name in self.OWN_FIELDS},
                "job_key": self.job_key,
                "endpoint": self.endpoint,
                **extra,
            }
        )

    def _registry(self) -> Any:
        from hooks import aws

        return aws.registry(self.aws_conn_id, self.registry_prefix)

    def _runs_elsewhere(self, job: Any) -> bool:
        """Whether the SUBMITTED ``job`` names another batch or statement than this trigger's."""
        raise NotImplementedError

    async def _requeue_reason(self, registry: Any) -> str | None:
        """:meth:`_moved_reason`, off the event loop; None without a registry or when it cannot be
        read (it is checked again next poll)."""
        if registry is None:
            return None
        try:
            return await asyncio.to_thread(self._moved_reason, registry)
        except Exception as exc:  # noqa: BLE001 - the registry is checked again next poll
            self.log.warning("registry check of %s failed: %s", self.job_key, exc)
            return None

    def _moved_reason(self, registry: Any) -> str | None:
        """Why the registry says this trigger's batch or statement no longer runs the job, or None."""
        from spotlake.registry import ClusterState, JobState

        job = registry.get_job(self.job_key)
        if job is None:
            return None
        if job.state == JobState.REQUEUED or (job.state == JobState.SUBMITTED and self._runs_elsewhere(job)):
            return job.reason or f"job {self.job_key} was re-queued"
        if self.pool and self.cluster_id:
            cluster = registry.get_cluster(self.pool, self.cluster_id)
            if cluster is not None and cluster.state in (ClusterState.DEAD, ClusterState.TERMINATED):
                return f"cluster {self.cluster_id} is {cluster.state}: {cluster.reason}"
        return None


class LivyBatchTrigger(JobTrigger):
    """Polls one Livy batch until it ends, or until its cluster stops answering.

    Events (``status``):
    - ``success`` / ``failed``: the batch ended; ``state`` is Livy's final state;
    - ``lost``: the Livy server answered that it does not know the batch (restarted);
    - ``unreachable``: the endpoint has not answered for ``unreachable_timeout`` seconds;
    - ``requeued``: the fleet re-queued the job (its cluster was declared dead or drained
      past its deadline); seen in the registry, usually before Livy stops answering.
    """

    OWN_FIELDS = ("batch_id",)

    def __init__(self, endpoint: str, batch_id: int, job_key: str, poll_interval: float = 2.0, **kwargs: Any) -> None:
        super().__init__(endpoint, job_key, poll_interval, **kwargs)
        self.batch_id = batch_id

    def _runs_elsewhere(self, job: Any) -> bool:
        # Each Livy server numbers its batches from 0: the same id on another endpoint is another batch.
        return job.batch_id >= 0 and (job.batch_id, job.endpoint) != (self.batch_id, self.endpoint)

    async def watch(self) -> AsyncIterator[TriggerEvent]:
        hook = EndpointLivyAsyncHook(self.endpoint)
        registry = await asyncio.to_thread(self._registry) if self.pool else None
        failing_since: float | None = None
        last_error = ""
        while True:
            if reason := await self._requeue_reason(registry):
                yield self._event("requeued", reason=reason)
                return
            try:
                result = await hook.get_batch_state(self.batch_id)
            except Exception as exc:  # noqa: BLE001 - connection refused, timeouts: the cluster may be gone
                result = {"status": "error", "response": f"{type(exc).__name__}: {exc}"}
            if result.get("status") == "success":
                failing_since = None
                state = result["batch_state"]
                if state in TERMINAL_STATES:
                    yield self._event("success" if state.value == "success" else "failed", state=state.value)
                    return
            else:
                response = result.get("response")
                if isinstance(response, dict) and 404 in response.get("Status Code", set()):
                    yield self._event("lost", reason=f"Livy at {self.endpoint} does not know batch {self.batch_id}")
                    return
                last_error = str(response)
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since >= self.unreachable_timeout:
                    yield self._event(
                        "unreachable",
                        reason=f"Livy at {self.endpoint} has not answered for {self.unreachable_timeout:.0f} s: {last_error}",
                    )
                    return
            await asyncio.sleep(self.poll_interval)


class LivyStatementTrigger(JobTrigger):
    """Polls one statement of a long-lived Livy session (:mod:`spotlake.sessions`) until it ends.

    Events (``status``): ``done`` (the statement ended: the event carries it as Livy returned
    it), ``lost`` (Livy no longer knows the statement or its session, or the session died),
    ``unreachable``, ``requeued`` (the registry moved the job or declared its cluster dead) and
    ``timeout`` (still running at ``deadline``, an ISO time).
    """

    OWN_FIELDS = ("session_id", "statement_id", "deadline")

    def __init__(
        self,
        endpoint: str,
        session_id: int,
        statement_id: int,
        job_key: str,
        deadline: str,
        poll_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoint, job_key, poll_interval, **kwargs)
        self.session_id = session_id
        self.statement_id = statement_id
        self.deadline = deadline

    def _runs_elsewhere(self, job: Any) -> bool:
        return job.statement_id >= 0 and (job.statement_id, job.session_id, job.endpoint) != (
            self.statement_id,
            self.session_id,
            self.endpoint,
        )

    async def _get(self, hook: Any, path: str) -> tuple[str, Any]:
        """("ok", body), ("missing", None) or ("error", text)."""
        try:
            result = await hook.run_method(endpoint=path, method="GET")
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts: the cluster may be gone
            return "error", f"{type(exc).__name__}: {exc}"
        if result.get("status") == "success":
            return "ok", result["response"]
        if 404 in (result.get("Status Code") or set()):
            return "missing", None
        return "error", str(result.get("Response") or result.get("response"))

    async def watch(self) -> AsyncIterator[TriggerEvent]:
        from spotlake.sessions import SESSION_GONE, STATEMENT_DONE

        hook = EndpointLivyAsyncHook(self.endpoint)
        registry = await asyncio.to_thread(self._registry) if self.pool else None
        deadline = datetime.fromisoformat(self.deadline)
        failing_since: float | None = None
        while True:
            if reason := await self._requeue_reason(registry):
                yield self._event("requeued", reason=reason)
                return
            kind, body = await self._get(hook, f"/sessions/{self.session_id}/statements/{self.statement_id}")
            if kind == "ok":
                failing_since = None
                if body.get("state") in STATEMENT_DONE:
                    yield self._event("done", statement=body)
                    return
                session_kind, session = await self._get(hook, f"/sessions/{self.session_id}")
                if session_kind == "ok" and session.get("state") in SESSION_GONE:
                    yield self._event("lost", reason=f"session {self.session_id} on {self.endpoint} is {session.get('state')}")
                    return
                if datetime.now(UTC) >= deadline:
                    yield self._event(
                        "timeout",
                        reason=f"statement {self.statement_id} of session "
                        f"{self.session_id} still {body.get('state')} at {self.deadline}",
                    )
                    return
            elif kind == "missing":
                yield self._event(
                    "lost",
                    reason=f"Livy at {self.endpoint} does not know statement {self.statement_id} of session {self.session_id}",
                )
                return
            else:
                # Livy answers errors about the statements of a dead session: ask about the session.
                session_kind, session = await self._get(hook, f"/sessions/{self.session_id}")
                if session_kind == "missing" or (session_kind == "ok" and session.get("state") in SESSION_GONE):
                    state = "unknown to Livy" if session_kind == "missing" else session.get("state")
                    yield self._event("lost", reason=f"session {self.session_id} on {self.endpoint} is {state}")
                    return
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since >= self.unreachable_timeout:
                    yield self._event(
                        "unreachable",
                        reason=f"Livy at {self.endpoint} has not answered for {self.unreachable_timeout:.0f} s: {body}",
                    )
                    return
            await asyncio.sleep(self.poll_interval)
