"""Warm execution: jobs run as statements in long-lived Livy sessions, exactly once.

Each READY cluster keeps up to ``sessions.per_cluster`` interactive Livy sessions (kind
``pyspark``), one per *slot* of the registry's ``<prefix>-sessions`` table. A job attempt leases a
free slot (a conditional write), makes sure its session is alive and has loaded the job code of
this version (the content hash of the published ``spark_jobs.zip``: a first statement adds it with
``sc.addPyFile``; a session with other code is replaced), then posts its statement: a call of the
same job entry the batch runs, with the same job document (:mod:`spark_jobs.common.session`). The job's
record in ``<prefix>-jobs`` names the session, statement and slot, so a retried or re-run task
reconnects to a live statement instead of posting a second one.

A slot's lease is held by one job attempt (its run id) until that attempt's outcome is handled;
a lease whose job has moved on (finished, failed, re-claimed) is stale and taken over. A session
is replaced after ``recycle_after`` statements, when it has grown past ``recycle_heap`` (the driver's
heap still live after garbage collection, as a share of its maximum) or ``recycle_python_mb`` (its
Python process), when the code changes, or when Livy no longer knows it or reports it dead.

Nothing here imports Airflow: ``client_for(endpoint)`` gives any object with the provider
LivyHook's ``run_method(endpoint, method, data, headers)``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from spark_jobs.common.contract import EXIT_MARK, MEMORY_MARK
from spotlake.errors import SpotlakeError
from spotlake.jobs import NoReadyCluster, Submission, SubmitFailed, age_s
from spotlake.pools import SessionSettings
from spotlake.registry import Cluster, Job, JobState, Registry, SessionSlot, StaleState, now_iso

log = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class SessionState(StrEnum):
    """Livy's states of an interactive session (0.7-0.9)."""

    NOT_STARTED = "not_started"
    STARTING = "starting"
    RECOVERING = "recovering"
    IDLE = "idle"
    RUNNING = "running"
    BUSY = "busy"
    SHUTTING_DOWN = "shutting_down"
    ERROR = "error"
    DEAD = "dead"
    KILLED = "killed"
    SUCCESS = "success"


class StatementState(StrEnum):
    """Livy's states of a statement."""

    WAITING = "waiting"
    RUNNING = "running"
    AVAILABLE = "available"  # done: its output says whether the code ran to its end ("ok") or raised ("error")
    ERROR = "error"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class StatementOutcome(StrEnum):
    """What became of a statement (:func:`statement_status`)."""

    RUNNING = "running"  # not done yet
    SUCCESS = "success"  # the code ran to its end
    FAILED = "failed"  # it raised, or Livy failed it
    CANCELLED = "cancelled"


# A session in one of SESSION_LIVE can take statements; one in SESSION_GONE never will again.
SESSION_STARTING = frozenset({SessionState.NOT_STARTED, SessionState.STARTING})
SESSION_LIVE = frozenset({SessionState.IDLE, SessionState.BUSY})
SESSION_GONE = frozenset(
    {SessionState.SHUTTING_DOWN, SessionState.ERROR, SessionState.DEAD, SessionState.KILLED, SessionState.SUCCESS}
)
STATEMENT_PENDING = frozenset({StatementState.WAITING, StatementState.RUNNING, StatementState.CANCELLING})
STATEMENT_DONE = frozenset({StatementState.AVAILABLE, StatementState.ERROR, StatementState.CANCELLED})
# A lease is taken before its job is claimed: for this long a lease its job does not name yet is live.
LEASE_GRACE_S = 60.0


class NoFreeSession(SpotlakeError):
    """Every session slot of the cluster is leased to a live job."""


class SessionLost(SpotlakeError):
    """The session died, or Livy no longer knows it."""


class LivyRequestFailed(SpotlakeError):
    """Livy answered an interactive-session request with an error."""


@dataclass(frozen=True)
class StatementRequest:
    """What to run for a job key in a session: the code version and how to load it, and the
    statement's job entry and arguments (built per attempt, with its run id)."""

    job_key: str
    pool: str
    code_version: str
    py_files: list[str]
    jars: list[str] = field(default_factory=list)
    conf: dict[str, str] = field(default_factory=dict)
    name: str = "spotlake"
    entry: str = "extraction"


def bootstrap_code(request: StatementRequest) -> str:
    """The first statement of a session for a code version: load the code, prepare the job packages."""
    return (
        f"for _path in {request.py_files!r}:\n"
        "    sc.addPyFile(_path)\n"
        "from spark_jobs.common.session import prepare as _spotlake_prepare\n"
        "_spotlake_prepare()\n"
        f"print('spotlake job code {request.code_version} loaded')"
    )


def statement_code(entry: str, argv: list[str]) -> str:
    """The statement of one job attempt: the batch's entry function, in this session."""
    return f"from spark_jobs.common.session import run as _spotlake_run\n_spotlake_run(spark, {entry!r}, {argv!r})"


# ----------------------------------------------------------------------------- Livy
class LivySessions:
    """Livy's interactive-session API (``/sessions``) over the provider hook's ``run_method``."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False) -> Any:
        response = self.hook.run_method(
            endpoint=path, method=method, data=json.dumps(body) if body is not None else None, headers=JSON
        )
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise LivyRequestFailed(f"Livy {method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.text else {}

    def create(self, body: dict[str, Any]) -> int:
        return int(self._call("POST", "/sessions", body)["id"])

    def session(self, session_id: int) -> dict[str, Any] | None:
        """The session, or None when Livy does not know it."""
        found: dict[str, Any] | None = self._call("GET", f"/sessions/{session_id}", missing_ok=True)
        return found

    def state(self, session_id: int) -> str | None:
        found = self.session(session_id)
        return None if found is None else str(found.get("state"))

    def delete(self, session_id: int) -> None:
        self._call("DELETE", f"/sessions/{session_id}", missing_ok=True)

    def post_statement(self, session_id: int, code: str) -> int:
        return int(self._call("POST", f"/sessions/{session_id}/statements", {"code": code, "kind": "pyspark"})["id"])

    def statement(self, session_id: int, statement_id: int) -> dict[str, Any] | None:
        """The statement, or None when Livy does not know it (or its session)."""
        found: dict[str, Any] | None = self._call("GET", f"/sessions/{session_id}/statements/{statement_id}", missing_ok=True)
        return found

    def cancel(self, session_id: int, statement_id: int) -> None:
        self._call("POST", f"/sessions/{session_id}/statements/{statement_id}/cancel", {}, missing_ok=True)

    def log_tail(self, session_id: int, lines: int) -> list[str]:
        """The last ``lines`` lines of the session's log (its driver's output, as Livy keeps it), or
        [] when Livy no longer knows the session."""
        response = self.hook.run_method(endpoint=f"/sessions/{session_id}/log", method="GET", data={"from": -1, "size": lines})
        if response.status_code == 404:
            return []
        if response.status_code >= 300:
            raise LivyRequestFailed(f"Livy GET /sessions/{session_id}/log answered {response.status_code}: {response.text[:500]}")
        return [str(line) for line in (response.json() or {}).get("log") or []]

    def wait_live(self, session_id: int, timeout: float, poll: float = 0.5) -> str:
        """Wait until the session can take statements (idle or busy); SessionLost if it died."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(session_id)
            if state is None or state in SESSION_GONE:
                raise SessionLost(f"session {session_id} is {state or 'unknown to Livy'}")
            if state in SESSION_LIVE:
                return state
            if time.monotonic() > deadline:
                raise SessionLost(f"session {session_id} still '{state}' after {timeout:.0f} s (sessions.start_timeout)")
            time.sleep(poll)

    def wait_statement(self, session_id: int, statement_id: int, timeout: float, poll: float = 0.1) -> dict[str, Any] | None:
        """The statement once done, or None if still pending after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.statement(session_id, statement_id)
            if found is None:
                raise SessionLost(f"Livy no longer knows statement {statement_id} of session {session_id}")
            if found.get("state") in STATEMENT_DONE:
                return found
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)


# ------------------------------------------------------------------------ outcomes
def statement_status(statement: dict[str, Any]) -> StatementOutcome:
    """``running``, ``success`` (the code ran to its end), ``failed`` (it raised) or ``cancelled``."""
    state = statement.get("state")
    if state in STATEMENT_PENDING:
        return StatementOutcome.RUNNING
    if state == StatementState.CANCELLED:
        return StatementOutcome.CANCELLED
    output = statement.get("output") or {}
    if state == StatementState.AVAILABLE and output.get("status") == "ok":
        return StatementOutcome.SUCCESS
    return StatementOutcome.FAILED


def statement_text(statement: dict[str, Any]) -> str:
    output = statement.get("output") or {}
    return str((output.get("data") or {}).get("text/plain", ""))


def statement_error(statement: dict[str, Any]) -> str:
    """The statement's error in one line (``ename: evalue``), or ""."""
    output = statement.get("output") or {}
    if output.get("status") != "error":
        return ""
    value = " ".join(str(output.get("evalue", "")).split())
    return f"{output.get('ename', 'Error')}: {value[:1000]}"


def statement_failure(statement: dict[str, Any]) -> str:
    """Why a statement did not succeed, in one line: its error, or else Livy's state and output
    (a statement can end ``error`` or ``cancelled`` with no error text of its own)."""
    said = statement_error(statement)
    if said:
        return said
    output = statement.get("output")
    shown = " ".join(json.dumps(output, default=str).split())[:500] if output else "no output"
    return f"Livy statement {statement.get('id', '?')} ended in state {statement.get('state', '?')!r} with {shown}"


def exit_code(statement: dict[str, Any]) -> int | None:
    """The job's exit code as a batch would have had it (``SPOTLAKE_EXIT: n``), if printed."""
    for line in reversed(statement_text(statement).splitlines()):
        if line.startswith(EXIT_MARK):
            try:
                return int(line[len(EXIT_MARK) :])
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- slots
def lease_is_stale(registry: Registry, slot: SessionSlot, replacing: str = "", grace_s: float = LEASE_GRACE_S) -> bool:
    """Whether the slot's lease no longer belongs to a running job attempt: free, held by the
    attempt ``replacing`` (whose statement is known to be gone), or held by an attempt its job has
    moved on from (finished, failed, re-claimed). A lease younger than ``grace_s`` whose job does
    not name it yet belongs to an attempt that is claiming its job right now: it is live."""
    if not slot.lease_run:
        return True
    if replacing and slot.lease_run == replacing:
        return True
    holder = registry.get_job(slot.lease_job)
    if holder is not None and holder.state == JobState.SUBMITTED and holder.run_id == slot.lease_run:
        return False
    return age_s(slot.leased_at) > grace_s


def acquire_slot(
    registry: Registry,
    cluster: Cluster,
    job_key: str,
    run_id: str,
    settings: SessionSettings,
    code_version: str,
    replacing: str = "",
) -> SessionSlot:
    """Lease a session slot of ``cluster`` to the attempt ``run_id``; warm slots (a session with
    this code) first. ``replacing``: the run id of the job's earlier attempt whose statement is
    gone (its lease is free). NoFreeSession when every slot is leased to a live attempt."""
    slots = {slot.slot: slot for slot in registry.session_slots(cluster.cluster_id)}

    def warmth(name: str) -> int:
        slot = slots.get(name)
        if slot is None or slot.session_id < 0:
            return 2
        return 0 if slot.code_version == code_version else 1

    for name in sorted((str(n) for n in range(settings.per_cluster)), key=warmth):
        slot = slots.get(name)
        try:
            if slot is None:
                fresh = SessionSlot(cluster_id=cluster.cluster_id, slot=name, pool=cluster.pool, endpoint=cluster.endpoint)
                return registry.lease_slot(fresh, None, job_key, run_id)
            if lease_is_stale(registry, slot, replacing):
                return registry.lease_slot(slot, slot.version, job_key, run_id)
        except StaleState:
            continue
    raise NoFreeSession(
        f"all {settings.per_cluster} session slots of cluster {cluster.cluster_id} (pool {cluster.pool}) are "
        f"running other windows; raise sessions.per_cluster or the pool's max_batches together with its Airflow pool"
    )


def release_slot(
    registry: Registry, slot_name: str, cluster_id: str, run_id: str, *, discard: str = "", client: LivySessions | None = None
) -> None:
    """Free the slot leased by ``run_id`` (nothing if another attempt took it over); ``discard``:
    the session is gone or must not be reused, and why; it is deleted through ``client`` (whatever
    it still runs dies with it: cancelling a statement stops its Spark jobs, not its Python code)."""
    slot = registry.get_slot(cluster_id, slot_name)
    if slot is None or slot.lease_run != run_id:
        return
    changes: dict[str, Any] = {"lease_job": "", "lease_run": "", "statements": slot.statements + 1}
    if discard:
        if client is not None and slot.session_id >= 0:
            try:
                client.delete(slot.session_id)
            except Exception as exc:  # noqa: BLE001 - a cluster that does not answer takes its sessions along
                log.info("session %s on %s not deleted: %s", slot.session_id, cluster_id, exc)
        changes.update(session_id=-1, code_version="", statements=0, reason=discard[:500])
    try:
        registry.update_slot(slot, **changes)
    except StaleState:
        log.info("session slot %s/%s changed before it was released", cluster_id, slot_name)


def ensure_session(
    registry: Registry,
    slot: SessionSlot,
    cluster: Cluster,
    client: LivySessions,
    request: StatementRequest,
    settings: SessionSettings,
    notes: list[str] | None = None,
) -> SessionSlot:
    """The leased slot with a live session that has this code version loaded: the slot's own
    session if it still qualifies, else a new one (the old one deleted). What it did is added to
    ``notes`` (a session replaced and why, started, code loaded, and how long each took)."""
    notes = notes if notes is not None else []
    if slot.session_id >= 0:
        state = client.state(slot.session_id)
        why = ""
        if state is None or state in SESSION_GONE:
            why = f"session {slot.session_id} is {state or 'unknown to Livy'}"
        elif slot.endpoint and slot.endpoint != cluster.endpoint:
            why = "the cluster's endpoint changed"
        elif slot.code_version and slot.code_version != request.code_version:
            why = f"job code changed ({slot.code_version[:12]} -> {request.code_version[:12]})"
        elif slot.statements >= settings.recycle_after:
            why = f"ran {slot.statements} statements (sessions.recycle_after {settings.recycle_after})"
        if why:
            log.debug("replacing session %s of %s/%s: %s", slot.session_id, slot.cluster_id, slot.slot, why)
            notes.append(f"replaced session {slot.session_id}: {why}")
            if state is not None and state not in SESSION_GONE:
                try:
                    client.delete(slot.session_id)
                except Exception as exc:  # noqa: BLE001 - a session we cannot delete times out in Livy
                    log.warning("session %s not deleted: %s", slot.session_id, exc)
            slot = registry.update_slot(slot, session_id=-1, code_version="", statements=0, reason=why)
    if slot.session_id < 0:
        body = {
            "kind": "pyspark",
            "name": f"{request.name}-{slot.cluster_id}-{slot.slot}-{uuid.uuid4().hex[:6]}"[:100],
            "jars": list(request.jars),
            "conf": {**dict(settings.conf), **request.conf},
            **settings.livy_body(),
        }
        started = time.monotonic()
        session_id = client.create(body)
        slot = registry.update_slot(
            slot, session_id=session_id, code_version="", statements=0, started_at=now_iso(), endpoint=cluster.endpoint
        )
        client.wait_live(session_id, settings.start_timeout.total_seconds())
        log.debug(
            "started session %s on %s (slot %s) in %.1f s", session_id, slot.cluster_id, slot.slot, time.monotonic() - started
        )
        notes.append(f"session {session_id} started in {time.monotonic() - started:.1f} s")
    else:
        client.wait_live(slot.session_id, settings.start_timeout.total_seconds())
    if slot.code_version != request.code_version:
        started = time.monotonic()
        loaded = client.post_statement(slot.session_id, bootstrap_code(request))
        done = client.wait_statement(slot.session_id, loaded, settings.start_timeout.total_seconds())
        if done is None or statement_status(done) != StatementOutcome.SUCCESS:
            error = statement_failure(done) if done else f"still running after {settings.start_timeout}"
            raise SubmitFailed(
                f"session {slot.session_id} on {slot.cluster_id} could not load job code {request.code_version[:12]}: {error}"
            )
        slot = registry.update_slot(slot, code_version=request.code_version)
        log.debug(
            "session %s loaded job code %s in %.1f s", slot.session_id, request.code_version[:12], time.monotonic() - started
        )
        notes.append(f"job code {request.code_version[:12]} loaded in {time.monotonic() - started:.1f} s")
    return slot


def session_memory(statement: dict[str, Any]) -> dict[str, Any]:
    """The session's memory as its statement reported it (``SPOTLAKE_SESSION_MEMORY: {...}``), or {}."""
    for line in reversed(statement_text(statement).splitlines()):
        if line.startswith(MEMORY_MARK):
            try:
                found = json.loads(line[len(MEMORY_MARK) :])
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def grown_past(memory: dict[str, Any], settings: SessionSettings) -> str:
    """Why a session that reported ``memory`` must be replaced before its next window, or ""."""
    live, heap_max, rss = memory.get("heap_live_mb"), memory.get("heap_max_mb"), memory.get("python_rss_mb")
    if (
        isinstance(live, int | float)
        and isinstance(heap_max, int | float)
        and heap_max > 0
        and live / heap_max >= settings.recycle_heap
    ):
        return f"driver heap live after GC {live:.0f} of {heap_max:.0f} MiB (sessions.recycle_heap {settings.recycle_heap:.0%})"
    if isinstance(rss, int | float) and rss >= settings.recycle_python_mb:
        return f"session Python process at {rss:.0f} MiB (sessions.recycle_python_mb {settings.recycle_python_mb})"
    return ""


# -------------------------------------------------------------------------- submit
def submit_or_reconnect(
    registry: Registry,
    request: StatementRequest,
    client_for: Callable[[str], LivySessions],
    build_argv: Callable[[str], list[str]],
    settings: SessionSettings,
    attempts: int = 8,
) -> Submission:
    """Make sure exactly one live statement runs for ``request.job_key`` and return its job.

    A job whose statement Livy still runs (or has finished without anyone handling it) is
    reconnected to; otherwise a new attempt leases a slot, claims the job and posts its statement.
    """
    abandoned_after = settings.start_timeout.total_seconds() + 120.0
    for _ in range(attempts):
        job = registry.get_job(request.job_key)
        if job is not None and job.state == JobState.SUBMITTED:
            if job.in_session and job.statement_id >= 0:
                if _statement_alive(client_for(job.endpoint), job):
                    log.debug(
                        "reconnecting to statement %s of session %s (%s) on %s",
                        job.statement_id,
                        job.session_id,
                        job.job_key,
                        job.cluster_id,
                    )
                    return Submission(job, reconnected=True)
            elif job.statement_id < 0 and job.batch_id < 0 and age_s(job.submitted_at) < abandoned_after:
                # Another run is starting this job's statement right now: wait for it.
                registry.wait_for_submission(request.job_key, timeout=abandoned_after)
                continue
        cluster = registry.ready_cluster(request.pool)
        if cluster is None:
            raise NoReadyCluster(
                f"pool '{request.pool}' has no READY cluster to run {request.job_key}; the fleet "
                "DAG launches one (check `spotlake status` and the fleet DAG's last run)"
            )
        run_id = uuid.uuid4().hex
        replacing = job.run_id if job is not None and job.in_session else ""
        slot = acquire_slot(registry, cluster, request.job_key, run_id, settings, request.code_version, replacing)
        try:
            claimed = registry.claim_job(request.job_key, request.pool, cluster, run_id, job, slot=slot.slot)
        except StaleState:
            release_slot(registry, slot.slot, cluster.cluster_id, run_id)
            continue
        notes: list[str] = []
        started = _start(registry, request, cluster, slot, claimed, client_for, build_argv, settings, notes)
        return Submission(started, False, notes=tuple(notes))
    raise StaleState(f"job {request.job_key} kept changing under {attempts} submit attempts")


def _statement_alive(client: LivySessions, job: Job) -> bool:
    try:
        found = client.statement(job.session_id, job.statement_id)
    except Exception:  # noqa: BLE001 - an endpoint that does not answer cannot be reconnected to
        return False
    if found is None:
        return False
    if found.get("state") in STATEMENT_PENDING:
        return True
    # Finished while nobody watched (the task was killed or retried): its outcome is still there.
    return found.get("state") == StatementState.AVAILABLE


def _start(
    registry: Registry,
    request: StatementRequest,
    cluster: Cluster,
    slot: SessionSlot,
    job: Job,
    client_for: Callable[[str], LivySessions],
    build_argv: Callable[[str], list[str]],
    settings: SessionSettings,
    notes: list[str],
) -> Job:
    client = client_for(cluster.endpoint)
    started = time.monotonic()
    try:
        slot = ensure_session(registry, slot, cluster, client, request, settings, notes)
        statement_id = client.post_statement(slot.session_id, statement_code(request.entry, build_argv(job.run_id)))
    except Exception as exc:
        registry.update_job(job, state=JobState.FAILED, reason=f"session on {cluster.cluster_id} failed: {exc}"[:1000])
        release_slot(registry, slot.slot, cluster.cluster_id, job.run_id, discard=str(exc), client=client)
        if isinstance(exc, SubmitFailed | SessionLost):
            raise SubmitFailed(f"{request.job_key}: {exc}") from exc
        raise SubmitFailed(
            f"Livy at {cluster.endpoint} (cluster {cluster.cluster_id}, pool {cluster.pool}) could not run the "
            f"statement of {request.job_key}: {exc}"
        ) from exc
    log.debug(
        "posted %s as statement %s of session %s on %s in %.2f s",
        request.job_key,
        statement_id,
        slot.session_id,
        cluster.cluster_id,
        time.monotonic() - started,
    )
    # submitted_at becomes the statement's own start: its statement_timeout counts from here, not
    # from the claim, so that a session's slow start never eats the statement's time.
    return registry.update_job(job, session_id=slot.session_id, statement_id=statement_id, submitted_at=now_iso())
