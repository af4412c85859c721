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

They, and the stream supervisor's ``<prefix>-streams`` (:mod:`spotlake.stream_status`), are
created once by ``python -m spotlake.aws_setup`` (:mod:`spotlake.aws_setup`), not at run time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


def _to_item(obj: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        item[f.name] = _av(value)
    return item


def _av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, dict):
        return {"M": {k: _av(v) for k, v in value.items()}}
    return {"S": str(value)}


def _from_av(av: dict[str, Any]) -> Any:
    if "S" in av:
        return av["S"]
    if "N" in av:
        text = av["N"]
        return float(text) if any(c in text for c in ".eE") else int(text)
    if "BOOL" in av:
        return av["BOOL"]
    if "M" in av:
        return {k: _from_av(v) for k, v in av["M"].items()}
    if "NULL" in av:
        return None
    raise ValueError(f"unsupported DynamoDB attribute {av}")


def _from_item(cls: type, item: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: _from_av(v) for k, v in item.items() if k in names})


def _conditional(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


class Registry:
    """Cluster and job state over a low-level boto3 DynamoDB client.

    (Not a resource's ``meta.client``: boto3 injects type serialisation into that one.)
    """

    def __init__(self, client: Any, prefix: str | None = None) -> None:
        self.client = client
        self.prefix = prefix or os.environ.get("SPOTLAKE_REGISTRY_PREFIX", "spotlake")

    @classmethod
    def from_connection(cls, aws_conn_id: str | None = "aws_default", prefix: str | None = None) -> Registry:
        """The registry through an Airflow AWS connection (credentials, region, endpoint)."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return cls(AwsBaseHook(aws_conn_id=aws_conn_id, client_type="dynamodb").get_conn(), prefix)

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

    def create_tables(self) -> None:
        """Create the registry's tables and the stream status table if they do not exist
        (idempotent): :func:`spotlake.aws_setup.ensure_tables`, the deployment's setup step.
        The local stack and the tests call it; Airflow's tasks never do."""
        from spotlake.aws_setup import ensure_tables

        ensure_tables(self.client, self.prefix)

    # ---------------------------------------------------------------- clusters
    def get_cluster(self, pool: str, cluster_id: str) -> Cluster | None:
        item = self.client.get_item(
            TableName=self.clusters_table,
            Key={"pool": {"S": pool}, "cluster_id": {"S": cluster_id}},
            ConsistentRead=True,
        ).get("Item")
        return _from_item(Cluster, item) if item else None

    def clusters(self, pool: str) -> list[Cluster]:
        items = self._query(self.clusters_table, "pool", pool)
        return [_from_item(Cluster, i) for i in items if i["cluster_id"]["S"] != POOL_ITEM]

    def active_cluster_id(self, pool: str) -> tuple[str, int]:
        """The pool's cluster taking new work ("" if none) and the control item's version."""
        item = self.client.get_item(
            TableName=self.clusters_table,
            Key={"pool": {"S": pool}, "cluster_id": {"S": POOL_ITEM}},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return "", 0
        return item.get("active", {}).get("S", ""), int(item["version"]["N"])

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
        try:
            self.client.put_item(
                TableName=self.clusters_table,
                Item=_to_item(cluster),
                ConditionExpression="attribute_not_exists(cluster_id)",
            )
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(f"cluster {cluster.pool}/{cluster.cluster_id} already exists") from None
            raise

    def mark_ready(self, cluster: Cluster, endpoint: str, replaces: str = "") -> Cluster:
        """LAUNCHING -> READY, and make it the pool's active cluster, atomically.

        ``replaces`` names the cluster it takes over from ("" when the pool has none);
        if the pool's active cluster is not that one, another run won: StaleState.
        """
        now = now_iso()
        active_condition = (
            "attribute_not_exists(active) OR active = :empty" if not replaces else "active = :replaces"
        )
        values: dict[str, Any] = {":empty": {"S": ""}} if not replaces else {":replaces": {"S": replaces}}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Update": {
                    "TableName": self.clusters_table,
                    "Key": {"pool": {"S": cluster.pool}, "cluster_id": {"S": cluster.cluster_id}},
                    "UpdateExpression": "SET #s = :ready, endpoint = :ep, updated_at = :now, version = version + :one",
                    "ConditionExpression": "#s = :launching AND version = :v",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {
                        ":ready": {"S": ClusterState.READY}, ":launching": {"S": ClusterState.LAUNCHING},
                        ":ep": {"S": endpoint}, ":now": {"S": now}, ":one": {"N": "1"},
                        ":v": {"N": str(cluster.version)},
                    },
                }},
                {"Update": {
                    "TableName": self.clusters_table,
                    "Key": {"pool": {"S": cluster.pool}, "cluster_id": {"S": POOL_ITEM}},
                    "UpdateExpression": "SET active = :id, updated_at = :now ADD version :one",
                    "ConditionExpression": f"attribute_not_exists(cluster_id) OR {active_condition}",
                    "ExpressionAttributeValues": {
                        ":id": {"S": cluster.cluster_id}, ":now": {"S": now}, ":one": {"N": "1"}, **values,
                    },
                }},
            ])
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(
                    f"cluster {cluster.pool}/{cluster.cluster_id} could not become READY: it is not "
                    f"LAUNCHING at version {cluster.version}, or the pool's active cluster is not "
                    f"'{replaces}'"
                ) from None
            raise
        cluster.state, cluster.endpoint, cluster.updated_at = ClusterState.READY, endpoint, now
        cluster.version += 1
        return cluster

    def transition_cluster(self, cluster: Cluster, to: ClusterState, reason: str = "") -> Cluster:
        """Move a cluster from its current state (at its version) to ``to``; the pool's
        active pointer is cleared if it named this cluster and it stops taking work."""
        now = now_iso()
        try:
            self.client.update_item(
                TableName=self.clusters_table,
                Key={"pool": {"S": cluster.pool}, "cluster_id": {"S": cluster.cluster_id}},
                UpdateExpression="SET #s = :to, reason = :reason, updated_at = :now, version = version + :one",
                ConditionExpression="#s = :from AND version = :v",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":to": {"S": to}, ":from": {"S": cluster.state}, ":reason": {"S": reason},
                    ":now": {"S": now}, ":one": {"N": "1"}, ":v": {"N": str(cluster.version)},
                },
            )
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(
                    f"cluster {cluster.pool}/{cluster.cluster_id} is no longer {cluster.state} "
                    f"at version {cluster.version}"
                ) from None
            raise
        if to != ClusterState.READY:
            self._clear_active(cluster.pool, cluster.cluster_id)
        cluster.state, cluster.reason, cluster.updated_at = to, reason, now
        cluster.version += 1
        return cluster

    def update_cluster(self, cluster: Cluster, **changes: Any) -> Cluster:
        """Apply ``changes`` (bookkeeping such as ``failures`` or ``provider_id``, never the
        state) if the cluster is still at ``cluster.version``; StaleState otherwise."""
        forbidden = sorted(set(changes) & {"pool", "cluster_id", "state", "version"})
        if forbidden:
            raise ValueError(
                f"update_cluster cannot change {', '.join(forbidden)}; use transition_cluster or "
                "mark_ready for state changes"
            )
        return self._versioned_update(
            self.clusters_table, {"pool": {"S": cluster.pool}, "cluster_id": {"S": cluster.cluster_id}}, cluster,
            changes, f"cluster {cluster.pool}/{cluster.cluster_id}")

    def take_over(self, cluster: Cluster, endpoint: str, old: Cluster, drain_started_at: str) -> Cluster:
        """In one transaction: ``cluster`` LAUNCHING -> READY, ``old`` READY -> DRAINING, and
        the pool's active pointer moves from ``old`` to ``cluster``. So there is never a moment
        with two READY clusters nor one with none. StaleState if any of the three changed."""
        now = now_iso()
        key = {"pool": {"S": cluster.pool}}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Update": {
                    "TableName": self.clusters_table,
                    "Key": {**key, "cluster_id": {"S": cluster.cluster_id}},
                    "UpdateExpression": "SET #s = :ready, endpoint = :ep, updated_at = :now, "
                                        "version = version + :one",
                    "ConditionExpression": "#s = :launching AND version = :v",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {
                        ":ready": {"S": ClusterState.READY}, ":launching": {"S": ClusterState.LAUNCHING},
                        ":ep": {"S": endpoint}, ":now": {"S": now}, ":one": {"N": "1"},
                        ":v": {"N": str(cluster.version)},
                    },
                }},
                {"Update": {
                    "TableName": self.clusters_table,
                    "Key": {**key, "cluster_id": {"S": old.cluster_id}},
                    "UpdateExpression": "SET #s = :draining, reason = :reason, drain_started_at = :drain, "
                                        "updated_at = :now, version = version + :one",
                    "ConditionExpression": "#s = :ready AND version = :v",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {
                        ":draining": {"S": ClusterState.DRAINING}, ":ready": {"S": ClusterState.READY},
                        ":reason": {"S": f"replaced by {cluster.cluster_id}"},
                        ":drain": {"S": drain_started_at},
                        ":now": {"S": now}, ":one": {"N": "1"}, ":v": {"N": str(old.version)},
                    },
                }},
                {"Update": {
                    "TableName": self.clusters_table,
                    "Key": {**key, "cluster_id": {"S": POOL_ITEM}},
                    "UpdateExpression": "SET active = :id, updated_at = :now ADD version :one",
                    "ConditionExpression": "active = :old",
                    "ExpressionAttributeValues": {
                        ":id": {"S": cluster.cluster_id}, ":old": {"S": old.cluster_id},
                        ":now": {"S": now}, ":one": {"N": "1"},
                    },
                }},
            ])
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(
                    f"cluster {cluster.pool}/{cluster.cluster_id} could not take over from "
                    f"{old.cluster_id}: one of them changed, or {old.cluster_id} no longer takes the "
                    "pool's work"
                ) from None
            raise
        cluster.state, cluster.endpoint, cluster.updated_at = ClusterState.READY, endpoint, now
        cluster.version += 1
        old.state, old.reason, old.drain_started_at = (
            ClusterState.DRAINING, f"replaced by {cluster.cluster_id}", drain_started_at
        )
        old.updated_at = now
        old.version += 1
        return cluster

    def _clear_active(self, pool: str, cluster_id: str) -> None:
        try:
            self.client.update_item(
                TableName=self.clusters_table,
                Key={"pool": {"S": pool}, "cluster_id": {"S": POOL_ITEM}},
                UpdateExpression="SET active = :empty, updated_at = :now ADD version :one",
                ConditionExpression="active = :id",
                ExpressionAttributeValues={
                    ":empty": {"S": ""}, ":id": {"S": cluster_id}, ":now": {"S": now_iso()}, ":one": {"N": "1"},
                },
            )
        except ClientError as exc:
            if not _conditional(exc):
                raise

    # -------------------------------------------------------------------- jobs
    def get_job(self, job_key: str) -> Job | None:
        item = self.client.get_item(
            TableName=self.jobs_table, Key={"job_key": {"S": job_key}}, ConsistentRead=True
        ).get("Item")
        return _from_item(Job, item) if item else None

    def jobs(self) -> list[Job]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.jobs_table}
        while True:
            page = self.client.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [_from_item(Job, i) for i in items]

    def jobs_on_cluster(self, pool: str, cluster_id: str,
                        states: tuple[str, ...] = (JobState.SUBMITTED,)) -> list[Job]:
        """Jobs of ``pool`` on ``cluster_id`` in one of ``states`` (a filtered scan)."""
        return self.jobs_in_pool(pool, states, cluster_id)

    def jobs_in_pool(self, pool: str, states: tuple[str, ...] = (JobState.SUBMITTED,),
                     cluster_id: str | None = None) -> list[Job]:
        """Jobs of ``pool`` in one of ``states``, on ``cluster_id`` if given (a filtered scan)."""
        values: dict[str, Any] = {f":s{i}": {"S": str(s)} for i, s in enumerate(states)}
        condition = f"#p = :p AND #s IN ({', '.join(values)})"
        values[":p"] = {"S": pool}
        if cluster_id is not None:
            condition += " AND #c = :c"
            values[":c"] = {"S": cluster_id}
        kwargs: dict[str, Any] = {
            "TableName": self.jobs_table,
            "FilterExpression": condition,
            "ExpressionAttributeNames": {"#s": "state", "#p": "pool",
                                         **({"#c": "cluster_id"} if cluster_id is not None else {})},
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [_from_item(Job, i) for i in items]

    def claim_job(self, job_key: str, pool: str, cluster: Cluster, run_id: str,
                  expected: Job | None, slot: str = "") -> Job:
        """Take the job for a new submission to ``cluster``: attempt + 1, state SUBMITTED
        with no batch (or statement) id yet; ``slot``: the session slot it leased, for a
        statement. ``expected`` is the job as last read (None: must not exist)."""
        now = now_iso()
        job = Job(
            job_key=job_key, pool=pool, state=JobState.SUBMITTED,
            attempt=(expected.attempt if expected else 0) + 1,
            cluster_id=cluster.cluster_id, endpoint=cluster.endpoint, batch_id=-1, run_id=run_id,
            moves=expected.moves if expected else 0,
            submitted_at=now, updated_at=now, version=(expected.version if expected else 0) + 1, slot=slot,
        )
        self._versioned_put(self.jobs_table, job, "job_key", expected.version if expected else None, f"job {job_key}")
        return job

    def update_job(self, job: Job, **changes: Any) -> Job:
        """Apply ``changes`` to the job if it is still at ``job.version``."""
        return self._versioned_update(self.jobs_table, {"job_key": {"S": job.job_key}}, job, changes,
                                      f"job {job.job_key}")

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
        items = self._query(self.sessions_table, "cluster_id", cluster_id)
        return sorted((_from_item(SessionSlot, i) for i in items), key=lambda s: int(s.slot))

    def get_slot(self, cluster_id: str, slot: str) -> SessionSlot | None:
        item = self.client.get_item(
            TableName=self.sessions_table,
            Key={"cluster_id": {"S": cluster_id}, "slot": {"S": slot}}, ConsistentRead=True,
        ).get("Item")
        return _from_item(SessionSlot, item) if item else None

    def lease_slot(self, slot: SessionSlot, expected_version: int | None, job_key: str, run_id: str) -> SessionSlot:
        """Lease ``slot`` to the attempt ``run_id`` of ``job_key``: a new slot item
        (``expected_version`` None: it must not exist) or the slot as last read, at its version."""
        now = now_iso()
        slot.lease_job, slot.lease_run, slot.leased_at, slot.updated_at = job_key, run_id, now, now
        slot.version = (expected_version or 0) + 1
        self._versioned_put(self.sessions_table, slot, "cluster_id", expected_version,
                            f"session slot {slot.cluster_id}/{slot.slot}")
        return slot

    def _versioned_put(self, table: str, item: Any, key: str, expected_version: int | None, what: str) -> None:
        """Write ``item`` whole if the stored one is still at ``expected_version`` (None: if there is
        none, checked on the key attribute ``key``); StaleState otherwise."""
        if expected_version is None:
            condition, values = f"attribute_not_exists({key})", {}
        else:
            condition, values = "version = :v", {":v": {"N": str(expected_version)}}
        try:
            self.client.put_item(
                TableName=table, Item=_to_item(item), ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(f"{what} changed since it was read") from None
            raise

    def update_slot(self, slot: SessionSlot, **changes: Any) -> SessionSlot:
        """Apply ``changes`` to the slot if it is still at ``slot.version``."""
        return self._versioned_update(
            self.sessions_table, {"cluster_id": {"S": slot.cluster_id}, "slot": {"S": slot.slot}}, slot, changes,
            f"session slot {slot.cluster_id}/{slot.slot}")

    def _versioned_update(self, table: str, key: dict[str, Any], item: Any, changes: dict[str, Any],
                          what: str) -> Any:
        """SET ``changes`` (and ``updated_at``) on the item at ``key`` if its version is still
        ``item.version``, then apply them to ``item`` (version + 1); StaleState otherwise."""
        changes["updated_at"] = now_iso()
        sets = ", ".join(f"#{k} = :{k}" for k in changes)
        try:
            self.client.update_item(
                TableName=table,
                Key=key,
                UpdateExpression=f"SET {sets}, version = version + :one",
                ConditionExpression="version = :v",
                ExpressionAttributeNames={f"#{k}": k for k in changes},
                ExpressionAttributeValues={
                    **{f":{k}": _av(v) for k, v in changes.items()}, ":one": {"N": "1"},
                    ":v": {"N": str(item.version)},
                },
            )
        except ClientError as exc:
            if _conditional(exc):
                raise StaleState(f"{what} changed since version {item.version}") from None
            raise
        for name, value in changes.items():
            setattr(item, name, value)
        item.version += 1
        return item

    def _query(self, table: str, key: str, value: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": {"S": value}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
