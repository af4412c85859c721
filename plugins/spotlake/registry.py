"""The registry: cluster, job and extraction-log state in DynamoDB.

It is the single source of truth for clusters and jobs. Every state change is a
conditional write on the expected state and version; losing a race raises
:class:`StaleState`, a normal outcome the caller handles (re-read and decide),
never a crash.

Tables (names prefixed by ``SPOTLAKE_REGISTRY_PREFIX``, default ``spotlake``):

- ``<prefix>-clusters``: key (pool, cluster_id). A pool's control item
  (cluster_id ``#pool``) names the one READY cluster taking new work, so that at
  most one does per pool, even when two fleet runs race.
- ``<prefix>-jobs``: key job_key (``pipeline#window``, or a stream name).
- ``<prefix>-sessions``: key (cluster_id, slot): the long-lived Livy sessions of each cluster
  (:mod:`spotlake.sessions`), one per slot, each leased to one job at a time.
- ``<prefix>-extraction-log``: key (pipeline, window): each pipeline's lake state
  (watermark, initial snapshot, commit lock) and its windows' plans and results; its items
  are :mod:`spark_jobs.common.lake_state`'s, which the Spark job and the operators share.

They, the stream supervisor's ``<prefix>-streams`` (:mod:`spotlake.stream_status`) and the
alerts' ``<prefix>-alerts`` (:mod:`spotlake.alert_store`), are created once by
``python -m spotlake.aws_setup`` (:mod:`spotlake.aws_setup`), not at run time.
Items are encoded by :mod:`spotlake.dynamo_items` (boto3's type serializer): one attribute per
field of :class:`Cluster`, :class:`Job` or :class:`SessionSlot`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from spotlake.dynamo_items import attribute_values, from_item, item_values, python_value, to_item
from spotlake.errors import SpotlakeError

POOL_ITEM = "#pool"
# Each table's key, by the table's name after the prefix: (attribute, key type), every key
# attribute a string. python -m spotlake.aws_setup creates the tables from these.
TABLE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "clusters": (("pool", "HASH"), ("cluster_id", "RANGE")),
    "jobs": (("job_key", "HASH"),),
    "extraction-log": (("pipeline", "HASH"), ("window", "RANGE")),
    "sessions": (("cluster_id", "HASH"), ("slot", "RANGE")),
}


# The jobs table's global secondary indexes by name: (attribute, key type), every key attribute a
# string. The fleet finds a cluster's and a pool's jobs with a Query on them, never a Scan; the
# status finds the jobs moved lately on ``by-move-day`` (sparse: only moved jobs carry
# ``moved_day``). Index reads are eventually consistent: every write that follows one is
# conditional on the job's version, and a job an index has not shown yet is found next pass.
JOB_INDEXES: dict[str, tuple[tuple[str, str], ...]] = {
    "by-cluster": (("cluster_id", "HASH"), ("state", "RANGE")),
    "by-pool": (("pool", "HASH"), ("state", "RANGE")),
    "by-move-day": (("moved_day", "HASH"),),
}
TABLE_INDEXES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {"jobs": JOB_INDEXES}
# DynamoDB's time to live: a job that finished (SUCCEEDED or FAILED) at its first attempt carries
# ``expires_at`` (epoch seconds), its end plus the retention (SPOTLAKE_JOB_RETENTION_DAYS, default
# 14), and DynamoDB deletes it after that; a job claimed again (a cleared task) loses it. A job
# that took more attempts is kept: its attempt number fences older attempts' writes (the lake's
# ``_attempt``, the sink's owner), and a claim after its deletion would start again at attempt 1.
TABLE_TTL: dict[str, str] = {"jobs": "expires_at"}
JOB_RETENTION_ENV = "SPOTLAKE_JOB_RETENTION_DAYS"
DEFAULT_JOB_RETENTION_DAYS = 14.0

MOVES_KEPT = 20  # the last moves a job keeps in its ``moved`` list


class StaleState(SpotlakeError):
    """A conditional write lost a race: the item is no longer in the expected state."""


class ClusterState(StrEnum):
    LAUNCHING = "LAUNCHING"
    READY = "READY"
    DRAINING = "DRAINING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    DEAD = "DEAD"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    SUBMITTED = "SUBMITTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REQUEUED = "REQUEUED"


LIVE_JOB_STATES = (JobState.QUEUED, JobState.SUBMITTED, JobState.REQUEUED)
FINISHED_JOB_STATES = (JobState.SUCCEEDED, JobState.FAILED)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def retention_from_env() -> timedelta:
    """How long a finished job is kept: ``SPOTLAKE_JOB_RETENTION_DAYS`` (default 14)."""
    raw = os.environ.get(JOB_RETENTION_ENV, "").strip()
    try:
        days = float(raw) if raw else DEFAULT_JOB_RETENTION_DAYS
    except ValueError:
        days = -1.0
    if not days > 0:
        raise SpotlakeError(
            f"{JOB_RETENTION_ENV}={raw!r} is not a number of days above 0; set it to how long finished "
            f"jobs stay in the jobs table (e.g. 14), or unset it for {DEFAULT_JOB_RETENTION_DAYS:g} days"
        )
    return timedelta(days=days)


@dataclass
class Cluster:
    pool: str
    cluster_id: str
    provider: str
    state: str
    endpoint: str = ""
    launched_at: str = ""
    updated_at: str = ""
    reason: str = ""
    version: int = 0
    # The provider's own id (EMR job flow id, local Livy PID); "" until launched.
    provider_id: str = ""
    # Launch number within the pool: the fleet's claim on a vacancy (see spotlake.fleet).
    generation: int = 0
    # The cluster this one was launched to take over from ("" for an empty pool).
    replaces: str = ""
    # Consecutive failed health checks, and the last failure's reason.
    failures: int = 0
    last_failure: str = ""
    drain_started_at: str = ""
    # Every state the cluster entered and when: "<STATE> <ISO time>;...", oldest first.
    transitions: str = ""
    # DEAD or TERMINATED: when the provider confirmed it no longer runs ("" not yet: the fleet asks
    # again, and requests its termination again, each pass), the termination requests made after
    # the first, and the last one's error.
    terminated_at: str = ""
    terminate_attempts: int = 0
    terminate_error: str = ""
    # The instances it ran on, as the fleet last read them from the provider (the cost ledger's
    # instance-hours; spotlake.providers.base.encode_instances), and when.
    instances: str = ""
    metered_at: str = ""

    def state_changes(self) -> list[tuple[str, str]]:
        """``transitions`` as (state, ISO time) pairs, oldest first."""
        pairs = (entry.split(" ", 1) for entry in self.transitions.split(";") if " " in entry)
        return [(state, at) for state, at in pairs]


@dataclass
class Job:
    job_key: str
    pool: str
    state: str
    attempt: int = 0
    cluster_id: str = ""
    endpoint: str = ""
    batch_id: int = -1
    run_id: str = ""
    moves: int = 0
    submitted_at: str = ""
    updated_at: str = ""
    reason: str = ""
    version: int = 0
    # Warm execution (spotlake.sessions): the Livy session and statement running the attempt, and
    # the session slot it leased; -1 / "" for a batch.
    session_id: int = -1
    statement_id: int = -1
    slot: str = ""
    # The moves of the job from a lost cluster to another as a JSON list, oldest first: from, to,
    # why, when it was re-queued and when the new cluster took it (see Registry.claim_job).
    moved: str = ""
    last_moved_at: str = ""  # when the last of them re-queued it ("" never)
    # The day (YYYY-MM-DD) of the last move, the key of the index by-move-day; None never moved
    # (an index key cannot be an empty string).
    moved_day: str | None = None
    # When DynamoDB deletes the finished job (epoch seconds, the table's time to live); None while live.
    expires_at: int | None = None

    def moves_made(self) -> list[dict[str, str]]:
        """``moved`` as a list of dicts (keys from, to, why, requeued_at, taken_at)."""
        try:
            found = json.loads(self.moved) if self.moved else []
        except ValueError:
            return []
        return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []

    @property
    def in_session(self) -> bool:
        return bool(self.slot)


@dataclass
class SessionSlot:
    """One long-lived Livy session of a cluster (key: cluster, slot number) and its lease.

    ``session_id`` is -1 while the slot has no session; ``code_version`` is the content hash of the
    job code the session has loaded ("" until loaded). ``lease_run`` names the job attempt (its run
    id) that holds the session; "" when free.
    """

    cluster_id: str
    slot: str
    pool: str
    endpoint: str = ""
    session_id: int = -1
    code_version: str = ""
    statements: int = 0
    started_at: str = ""
    lease_job: str = ""
    lease_run: str = ""
    leased_at: str = ""
    updated_at: str = ""
    reason: str = ""
    version: int = 0


def _conditional(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


@contextmanager
def _stale_on_conflict(stale: str) -> Iterator[None]:
    """Run a conditional write; :class:`StaleState` (``stale``) when its condition fails."""
    try:
        yield
    except ClientError as exc:
        if _conditional(exc):
            raise StaleState(stale) from None
        raise


def _key(**attributes: str) -> dict[str, Any]:
    """An item's key (every key attribute is a string)."""
    return attribute_values(attributes)


def _versioned_update(
    table: str, key: dict[str, Any], version: int, changes: dict[str, Any], state: str | None = None
) -> dict[str, Any]:
    """The update of the item at ``key``: SET ``changes`` and version + 1, on condition that the item
    is still at ``version`` (and, given ``state``, in that state). The arguments of ``update_item``,
    or a transaction's ``Update``: every versioned state change of the registry is one of these."""
    names = {f"#{name}": name for name in changes}
    values: dict[str, Any] = {f":{name}": value for name, value in changes.items()}
    condition = "version = :expected_version"
    values[":expected_version"] = version
    if state is not None:
        names["#state"] = "state"
        condition = f"#state = :expected_state AND {condition}"
        values[":expected_state"] = state
    values[":one"] = 1
    return {
        "TableName": table,
        "Key": key,
        "UpdateExpression": f"SET {', '.join(f'#{name} = :{name}' for name in changes)}, version = version + :one",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": attribute_values(values),
    }


class _Versioned(Protocol):
    """A registry item (Cluster, Job, SessionSlot): written only at the version it was read."""

    version: int


V = TypeVar("V", bound=_Versioned)


def _applied(item: V, changes: dict[str, Any]) -> V:
    """``item`` after its versioned update of ``changes`` succeeded."""
    for name, value in changes.items():
        setattr(item, name, value)
    item.version += 1
    return item


class Registry:
    """Cluster and job state over a low-level boto3 DynamoDB client.

    (Not a resource's ``meta.client``: boto3 injects type serialisation into that one.)
    """

    def __init__(self, client: Any, prefix: str | None = None, job_retention: timedelta | None = None) -> None:
        self.client = client
        self.prefix = prefix or os.environ.get("SPOTLAKE_REGISTRY_PREFIX", "spotlake")
        self.job_retention = job_retention if job_retention is not None else retention_from_env()

    # ------------------------------------------------------------------ tables
    @property
    def clusters_table(self) -> str:
        return f"{self.prefix}-clusters"

    @property
    def jobs_table(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def log_table(self) -> str:
        return f"{self.prefix}-extraction-log"

    @property
    def sessions_table(self) -> str:
        return f"{self.prefix}-sessions"

    def table_keys(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Each of the registry's tables and its key (:data:`TABLE_KEYS`)."""
        return {
            self.clusters_table: TABLE_KEYS["clusters"],
            self.jobs_table: TABLE_KEYS["jobs"],
            self.log_table: TABLE_KEYS["extraction-log"],
            self.sessions_table: TABLE_KEYS["sessions"],
        }

    def table_indexes(self) -> dict[str, dict[str, tuple[tuple[str, str], ...]]]:
        """The global secondary indexes of each of the registry's tables that has some (:data:`TABLE_INDEXES`)."""
        return {f"{self.prefix}-{name}": indexes for name, indexes in TABLE_INDEXES.items()}

    def table_ttl(self) -> dict[str, str]:
        """The time-to-live attribute of each of the registry's tables that has one (:data:`TABLE_TTL`)."""
        return {f"{self.prefix}-{name}": attribute for name, attribute in TABLE_TTL.items()}

    def create_tables(self) -> None:
        """Create the registry's tables, the stream status and the alerts table if they do not exist
        (idempotent): :func:`spotlake.aws_setup.ensure_tables`, the deployment's setup step.
        The local stack and the tests call it; Airflow's tasks never do."""
        from spotlake.aws_setup import ensure_tables

        ensure_tables(self.client, self.prefix)

    # ---------------------------------------------------------------- clusters
    def get_cluster(self, pool: str, cluster_id: str) -> Cluster | None:
        item = self.client.get_item(
            TableName=self.clusters_table,
            Key=_key(pool=pool, cluster_id=cluster_id),
            ConsistentRead=True,
        ).get("Item")
        return from_item(Cluster, item) if item else None

    def clusters(self, pool: str) -> list[Cluster]:
        items = self._query(self.clusters_table, {"pool": pool})
        return [from_item(Cluster, i) for i in items if i["cluster_id"]["S"] != POOL_ITEM]

    def active_cluster_id(self, pool: str) -> tuple[str, int]:
        """The pool's cluster taking new work ("" if none) and the control item's version."""
        item = self.client.get_item(
            TableName=self.clusters_table,
            Key=_key(pool=pool, cluster_id=POOL_ITEM),
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return "", 0
        control = item_values(item)
        return str(control.get("active", "")), int(control["version"])

    def ready_cluster(self, pool: str) -> Cluster | None:
        """The one READY cluster of ``pool`` that takes new work, if any."""
        active, _ = self.active_cluster_id(pool)
        if not active:
            return None
        cluster = self.get_cluster(pool, active)
        if cluster is None or cluster.state != ClusterState.READY:
            return None
        return cluster

    def put_launching(self, cluster: Cluster) -> None:
        """Record a new cluster as LAUNCHING; fails if the id exists."""
        cluster.state = ClusterState.LAUNCHING
        cluster.version = 1
        cluster.launched_at = cluster.launched_at or now_iso()
        cluster.updated_at = now_iso()
        cluster.transitions = f"{ClusterState.LAUNCHING} {cluster.launched_at}"
        self._versioned_put(
            self.clusters_table, cluster, "cluster_id", None, f"cluster {cluster.pool}/{cluster.cluster_id} already exists"
        )

    def put_swept(self, cluster: Cluster, reason: str) -> Cluster:
        """Record a cluster the provider ran behind the registry's back, being terminated by the
        sweep, as TERMINATED (not yet confirmed: the fleet follows it until the provider confirms);
        fails if the id exists."""
        now = now_iso()
        cluster.state = ClusterState.TERMINATED
        cluster.version = 1
        cluster.reason = reason
        cluster.launched_at = cluster.launched_at or now
        cluster.updated_at = now
        cluster.transitions = f"{ClusterState.TERMINATED} {now}"
        self._versioned_put(
            self.clusters_table, cluster, "cluster_id", None, f"cluster {cluster.pool}/{cluster.cluster_id} already exists"
        )
        return cluster

    def mark_ready(self, cluster: Cluster, endpoint: str, replaces: str = "") -> Cluster:
        """LAUNCHING -> READY, and make it the pool's active cluster, atomically.

        ``replaces`` names the cluster it takes over from ("" when the pool has none);
        if the pool's active cluster is not that one, another run won: StaleState.
        """
        now = now_iso()
        ready = {"state": ClusterState.READY, "endpoint": endpoint, "updated_at": now}
        if replaces:
            active_condition, values = "active = :replaces", {":replaces": replaces}
        else:
            active_condition, values = "attribute_not_exists(active) OR active = :empty", {":empty": ""}
        self._transact_updates(
            [
                self._cluster_update(cluster, ready, ClusterState.LAUNCHING),
                self._pointer_update(
                    cluster.pool, cluster.cluster_id, now, f"attribute_not_exists(cluster_id) OR {active_condition}", values
                ),
            ],
            f"cluster {cluster.pool}/{cluster.cluster_id} could not become READY: it is not LAUNCHING at "
            f"version {cluster.version}, or the pool's active cluster is not '{replaces}'",
        )
        return _applied(cluster, ready)

    def transition_cluster(self, cluster: Cluster, to: ClusterState, reason: str = "") -> Cluster:
        """Move a cluster from its current state (at its version) to ``to``; the pool's
        active pointer is cleared if it named this cluster and it stops taking work."""
        changes = {"state": to, "reason": reason, "updated_at": now_iso()}
        with _stale_on_conflict(
            f"cluster {cluster.pool}/{cluster.cluster_id} is no longer {cluster.state} at version {cluster.version}"
        ):
            self.client.update_item(**self._cluster_update(cluster, changes, cluster.state))
        if to != ClusterState.READY:
            self._clear_active(cluster.pool, cluster.cluster_id)
        return _applied(cluster, changes)

    def update_cluster(self, cluster: Cluster, **changes: Any) -> Cluster:
        """Apply ``changes`` (bookkeeping such as ``failures`` or ``provider_id``, never the
        state) if the cluster is still at ``cluster.version``; StaleState otherwise."""
        forbidden = sorted(set(changes) & {"pool", "cluster_id", "state", "version"})
        if forbidden:
            raise ValueError(
                f"update_cluster cannot change {', '.join(forbidden)}; use transition_cluster or mark_ready for state changes"
            )
        return self._update(
            self.clusters_table,
            _key(pool=cluster.pool, cluster_id=cluster.cluster_id),
            cluster,
            changes,
            f"cluster {cluster.pool}/{cluster.cluster_id}",
        )

    def take_over(self, cluster: Cluster, endpoint: str, old: Cluster, drain_started_at: str) -> Cluster:
        """In one transaction: ``cluster`` LAUNCHING -> READY, ``old`` READY -> DRAINING, and
        the pool's active pointer moves from ``old`` to ``cluster``. So there is never a moment
        with two READY clusters nor one with none. StaleState if any of the three changed."""
        now = now_iso()
        ready = {"state": ClusterState.READY, "endpoint": endpoint, "updated_at": now}
        draining = {
            "state": ClusterState.DRAINING,
            "reason": f"replaced by {cluster.cluster_id}",
            "drain_started_at": drain_started_at,
            "updated_at": now,
        }
        self._transact_updates(
            [
                self._cluster_update(cluster, ready, ClusterState.LAUNCHING),
                self._cluster_update(old, draining, ClusterState.READY),
                self._pointer_update(cluster.pool, cluster.cluster_id, now, "active = :old", {":old": old.cluster_id}),
            ],
            f"cluster {cluster.pool}/{cluster.cluster_id} could not take over from {old.cluster_id}: one of them "
            f"changed, or {old.cluster_id} no longer takes the pool's work",
        )
        _applied(old, draining)
        return _applied(cluster, ready)

    def _cluster_update(self, cluster: Cluster, changes: dict[str, Any], state: str) -> dict[str, Any]:
        """The versioned update of ``changes`` to ``cluster``, if it is still in ``state``. A change
        of state is added to the cluster's ``transitions`` (in ``changes`` too, so the caller's
        :func:`_applied` records it)."""
        if "state" in changes and changes["state"] != state:
            entry = f"{changes['state']} {changes.get('updated_at') or now_iso()}"
            changes["transitions"] = f"{cluster.transitions};{entry}" if cluster.transitions else entry
        return _versioned_update(
            self.clusters_table, _key(pool=cluster.pool, cluster_id=cluster.cluster_id), cluster.version, changes, state
        )

    def _pointer_update(self, pool: str, active: str, now: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        """The update of the pool's control item that makes ``active`` ("": none) the cluster taking
        its new work, under ``condition`` (on the values ``values``)."""
        return {
            "TableName": self.clusters_table,
            "Key": _key(pool=pool, cluster_id=POOL_ITEM),
            "UpdateExpression": "SET active = :active, updated_at = :now ADD version :one",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": attribute_values({":active": active, ":now": now, ":one": 1, **values}),
        }

    def _clear_active(self, pool: str, cluster_id: str) -> None:
        try:
            self.client.update_item(**self._pointer_update(pool, "", now_iso(), "active = :id", {":id": cluster_id}))
        except ClientError as exc:
            if not _conditional(exc):
                raise

    # -------------------------------------------------------------------- jobs
    def get_job(self, job_key: str) -> Job | None:
        item = self.client.get_item(TableName=self.jobs_table, Key=_key(job_key=job_key), ConsistentRead=True).get("Item")
        return from_item(Job, item) if item else None

    def jobs(self) -> list[Job]:
        """Every job: a Scan, for tools and tests; the fleet and the status never call it."""
        return [from_item(Job, i) for i in self._scan(TableName=self.jobs_table)]

    def jobs_to_show(self, pools: list[str] | tuple[str, ...], moved_since: str) -> list[Job]:
        """The jobs an operator looks at: those of ``pools`` running, re-queued or queued (index
        by-pool), and those moved since ``moved_since`` (ISO; index by-move-day, one Query per day).
        Only those cross the wire, whatever the number of finished jobs."""
        found = {j.job_key: j for j in self.jobs_in_pools(pools, LIVE_JOB_STATES)}
        since = datetime.fromisoformat(moved_since)
        day = since.date()
        last = max(datetime.now(UTC).date(), day + timedelta(days=1))
        while day <= last:
            for item in self._query(
                self.jobs_table,
                {"moved_day": day.isoformat()},
                index="by-move-day",
                filter_expression="last_moved_at >= :since",
                filter_values={":since": moved_since},
            ):
                job = from_item(Job, item)
                found.setdefault(job.job_key, job)
            day += timedelta(days=1)
        return list(found.values())

    def jobs_on_cluster(self, pool: str, cluster_id: str, states: tuple[str, ...] = (JobState.SUBMITTED,)) -> list[Job]:
        """Jobs of ``pool`` on ``cluster_id`` in one of ``states``: one Query per state on the index by-cluster."""
        return [
            from_item(Job, item)
            for state in states
            for item in self._query(self.jobs_table, {"cluster_id": cluster_id, "state": state}, index="by-cluster")
            if python_value(item["pool"]) == pool
        ]

    def jobs_in_pool(self, pool: str, states: tuple[str, ...] = (JobState.SUBMITTED,)) -> list[Job]:
        """Jobs of ``pool`` in one of ``states``: one Query per state on the index by-pool."""
        return self.jobs_in_pools((pool,), states)

    def jobs_in_pools(self, pools: list[str] | tuple[str, ...], states: tuple[str, ...]) -> list[Job]:
        return [
            from_item(Job, item)
            for pool in pools
            for state in states
            for item in self._query(self.jobs_table, {"pool": pool, "state": state}, index="by-pool")
        ]

    def claim_job(self, job_key: str, pool: str, cluster: Cluster, run_id: str, expected: Job | None, slot: str = "") -> Job:
        """Take the job for a new submission to ``cluster``: attempt + 1, state SUBMITTED
        with no batch (or statement) id yet; ``slot``: the session slot it leased, for a
        statement. ``expected`` is the job as last read (None: must not exist)."""
        now = now_iso()
        moved = expected.moves_made() if expected else []
        if expected is not None and expected.state == JobState.REQUEUED:
            moved.append(
                {
                    "from": expected.cluster_id,
                    "to": cluster.cluster_id,
                    "why": expected.reason[:300],
                    "requeued_at": expected.updated_at,
                    "taken_at": now,
                }
            )
        job = Job(
            job_key=job_key,
            pool=pool,
            state=JobState.SUBMITTED,
            attempt=(expected.attempt if expected else 0) + 1,
            cluster_id=cluster.cluster_id,
            endpoint=cluster.endpoint,
            batch_id=-1,
            run_id=run_id,
            moves=expected.moves if expected else 0,
            submitted_at=now,
            updated_at=now,
            version=(expected.version if expected else 0) + 1,
            slot=slot,
            moved=json.dumps(moved[-MOVES_KEPT:]) if moved else "",
            last_moved_at=moved[-1]["requeued_at"] if moved else "",
            moved_day=moved[-1]["requeued_at"][:10] if moved and moved[-1]["requeued_at"] else None,
        )
        self._versioned_put(
            self.jobs_table, job, "job_key", expected.version if expected else None, f"job {job_key} changed since it was read"
        )
        return job

    def update_job(self, job: Job, **changes: Any) -> Job:
        """Apply ``changes`` to the job if it is still at ``job.version``; a job that finishes
        (SUCCEEDED or FAILED) at its first attempt gets its ``expires_at``: now plus the retention
        (see :data:`TABLE_TTL` for why later attempts are kept)."""
        if changes.get("state") in FINISHED_JOB_STATES and changes.get("attempt", job.attempt) <= 1:
            changes["expires_at"] = int(time.time() + self.job_retention.total_seconds())
        return self._update(self.jobs_table, _key(job_key=job.job_key), job, changes, f"job {job.job_key}")

    def wait_for_submission(self, job_key: str, timeout: float = 60.0) -> Job | None:
        """Wait for a job claimed by another run to get its batch or statement id (or to change)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get_job(job_key)
            if job is None or job.state != JobState.SUBMITTED or job.batch_id >= 0 or job.statement_id >= 0:
                return job
            time.sleep(0.5)
        return self.get_job(job_key)

    # ---------------------------------------------------------------- sessions
    def session_slots(self, cluster_id: str) -> list[SessionSlot]:
        """The session slots of ``cluster_id``, by slot number."""
        items = self._query(self.sessions_table, {"cluster_id": cluster_id})
        return sorted((from_item(SessionSlot, i) for i in items), key=lambda s: int(s.slot))

    def get_slot(self, cluster_id: str, slot: str) -> SessionSlot | None:
        item = self.client.get_item(
            TableName=self.sessions_table,
            Key=_key(cluster_id=cluster_id, slot=slot),
            ConsistentRead=True,
        ).get("Item")
        return from_item(SessionSlot, item) if item else None

    def lease_slot(self, slot: SessionSlot, expected_version: int | None, job_key: str, run_id: str) -> SessionSlot:
        """Lease ``slot`` to the attempt ``run_id`` of ``job_key``: a new slot item
        (``expected_version`` None: it must not exist) or the slot as last read, at its version."""
        now = now_iso()
        slot.lease_job, slot.lease_run, slot.leased_at, slot.updated_at = job_key, run_id, now, now
        slot.version = (expected_version or 0) + 1
        self._versioned_put(
            self.sessions_table,
            slot,
            "cluster_id",
            expected_version,
            f"session slot {slot.cluster_id}/{slot.slot} changed since it was read",
        )
        return slot

    def update_slot(self, slot: SessionSlot, **changes: Any) -> SessionSlot:
        """Apply ``changes`` to the slot if it is still at ``slot.version``."""
        return self._update(
            self.sessions_table,
            _key(cluster_id=slot.cluster_id, slot=slot.slot),
            slot,
            changes,
            f"session slot {slot.cluster_id}/{slot.slot}",
        )

    # ------------------------------------------------------------------ writes
    def _versioned_put(self, table: str, item: Any, key: str, expected_version: int | None, stale: str) -> None:
        """Write ``item`` whole if the stored one is still at ``expected_version`` (None: if there is
        none, checked on the key attribute ``key``); StaleState (``stale``) otherwise."""
        if expected_version is None:
            condition, values = f"attribute_not_exists({key})", {}
        else:
            condition, values = "version = :v", {":v": expected_version}
        with _stale_on_conflict(stale):
            self.client.put_item(
                TableName=table,
                Item=to_item(item),
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": attribute_values(values)} if values else {}),
            )

    def _update(self, table: str, key: dict[str, Any], item: V, changes: dict[str, Any], what: str) -> V:
        """SET ``changes`` (and ``updated_at``) on the item at ``key`` if its version is still
        ``item.version``, then apply them to ``item`` (version + 1); StaleState otherwise."""
        changes = {**changes, "updated_at": now_iso()}
        with _stale_on_conflict(f"{what} changed since version {item.version}"):
            self.client.update_item(**_versioned_update(table, key, item.version, changes))
        return _applied(item, changes)

    def _transact_updates(self, updates: list[dict[str, Any]], stale: str) -> None:
        """Make ``updates`` in one transaction: all or none; StaleState (``stale``) if a condition fails."""
        with _stale_on_conflict(stale):
            self.client.transact_write_items(TransactItems=[{"Update": update} for update in updates])

    # ------------------------------------------------------------------- reads
    def _query(
        self,
        table: str,
        key: dict[str, str],
        index: str | None = None,
        filter_expression: str = "",
        filter_values: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a Query of ``table`` (or its global secondary ``index``: eventually
        consistent, the table itself is read consistently) whose key attributes equal ``key``."""
        names = {f"#k{i}": name for i, name in enumerate(key)}
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": " AND ".join(f"#k{i} = :k{i}" for i in range(len(key))),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": attribute_values(
                {**{f":k{i}": value for i, value in enumerate(key.values())}, **(filter_values or {})}
            ),
        }
        if index is None:
            kwargs["ConsistentRead"] = True
        else:
            kwargs["IndexName"] = index
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _scan(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a scan (``kwargs``: the scan's arguments), page after page."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
