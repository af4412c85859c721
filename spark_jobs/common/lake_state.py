"""A pipeline's lake state in the registry: watermark, initial snapshot, window plans, commit lock.

This module is the one contract between the Airflow side (which plans windows and
reports freshness) and the Spark job (which commits to the lake). It uses boto3
only, so it runs on a cluster (Python 3.9+) and under Airflow alike.

Items of ``<prefix>-extraction-log`` (key ``pipeline``, ``window``):

- ``(pipeline, "#state")``: the pipeline's state.

  - ``watermark``: the end of the last window up to which every window is committed;
    the next window reads from it (minus the lookback). It only moves forward, and only
    by a commit whose range starts at or before it, so no gap can open.
  - ``snapshot``: the initial load's phase (PENDING, RUNNING, DONE, SKIPPED), with its
    progress (``snapshot_after``: the primary key of the last committed chunk as JSON,
    ``snapshot_chunks``, ``snapshot_rows``) so a new attempt resumes after the last chunk.
  - the commit lock (``lock_owner`` = run id, ``lock_job``, ``lock_expires``, ``fence``):
    one commit at a time per pipeline. It is taken only by an attempt that still owns
    its job in the jobs table (a transaction with a condition on the job's run id), so
    an attempt the fleet re-queued, or that a newer attempt replaced, can never commit.
  - ``failure_*``: the last failed window and why, until a commit that moves the watermark
    clears it (``advanced_at`` is when the watermark last moved).
  - ``history``: the commits of the last day that set the watermark, summed per ten minutes
    (:func:`with_history`), and ``recent``: the last :data:`RECENT_COMMITS` of them one by one
    (:func:`with_recent`): what the status command and the operations page show freshness over
    time and rows per window from, without reading the windows' items.

- ``(pipeline, <window label>)``: a window's plan (``read_from``, ``end``: the range it
  reads, fixed at its first run so that every re-run reads the same range), the chunks
  any attempt began to commit (``touched``), and once committed, its result.

Times are ISO-8601 strings in UTC with microseconds, which sort as the times do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Protocol, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError


class _Dataclass(Protocol):
    """A dataclass instance: what :func:`dataclasses.fields` takes."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


_Record = TypeVar("_Record", bound=_Dataclass)  # PipelineState, WindowRecord

UTC = timezone.utc
STATE_ITEM = "#state"
SNAPSHOT_LABEL = "snapshot"
SUBMITTED = "SUBMITTED"  # the jobs table's state of a job whose attempt runs (spotlake.registry.JobState)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class SnapshotPhase(str, Enum):  # not StrEnum: that needs Python 3.11, EMR runs 3.9
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    SKIPPED = "SKIPPED"  # initial_load: false

    @property
    def finished(self) -> bool:
        return self in (SnapshotPhase.DONE, SnapshotPhase.SKIPPED)


class LakeStateError(Exception):
    """Base class of the lake state's errors."""


class AttemptFenced(LakeStateError):
    """This attempt no longer owns its job: it may not commit (a newer attempt or the fleet took it)."""


class LockLost(LakeStateError):
    """The commit lock was taken from this attempt (its lease ran out or it was fenced)."""


class LockBusy(LakeStateError):
    """Another live attempt holds the pipeline's commit lock."""


def iso(moment: datetime) -> str:
    """A time as the state stores it: UTC, microseconds, ``+00:00``."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


HISTORY_SECONDS = 24 * 3600  # how far back a pipeline state's ``history`` reaches
HISTORY_STEP = 600  # its resolution: one point per ten minutes
RECENT_COMMITS = 12  # the commits a pipeline state's ``recent`` keeps


@dataclass(frozen=True)
class HistoryPoint:
    """Commits that set the watermark: when (epoch seconds; in ``history`` the start of their ten
    minutes), the watermark after them (epoch seconds), the rows they wrote."""

    committed: float
    watermark: float
    rows: int


def _points(text: str | None) -> list[tuple[int, int, int]]:
    found = []
    for entry in (text or "").split(";"):
        parts = entry.split(",")
        if len(parts) == 3:
            try:
                found.append((int(parts[0]), int(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return found


def parse_recent(text: str | None) -> list[HistoryPoint]:
    """``recent``: ``<committed>,<seconds the watermark is behind it>,<rows>`` per commit, oldest first."""
    return [HistoryPoint(float(c), float(c - behind), rows) for c, behind, rows in _points(text)]


def with_recent(text: str | None, point: HistoryPoint, keep: int = RECENT_COMMITS) -> str:
    entries = [*_points(text), (int(point.committed), int(point.committed - point.watermark), point.rows)]
    return ";".join(f"{c},{b},{r}" for c, b, r in entries[-keep:])


def parse_history(text: str | None, step: int = HISTORY_STEP) -> list[HistoryPoint]:
    """``history``: ``<ten-minute number>,<seconds the watermark is behind that ten minutes' end>,<rows>``
    per ten minutes with a commit, oldest first; each point's ``committed`` is its ten minutes' start."""
    return [HistoryPoint(float(n * step), float((n + 1) * step - behind), rows) for n, behind, rows in _points(text)]


def with_history(text: str | None, point: HistoryPoint, keep_s: float = HISTORY_SECONDS, step: int = HISTORY_STEP) -> str:
    """``text`` with ``point`` added to its ten minutes (the latest watermark, the rows summed) and
    the ten minutes older than ``keep_s`` before it dropped. About 2 KB for a day."""
    number = int(point.committed // step)
    entries = [e for e in _points(text) if e[0] > number - keep_s / step]
    behind = int((number + 1) * step - point.watermark)
    if entries and entries[-1][0] == number:
        _, old_behind, old_rows = entries.pop()
        entries.append((number, min(old_behind, behind), old_rows + point.rows))
    else:
        entries.append((number, behind, point.rows))
    return ";".join(f"{n},{b},{r}" for n, b, r in entries)


def snapshot_job_key(pipeline: str) -> str:
    return f"{pipeline}#{SNAPSHOT_LABEL}"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (boto3's serializer); None values are left out, floats go as Decimal."""
    item = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = Decimal(repr(value))
        elif isinstance(value, dict):
            value = {k: Decimal(repr(v)) if isinstance(v, float) else v for k, v in value.items()}
        item[key] = _serializer.serialize(value)
    return item


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def record_item(record: WindowRecord) -> dict[str, Any]:
    """A window record as an item: ``touched`` is a number set (which ``ADD`` extends)."""
    values = dict(record.__dict__)
    values["touched"] = {int(c) for c in record.touched} or None
    return to_item(values)


def load_state(item: dict[str, Any]) -> PipelineState:
    """A pipeline state item as read (by any projection of its attributes)."""
    return _load(PipelineState, item)


def _load(cls: type[_Record], item: dict[str, Any]) -> _Record:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in from_item(item).items() if k in names})


@dataclass
class PipelineState:
    pipeline: str
    snapshot: str = SnapshotPhase.PENDING.value
    watermark: str | None = None
    snapshot_started_at: str | None = None
    snapshot_after: str | None = None
    snapshot_chunks: int = 0
    snapshot_rows: int = 0
    lock_owner: str | None = None
    lock_job: str | None = None
    lock_expires: float = 0.0
    fence: int = 0
    failure_job: str | None = None
    failure_at: str | None = None
    failure_reason: str | None = None
    committed_at: str | None = None
    advanced_at: str | None = None  # when the watermark last moved
    last_job: str | None = None
    maintained_at: str | None = None
    held_by: str | None = None  # the open source transaction the last window stopped before
    unwaited: str | None = None  # open transactions past read.max_open_transaction, not waited for
    reconciled_at: str | None = None  # when the last reconciliation finished
    reconcile_result: str | None = None  # what it found
    history: str | None = None  # the last day's commits that set the watermark, per ten minutes (module doc)
    recent: str | None = None  # the last commits that set the watermark, one by one (module doc)
    created_at: str | None = None
    version: int = 0

    @property
    def phase(self) -> SnapshotPhase:
        return SnapshotPhase(self.snapshot)

    def after_key(self) -> list[Any] | None:
        """The primary key of the last committed snapshot chunk, or None before the first."""
        return None if self.snapshot_after is None else json.loads(self.snapshot_after)


@dataclass
class WindowRecord:
    """A window's plan and, once committed, its result (``state`` COMMITTED)."""

    pipeline: str
    window: str
    job_key: str
    start: str
    end: str
    read_from: str
    planned_at: str
    state: str = "PLANNED"
    touched: list[int] = field(default_factory=list)  # chunk numbers any attempt began to commit
    chunks: int = 0
    rows_read: int = 0
    rows_written: int = 0
    run_id: str | None = None
    attempt: int = 0
    changes_snapshot: int | None = None
    current_snapshot: int | None = None
    current_rows: int | None = None
    cursor_min: str | None = None
    cursor_max: str | None = None
    committed_at: str | None = None
    read_until: str | None = None  # where reading stopped, if an open transaction held it before ``end``
    null_dates: int = 0  # zero or invalid date values stored as NULL
    null_date_columns: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Owner:
    """An attempt of a job: who asks for the commit lock."""

    job_key: str
    run_id: str
    attempt: int


@dataclass
class Lock:
    """The commit lock as held by ``owner``; ``state`` is the pipeline state read when taken."""

    pipeline: str
    owner: Owner
    fence: int
    expires: float
    state: PipelineState


def _conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("ConditionalCheckFailedException", "TransactionCanceledException")


def _cancellation_codes(exc: ClientError) -> list[str]:
    return [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]


class LakeState:
    """The lake state of every pipeline, over a low-level boto3 DynamoDB client."""

    def __init__(self, client: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock

    @property
    def table(self) -> str:
        return f"{self.prefix}-extraction-log"

    @property
    def jobs_table(self) -> str:
        return f"{self.prefix}-jobs"

    def _key(self, pipeline: str, window: str) -> dict[str, Any]:
        return {"pipeline": {"S": pipeline}, "window": {"S": window}}

    def _get(self, pipeline: str, window: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.table, Key=self._key(pipeline, window), ConsistentRead=True
        ).get("Item")
        return item

    # ------------------------------------------------------------------ state
    def state_key(self, pipeline: str) -> dict[str, Any]:
        """The key of ``pipeline``'s state item."""
        return self._key(pipeline, STATE_ITEM)

    def get(self, pipeline: str) -> PipelineState | None:
        item = self._get(pipeline, STATE_ITEM)
        return _load(PipelineState, item) if item else None

    def ensure(self, pipeline: str, initial_load: bool, first_start: datetime) -> PipelineState:
        """The pipeline's state, created on first use: a PENDING snapshot, or with
        ``initial_load`` off a SKIPPED one whose watermark is the first run's start."""
        state = self.get(pipeline)
        if state is not None:
            return state
        state = PipelineState(pipeline=pipeline, created_at=iso(datetime.now(UTC)), version=1)
        if not initial_load:
            state.snapshot, state.watermark = SnapshotPhase.SKIPPED.value, iso(first_start)
        item = to_item({**state.__dict__, "window": STATE_ITEM})
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pipeline)")
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
        return self.get(pipeline) or state

    def record_failure(self, pipeline: str, job_key: str, reason: str) -> None:
        """Note the last failed window (the status shows the pipeline stale with it)."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(pipeline, STATE_ITEM),
            UpdateExpression="SET failure_job = :j, failure_at = :t, failure_reason = :r",
            ConditionExpression="attribute_exists(pipeline)",
            ExpressionAttributeValues=to_item({":j": job_key, ":t": iso(datetime.now(UTC)), ":r": reason[:1000]}),
        )

    # ---------------------------------------------------------------- windows
    def window(self, pipeline: str, label: str) -> WindowRecord | None:
        item = self._get(pipeline, label)
        return _load(WindowRecord, item) if item else None

    def windows(self, pipeline: str) -> list[WindowRecord]:
        """Every window record of ``pipeline`` (not its state), oldest first."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pipeline = :p",
            "ExpressionAttributeValues": {":p": {"S": pipeline}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [_load(WindowRecord, i) for i in items if not i["window"]["S"].startswith("#")]

    def plan_window(self, record: WindowRecord) -> WindowRecord:
        """Store ``record`` as the window's plan unless it has one; return the stored plan."""
        try:
            self.client.put_item(
                TableName=self.table, Item=record_item(record), ConditionExpression="attribute_not_exists(pipeline)"
            )
            return record
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
        stored = self.window(record.pipeline, record.window)
        assert stored is not None
        return stored

    # ------------------------------------------------------------------- lock
    def acquire(self, pipeline: str, owner: Owner, lease_s: float) -> Lock:
        """Take the commit lock for ``owner`` if it is free, expired, already ``owner``'s, or held
        by an attempt that no longer owns its job. Raises LockBusy while a live attempt holds it,
        AttemptFenced if ``owner`` itself no longer owns its job."""
        state = self.get(pipeline)
        if state is None:
            raise LakeStateError(f"pipeline {pipeline} has no state in {self.table}; its first run creates it")
        now = self.clock()
        holder = state.lock_owner
        if holder and holder != owner.run_id and state.lock_expires > now and self._holder_owns(state):
            if not self._owns(owner):
                raise AttemptFenced(self._fenced_message(owner))
            raise LockBusy(
                f"pipeline {pipeline}: commit lock held by {state.lock_job} (run {holder}) "
                f"for {state.lock_expires - now:.0f} s more"
            )
        values = {
            ":me": owner.run_id,
            ":job": owner.job_key,
            ":attempt": owner.attempt,
            ":exp": now + lease_s,
            ":now": now,
            ":seen": holder or "",
            ":zero": 0,
            ":one": 1,
            ":submitted": SUBMITTED,
        }
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(pipeline, STATE_ITEM),
                            "UpdateExpression": "SET lock_owner = :me, lock_job = :job, lock_attempt = :attempt, "
                            "lock_expires = :exp, fence = if_not_exists(fence, :zero) + :one, "
                            "version = version + :one",
                            "ConditionExpression": "attribute_not_exists(lock_owner) OR lock_owner = :me "
                            "OR lock_owner = :seen OR lock_expires < :now",
                            "ExpressionAttributeValues": to_item(
                                {k: values[k] for k in (":me", ":job", ":attempt", ":exp", ":now", ":seen", ":zero", ":one")}
                            ),
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": self.jobs_table,
                            "Key": {"job_key": {"S": owner.job_key}},
                            "ConditionExpression": "run_id = :me AND #s = :submitted",
                            "ExpressionAttributeNames": {"#s": "state"},
                            "ExpressionAttributeValues": to_item({":me": owner.run_id, ":submitted": SUBMITTED}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
            codes = _cancellation_codes(exc)
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                raise AttemptFenced(self._fenced_message(owner)) from None
            raise LockBusy(f"pipeline {pipeline}: the commit lock changed while taking it") from None
        taken = self.get(pipeline)
        assert taken is not None
        return Lock(pipeline=pipeline, owner=owner, fence=taken.fence, expires=taken.lock_expires, state=taken)

    def _holder_owns(self, state: PipelineState) -> bool:
        """Whether the lock's holder still owns its job (a holder that does not is a zombie)."""
        return bool(state.lock_job and state.lock_owner) and self._owns(Owner(str(state.lock_job), str(state.lock_owner), 0))

    def _owns(self, owner: Owner) -> bool:
        item = self.client.get_item(TableName=self.jobs_table, Key={"job_key": {"S": owner.job_key}}, ConsistentRead=True).get(
            "Item"
        )
        job = from_item(item) if item else {}
        return job.get("run_id") == owner.run_id and job.get("state") == SUBMITTED

    def _fenced_message(self, owner: Owner) -> str:
        item = self.client.get_item(TableName=self.jobs_table, Key={"job_key": {"S": owner.job_key}}, ConsistentRead=True).get(
            "Item"
        )
        now = from_item(item) if item else {}
        return (
            f"attempt {owner.attempt} (run {owner.run_id}) of {owner.job_key} no longer owns its job: "
            f"the registry has attempt {now.get('attempt', '?')} (run {now.get('run_id', '?')}) in state "
            f"{now.get('state', 'missing')}; its commit is refused so it cannot replace a newer result"
        )

    def _lock_guard(self, lock: Lock) -> dict[str, Any]:
        """A transaction item that holds only while ``lock`` is still held."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": self._key(lock.pipeline, STATE_ITEM),
                "ConditionExpression": "lock_owner = :me AND fence = :fence",
                "ExpressionAttributeValues": to_item({":me": lock.owner.run_id, ":fence": lock.fence}),
            }
        }

    def renew(self, lock: Lock, lease_s: float) -> None:
        """Extend the lease while ``lock.owner`` still owns its job; LockLost or AttemptFenced if not."""
        expires = self.clock() + lease_s
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(lock.pipeline, STATE_ITEM),
                            "UpdateExpression": "SET lock_expires = :exp",
                            "ConditionExpression": "lock_owner = :me AND fence = :fence",
                            "ExpressionAttributeValues": to_item(
                                {":exp": expires, ":me": lock.owner.run_id, ":fence": lock.fence}
                            ),
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": self.jobs_table,
                            "Key": {"job_key": {"S": lock.owner.job_key}},
                            "ConditionExpression": "run_id = :me AND #s = :submitted",
                            "ExpressionAttributeNames": {"#s": "state"},
                            "ExpressionAttributeValues": to_item({":me": lock.owner.run_id, ":submitted": SUBMITTED}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
            codes = _cancellation_codes(exc)
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                raise AttemptFenced(self._fenced_message(lock.owner)) from None
            raise LockLost(f"pipeline {lock.pipeline}: the commit lock of {lock.owner.job_key} was taken over") from None
        lock.expires = expires

    def mark_touched(self, lock: Lock, label: str, chunk: int) -> None:
        """Before a chunk's first lake commit: remember that one may exist (so a re-run replaces it)."""
        self._transact(
            lock,
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": self._key(lock.pipeline, label),
                        "UpdateExpression": "ADD touched :c",
                        "ConditionExpression": "attribute_exists(pipeline)",
                        "ExpressionAttributeValues": {":c": {"NS": [str(chunk)]}},
                    }
                }
            ],
        )

    def release(self, lock: Lock, state_changes: dict[str, Any] | None = None, window: WindowRecord | None = None) -> None:
        """Apply ``state_changes`` to the pipeline state, store ``window`` (its result) and free the
        lock, in one transaction that holds only while ``lock`` is still held (LockLost if not)."""
        changes = {**(state_changes or {}), "version": lock.state.version + 1}
        if window is not None and window.state == "COMMITTED" and changes.get("watermark") and window.committed_at:
            point = HistoryPoint(
                parse_iso(window.committed_at).timestamp(), parse_iso(changes["watermark"]).timestamp(), window.rows_written
            )
            changes["history"] = with_history(lock.state.history, point)
            changes["recent"] = with_recent(lock.state.recent, point)
        sets = {k: v for k, v in changes.items() if v is not None}
        removes = ["lock_owner", "lock_job", "lock_attempt", "lock_expires", *(f"#{k}" for k, v in changes.items() if v is None)]
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._key(lock.pipeline, STATE_ITEM),
                    "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in sets) + " REMOVE " + ", ".join(removes),
                    "ConditionExpression": "lock_owner = :me AND fence = :fence",
                    "ExpressionAttributeNames": {f"#{k}": k for k in changes},
                    "ExpressionAttributeValues": to_item(
                        {**{f":{k}": v for k, v in sets.items()}, ":me": lock.owner.run_id, ":fence": lock.fence}
                    ),
                }
            }
        ]
        if window is not None:
            items.append({"Put": {"TableName": self.table, "Item": record_item(window)}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
            raise LockLost(
                f"pipeline {lock.pipeline}: the commit lock of {lock.owner.job_key} was taken over "
                "before its commit was recorded; the next run re-reads the range"
            ) from None

    def _transact(self, lock: Lock, items: list[dict[str, Any]]) -> None:
        try:
            self.client.transact_write_items(TransactItems=[self._lock_guard(lock), *items])
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
            codes = _cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                raise LockLost(f"pipeline {lock.pipeline}: the commit lock of {lock.owner.job_key} was taken over") from None
            raise
