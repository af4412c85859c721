"""Job routing: submit a batch for a job key to its pool's READY cluster, exactly once.

A submit that finds a live batch for its key reconnects to it instead of
submitting a second one. Every change of the job goes through the registry's
conditional writes, so two runs of the same key never both submit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from spotlake.errors import SpotlakeError
from spotlake.registry import Cluster, Job, JobState, Registry, StaleState

log = logging.getLogger(__name__)

# A job SUBMITTED without a batch id for this long was abandoned mid-submit.
ABANDONED_SUBMIT_S = 120.0


def report_uri(root: str, run_id: str) -> str:
    """Where the attempt ``run_id`` of a job writes its outcome (spark_jobs/common/report.py)."""
    return f"{root.rstrip('/')}/reports/{run_id}.json"


class NoReadyCluster(SpotlakeError):
    """The pool has no READY cluster to take the job."""


class SubmitFailed(SpotlakeError):
    """Livy refused the batch."""


class BatchClient(Protocol):
    def post_batch(self, **kwargs: Any) -> int: ...

    def get_batch_state(self, session_id: int | str, retry_args: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class BatchRequest:
    """What to run for a job key: the Livy batch body, without any credential."""

    job_key: str
    pool: str
    file: str
    args: list[str] = field(default_factory=list)
    py_files: list[str] = field(default_factory=list)
    conf: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    jars: list[str] = field(default_factory=list)
    # Where the job writes its outcome (``<root>/reports/<run id>.json``; see spark_jobs/common/report.py).
    report_root: str | None = None

    def report_uri(self, run_id: str) -> str | None:
        return report_uri(self.report_root, run_id) if self.report_root else None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"file": self.file, "args": self.args}
        if self.py_files:
            body["py_files"] = self.py_files
        if self.jars:
            body["jars"] = self.jars
        if self.conf:
            body["conf"] = self.conf
        if self.name:
            body["name"] = self.name
        return body


@dataclass(frozen=True)
class Submission:
    """The job that runs for a key, whether this call reconnected to it, and what it took to get
    there (``notes``: a session started or replaced, job code loaded, the state of a batch reconnected
    to), for the one line the task logs at its start."""

    job: Job
    reconnected: bool
    notes: tuple[str, ...] = ()


def _batch_state(client: BatchClient, batch_id: int) -> str | None:
    """The batch's Livy state, or None if the endpoint does not answer or know it."""
    try:
        state = client.get_batch_state(batch_id)
    except Exception:  # noqa: BLE001 - any failure means "cannot reconnect to it"
        return None
    return getattr(state, "value", str(state))


def age_s(iso: str) -> float:
    """Seconds since the ISO time ``iso`` (infinite for "")."""
    if not iso:
        return float("inf")
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()


def submit_or_reconnect(
    registry: Registry,
    request: BatchRequest,
    client_for: Callable[[str], BatchClient],
    build_args: Callable[[str], list[str]] | None = None,
    attempts: int = 8,
) -> Submission:
    """Make sure exactly one live batch runs for ``request.job_key`` and return its job.

    ``client_for(endpoint)`` gives a Livy client; ``build_args(run_id)`` the batch
    arguments of a new attempt (each attempt has its own run id).
    """
    for _ in range(attempts):
        job = registry.get_job(request.job_key)
        if job is not None and job.state == JobState.SUBMITTED:
            if job.batch_id < 0:
                if age_s(job.submitted_at) < ABANDONED_SUBMIT_S:
                    # Another run is submitting this key right now: wait for its batch id.
                    registry.wait_for_submission(request.job_key, timeout=ABANDONED_SUBMIT_S)
                    continue
            else:
                state = _batch_state(client_for(job.endpoint), job.batch_id)
                if state is not None and state not in ("dead", "killed", "error"):
                    log.debug("reconnecting to batch %s of %s on %s (state %s)", job.batch_id, job.job_key, job.cluster_id, state)
                    return Submission(job, reconnected=True, notes=(f"Livy says {state}",))
        cluster = registry.ready_cluster(request.pool)
        if cluster is None:
            raise NoReadyCluster(
                f"pool '{request.pool}' has no READY cluster to run {request.job_key}; the fleet "
                "DAG launches one (check `spotlake status` and the fleet DAG's last run)"
            )
        try:
            return Submission(_submit(registry, request, cluster, job, client_for, build_args), False)
        except StaleState:
            continue
    raise StaleState(f"job {request.job_key} kept changing under {attempts} submit attempts")


def _submit(
    registry: Registry,
    request: BatchRequest,
    cluster: Cluster,
    expected: Job | None,
    client_for: Callable[[str], BatchClient],
    build_args: Callable[[str], list[str]] | None,
) -> Job:
    run_id = uuid.uuid4().hex
    job = registry.claim_job(request.job_key, request.pool, cluster, run_id, expected)
    body = request.body()
    if request.name:
        # Livy rejects a name that a retained batch already has: one name per attempt.
        body["name"] = f"{request.name}-{run_id[:8]}"
    if build_args is not None:
        body["args"] = build_args(run_id)
    report = request.report_uri(run_id)
    if report:
        body["args"] = [*body["args"], "--report", report]
    started = time.monotonic()
    try:
        batch_id = client_for(cluster.endpoint).post_batch(**body)
    except Exception as exc:
        registry.update_job(job, state=JobState.FAILED, reason=f"submit to {cluster.cluster_id} failed: {exc}")
        raise SubmitFailed(
            f"Livy at {cluster.endpoint} (cluster {cluster.cluster_id}, pool {cluster.pool}) refused the "
            f"batch of {request.job_key}: {exc}"
        ) from exc
    log.debug(
        "submitted %s as batch %s to %s in %.2f s", request.job_key, batch_id, cluster.cluster_id, time.monotonic() - started
    )
    return registry.update_job(job, batch_id=int(batch_id))
