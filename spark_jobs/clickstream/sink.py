"""The click stream's PostgreSQL sink: one transaction per micro-batch, exactly once.

:meth:`PostgresSinkWriter.write` commits a micro-batch's dead letters, late events,
distinct-set members, aggregates and funnel counts together with the batch id in
``stream_progress``, in ONE transaction that starts by locking the query's
``stream_progress`` row:

- a batch id at or below ``last_batch_id`` was committed before (Spark replays the
  last batch after a restart): the transaction ends without writing anything;
- a ``run_id`` in that row other than this run's means a newer run of the stream
  took over (the supervisor restarted it elsewhere): :class:`StreamFencedError`, so
  a stale run can never write. A run claims the row (:meth:`PostgresSinkWriter.claim`)
  only if its attempt is at least the owner's: ownership goes to the newest attempt,
  never to whichever run claimed last. The lake's Iceberg commits of the batch run
  inside the same transaction, under the same lock (``before_commit``), so a fenced
  run writes nothing anywhere;
- progress belongs to one checkpoint (``checkpoint_id``, Spark's id of it): a run with
  another checkpoint (deleted, lost, replaced) is refused at its claim, naming the reset
  command, unless a reset (``stream_checkpoint_resets``) says where the new checkpoint
  starts; then batch ids count from 0 again and nothing is skipped as a "replay";
- distinct counts stay exact across batches: each member (user or session of a
  window, page and event type; session of a window and funnel stage) is inserted
  into its set table with ``ON CONFLICT DO NOTHING RETURNING``, and only the rows
  actually inserted add to the counts;
- the watermark (latest event time committed minus the delay) is read under the
  lock and handed to the batch's computation, then moved forward in the same
  transaction; so "late" is decided once per batch, the same way on a replay.

The module has no Spark dependency: the Spark job computes :class:`BatchRows` from
a micro-batch, the Python baseline of ``bench/streaming_bench.py`` from a poll.
It needs ``psycopg2``, which every batch brings in its Python archive (spark_jobs/common/runtime.py).
Credentials come from a Secrets Manager secret (JSON with host, port, database,
username, password) and go only into the connection: never into a log or message.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from spark_jobs.common.database_secret import DatabaseTls, Endpoint, read_database_secret
from spark_jobs.common.errors import StreamFencedError, StreamingError

LOG = logging.getLogger(__name__)
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PAGE_SIZE = 2000
RETRY_S = 120.0  # how long a batch keeps retrying a sink it cannot reach before the query fails
PRUNE_EVERY = 100  # batches between deletions of stream_batches rows older than the retention
# A batch's rows are COPYed into these, then merged into the sink tables by one statement
# per table group; they are emptied at commit and exist per connection.
STAGING_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS spotlake_batch_members (kind text NOT NULL, window_ms bigint NOT NULL, "
    "k1 text NOT NULL, k2 text NOT NULL, member text NOT NULL) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS spotlake_batch_counts (window_ms bigint NOT NULL, page text NOT NULL, "
    "event_type text NOT NULL, events bigint NOT NULL, late_events bigint NOT NULL) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS spotlake_batch_funnel (window_ms bigint NOT NULL, stage text NOT NULL, "
    "events bigint NOT NULL) ON COMMIT DELETE ROWS",
)


def to_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an exact UTC datetime (no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)


def to_millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    tls: DatabaseTls = DatabaseTls()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def ssl_params(self, stream: str) -> dict[str, str]:
        """libpq's ``sslmode`` (and ``sslrootcert``) for the sink: ``auto`` is ``disable`` on
        loopback and ``verify-full`` elsewhere."""
        return self.tls.libpq_params(self.host, f"stream {stream}: sink PostgreSQL at {self.address}", StreamingError)


def resolve_target(
    secret_id: str, stream: str, region: str | None = None, endpoint: Endpoint | None = None, tls: DatabaseTls | None = None
) -> PostgresTarget:
    """Read the sink's secret from Secrets Manager (in ``region``) and check its shape, never echoing values."""
    secret = read_database_secret(
        secret_id,
        f"stream {stream}: sink secret '{secret_id}'",
        StreamingError,
        "fix sink.secret_id in config/streaming.yaml",
        database_required=True,
        region=region,
        endpoint=endpoint,
    )
    return PostgresTarget(secret.host, secret.port, str(secret.database), secret.username, secret.password, tls or DatabaseTls())


@dataclass
class BatchRows:
    """What one micro-batch contributes, as plain rows (epoch milliseconds for times).

    - ``offsets``: per topic, per partition (as text), the next offset after the batch's
      last record in that partition;
    - ``dead_letters``: (topic, partition, offset, kafka_ts_ms, key, value, reason, detail);
    - ``late_events``: (topic, partition, offset, kafka_ts_ms, event_id, event_time_ms,
      window_start_ms, page, event_type, user_id, session_id);
    - ``window_counts``: (window_start_ms, page, event_type, events, late_events), counted events;
    - ``members``: (kind, window_start_ms, page_or_stage, event_type, member), kind
      ``user``/``session``/``funnel``, distinct within the batch;
    - ``funnel_counts``: (window_start_ms, stage, events).
    """

    input_rows: int = 0
    valid_events: int = 0
    max_event_time_ms: int | None = None
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    late_events: list[tuple[Any, ...]] = field(default_factory=list)
    window_counts: list[tuple[Any, ...]] = field(default_factory=list)
    members: list[tuple[Any, ...]] = field(default_factory=list)
    funnel_counts: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def counted_events(self) -> int:
        return sum(int(row[3]) for row in self.window_counts)


@dataclass(frozen=True)
class Claim:
    """What :meth:`PostgresSinkWriter.claim` found: the last batch the checkpoint committed
    (-1: none) and the starting offsets of the checkpoint's first batch."""

    last_batch_id: int
    starting_offsets: str
    reset_id: int | None = None  # the reset this claim consumed


class SinkUnreachable(StreamingError):
    """The sink database refused or dropped the connection (retried while the batch's budget lasts)."""


class CheckpointRefused(StreamingError):
    """The run's checkpoint is not the one the sink's progress belongs to, and no reset says where it starts."""


@dataclass(frozen=True)
class BatchResult:
    batch_id: int
    committed: bool
    input_rows: int = 0
    counted_events: int = 0
    late_events: int = 0
    dead_letters: int = 0
    watermark_ms: int | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the batch


class PostgresSinkWriter:
    """Writes micro-batches of one streaming query into the sink schema, exactly once."""

    def __init__(
        self,
        connect: Callable[[], Any],
        schema: str,
        query_name: str,
        run_id: str,
        *,
        window_s: int,
        watermark_delay_s: int,
        late_policy: str = "count",
        allowed_lateness_s: int = 86400,
        retry_s: float = RETRY_S,
        attempt: int = 1,
        checkpoint_id: str | None = None,
        retention_s: int = 3 * 86400,
    ) -> None:
        if not SCHEMA.match(schema):
            raise StreamingError(f"sink schema {schema!r} is not a lower-case PostgreSQL identifier")
        self._connect = connect
        self._connection: Any = None
        self.schema = schema
        self.query_name = query_name
        self.run_id = run_id
        self.window_ms = window_s * 1000
        self.delay_ms = watermark_delay_s * 1000
        self.late_policy = late_policy
        # Sets of windows that ended this long before the watermark are deleted; their late
        # events are recorded, not counted ("divert": as soon as the window ended).
        self.lateness_ms = allowed_lateness_s * 1000 if late_policy == "count" else 0
        self.retry_s = retry_s
        self.attempt = attempt
        self.checkpoint_id = checkpoint_id
        self.retention_s = retention_s  # stream_batches rows older than this are deleted

    @classmethod
    def for_target(cls, target: PostgresTarget, stream: str, **kwargs: Any) -> PostgresSinkWriter:
        def connect() -> Any:
            try:
                import psycopg2
            except ImportError:
                raise StreamingError(
                    f"stream {stream}: psycopg2 is not on the driver — the batch's Python archive did not reach "
                    "it; publish it with `python -m spotlake.job_dependencies publish` (spark.archives)"
                ) from None
            ssl = target.ssl_params(stream)
            try:
                return psycopg2.connect(
                    host=target.host,
                    port=target.port,
                    dbname=target.database,
                    user=target.username,
                    password=target.password,
                    connect_timeout=10,
                    application_name=f"spotlake-{stream}",
                    **ssl,
                )
            except psycopg2.OperationalError as exc:
                first = (str(exc).strip().splitlines() or ["connection failed"])[0]
                raise SinkUnreachable(
                    f"stream {stream}: cannot connect to the sink PostgreSQL at {target.address}: {first} — "
                    "check host, port and credentials in the sink secret and that the database accepts "
                    f"connections from the cluster (sslmode {ssl['sslmode']}: the sink's tls in config/streaming.yaml)"
                ) from None

        return cls(connect, **kwargs)

    # ------------------------------------------------------------ connection
    def t(self, table: str) -> str:
        return f'"{self.schema}"."{table}"'

    @property
    def connection(self) -> Any:
        if self._connection is None or bool(getattr(self._connection, "closed", 0)):
            self._connection = self._connect()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, SinkUnreachable):
            return True
        try:
            import psycopg2
        except ImportError:
            return False
        return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))

    # ----------------------------------------------------------------- claim
    def claim(self, checkpoint_id: str | None = None, checkpoint_started: bool = False, default_start: str = "earliest") -> Claim:
        """Make this run the query's only writer, if its attempt is at least the owner's, for
        checkpoint ``checkpoint_id`` (``checkpoint_started``: it already holds offsets of its own).

        Returns the last batch that checkpoint committed and where its first batch starts
        (``default_start``, the job's starting offsets, for a stream's first checkpoint; a
        reset's position for a checkpoint that replaces another). Raises
        :class:`StreamFencedError` when a newer attempt owns the query and
        :class:`CheckpointRefused` when the checkpoint is not the sink's and no reset is pending.
        """
        checkpoint_id = checkpoint_id or self.checkpoint_id
        self.checkpoint_id = checkpoint_id
        conn = self.connection
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {self.t('stream_progress')} (query_name, run_id, owner_attempt) VALUES (%s, %s, %s) "
                    "ON CONFLICT (query_name) DO NOTHING",
                    (self.query_name, self.run_id, self.attempt),
                )
                cur.execute(
                    f"SELECT owner_attempt, run_id, last_batch_id, checkpoint_id, checkpoint_start, offsets "
                    f"FROM {self.t('stream_progress')} WHERE query_name = %s FOR UPDATE",
                    (self.query_name,),
                )
                owner_attempt, owner, last, stored_id, stored_start, committed = cur.fetchone()
                if int(owner_attempt) > self.attempt:
                    raise StreamFencedError(
                        f"query {self.query_name}: attempt {owner_attempt} (run {owner}) owns the sink; this run "
                        f"(attempt {self.attempt}, run {self.run_id}) is older and stops without writing"
                    )
                claim = self._checkpoint_claim(
                    cur, int(last), stored_id, stored_start, checkpoint_started, default_start, committed or {}
                )
                cur.execute(
                    f"UPDATE {self.t('stream_progress')} SET run_id = %s, owner_attempt = %s, claimed_at = now() "
                    "WHERE query_name = %s",
                    (self.run_id, self.attempt, self.query_name),
                )
            conn.commit()
        except Exception as exc:
            conn.rollback()
            if type(exc).__name__ in ("UndefinedTable", "InvalidSchemaName", "UndefinedColumn"):
                raise StreamingError(
                    f"query {self.query_name}: the sink schema '{self.schema}' lacks the stream tables of this "
                    "version — apply the migrations first (the streaming supervisor does: spotlake.sink_schema.apply)"
                ) from None
            raise
        LOG.info(
            "query %s claimed by run %s (attempt %s) for checkpoint %s; last committed batch %s, first batch from %s",
            self.query_name,
            self.run_id,
            self.attempt,
            checkpoint_id,
            claim.last_batch_id,
            claim.starting_offsets,
        )
        return claim

    def _checkpoint_claim(
        self,
        cur: Any,
        last: int,
        stored_id: str | None,
        stored_start: str | None,
        started: bool,
        default_start: str,
        committed: Any = None,
    ) -> Claim:
        """The claim's checkpoint part, under the progress row's lock (see :meth:`claim`)."""
        if self.checkpoint_id is None:
            return Claim(last, stored_start or default_start)
        if stored_id == self.checkpoint_id:
            if last >= 0 and not started:
                raise CheckpointRefused(
                    f"query {self.query_name}: checkpoint {self.checkpoint_id} has no offsets of its own, but the sink "
                    f"committed its batches 0..{last}: its offsets/ folder was removed, and Spark would number its "
                    "batches from 0 again (the sink would skip them as replays) — stop the stream, delete the whole "
                    f"checkpoint folder, then run python -m spotlake.stream_reset {self.query_name} --from committed"
                )
            return Claim(last, stored_start or default_start)
        # Nothing committed yet (the query's first checkpoint, or one replaced before its first
        # batch): it starts where the one before would have (a reset's offsets, else the job's).
        first = last < 0
        previous = f"checkpoint {stored_id}" if stored_id else "the checkpoint of an earlier version"
        command = (
            f"python -m spotlake.stream_reset {self.query_name} --from committed (from the offsets the "
            "sink committed: nothing lost, nothing counted twice; or --from earliest|latest|'<offsets JSON>')"
        )
        if started and not first:
            raise CheckpointRefused(
                f"query {self.query_name}: checkpoint {self.checkpoint_id} has batches of its own, but the sink's "
                f"progress (batch {last}) belongs to {previous}: two checkpoints must never feed one sink — stop the "
                f"stream, delete the checkpoint folder, then run {command}"
            )
        cur.execute(
            f"SELECT reset_id, starting_from, starting_offsets FROM {self.t('stream_checkpoint_resets')} "
            "WHERE query_name = %s AND consumed_at IS NULL ORDER BY reset_id DESC LIMIT 1 FOR UPDATE",
            (self.query_name,),
        )
        pending = cur.fetchone()
        if first and (pending is None or started):
            # (A checkpoint with offsets of its own starts there: Spark ignores startingOffsets, so a
            # pending reset stays for the next new checkpoint.)
            start = stored_start or default_start
            cur.execute(
                f"UPDATE {self.t('stream_progress')} SET checkpoint_id = %s, checkpoint_start = %s WHERE query_name = %s",
                (self.checkpoint_id, start, self.query_name),
            )
            return Claim(-1, start)
        if pending is None:
            raise CheckpointRefused(
                f"query {self.query_name}: checkpoint {self.checkpoint_id} is new, but the sink has committed batches "
                f"0..{last} of {previous}; starting it from the job's starting offsets could count events twice or "
                f"skip them, so the stream does not start — to start it, run {command}"
            )
        reset_id, starting_from, starting_offsets = pending
        if starting_from == "committed":
            # Where the sink stands now, not when the reset was asked for: batches committed since
            # (the old checkpoint still ran) must not be read again.
            starting_offsets = committed_offsets(starting_offsets, committed)
        cur.execute(
            f"UPDATE {self.t('stream_checkpoint_resets')} SET checkpoint_id = %s, consumed_at = now(), "
            "previous_checkpoint_id = %s, previous_last_batch_id = %s WHERE reset_id = %s",
            (self.checkpoint_id, stored_id, last, reset_id),
        )
        # The offsets follow the new checkpoint from here (a reset may go back: the lag must show it).
        cur.execute(
            f"UPDATE {self.t('stream_progress')} SET checkpoint_id = %s, checkpoint_start = %s, last_batch_id = -1, "
            "offsets = '{}'::jsonb WHERE query_name = %s",
            (self.checkpoint_id, starting_offsets, self.query_name),
        )
        LOG.warning(
            "query %s: reset %s consumed: checkpoint %s replaces %s (last batch %s) and starts from %s (%s)",
            self.query_name,
            reset_id,
            self.checkpoint_id,
            stored_id,
            last,
            starting_from,
            starting_offsets,
        )
        return Claim(-1, starting_offsets, int(reset_id))

    # ----------------------------------------------------------------- write
    def write(
        self,
        batch_id: int,
        compute: Callable[[int | None, int | None], BatchRows],
        before_commit: Callable[[], dict[str, float]] | None = None,
    ) -> BatchResult:
        """Commit batch ``batch_id`` unless it was committed before.

        ``compute(watermark_ms, final_before_ms)`` returns the batch's rows given the watermark
        in force (None before the first event) and the final-window horizon (windows starting
        at or before it take no counted event; None: none yet); it runs inside the
        transaction, after the lock. ``before_commit()`` (the batch's lake commits, each
        idempotent by checkpoint and batch id) runs in a thread while the rows are written,
        still under the lock, and is over before the commit; it returns seconds per phase.
        Connection failures are retried (reconnecting, the whole batch again: what was committed
        is found and skipped) for up to ``retry_s`` seconds; then the error fails the query.
        """
        deadline: float | None = None  # counted from the first failure: a long batch keeps its retries
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._write_once(batch_id, compute, before_commit)
            except Exception as exc:
                self._rollback_quietly()
                deadline = deadline if deadline is not None else time.monotonic() + self.retry_s
                pause = min(2.0**attempt, 10.0)
                if not self._transient(exc) or time.monotonic() + pause > deadline:
                    raise
                LOG.warning(
                    "query %s batch %s: the sink is unreachable (%s: %s); retrying in %.0f s (for up to %.0f s in all)",
                    self.query_name,
                    batch_id,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    pause,
                    self.retry_s,
                )
                self.close()
                time.sleep(pause)

    def _rollback_quietly(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.rollback()
        except Exception:  # noqa: BLE001 - a broken connection is closed and replaced next attempt
            self.close()

    def _final_before(self, watermark_ms: int | None, stored_ms: int | None) -> int | None:
        """The final-window horizon: windows that ended ``allowed_lateness`` (divert: 0) or more
        before the watermark, and never less than what an earlier run made final."""
        candidate = watermark_ms - self.lateness_ms - self.window_ms if watermark_ms is not None else None
        return _max_or_none(stored_ms, candidate)

    def _write_once(
        self,
        batch_id: int,
        compute: Callable[[int | None, int | None], BatchRows],
        before_commit: Callable[[], dict[str, float]] | None = None,
    ) -> BatchResult:
        started = datetime.now(UTC)
        conn = self.connection
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT run_id, last_batch_id, max_event_time, watermark, offsets, final_before, checkpoint_id "
                f"FROM {self.t('stream_progress')} WHERE query_name = %s FOR UPDATE",
                (self.query_name,),
            )
            row = cur.fetchone()
            if row is None:
                raise StreamingError(f"query {self.query_name}: no stream_progress row; the run must claim the query first")
            owner, last_batch, max_event_time, watermark, offsets, final_before, checkpoint_id = row
            if owner != self.run_id or (self.checkpoint_id is not None and checkpoint_id != self.checkpoint_id):
                raise StreamFencedError(
                    f"query {self.query_name}: run {owner} (checkpoint {checkpoint_id}) took over the sink; this "
                    f"run ({self.run_id}, checkpoint {self.checkpoint_id}) stops before batch {batch_id}"
                )
            if batch_id <= last_batch:
                conn.rollback()
                LOG.info("query %s batch %s was committed before (last %s): nothing to do", self.query_name, batch_id, last_batch)
                return BatchResult(batch_id, committed=False)
            watermark_ms = to_millis(watermark) if watermark is not None else None
            final_ms = self._final_before(watermark_ms, to_millis(final_before) if final_before is not None else None)
            clock = time.monotonic()
            rows = compute(watermark_ms, final_ms)
            computed = time.monotonic()
            # The lake's commits run while the rows are written here (they wait on S3 and the
            # catalog, this on PostgreSQL), and are over before the COMMIT below.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-commit") as pool:
                lake = pool.submit(before_commit) if before_commit is not None else None
                late_ids = self._write_rows(cur, batch_id, rows, watermark_ms, final_ms)
                previous_max = to_millis(max_event_time) if max_event_time is not None else None
                new_max = _max_or_none(previous_max, rows.max_event_time_ms)
                new_watermark = _max_or_none(watermark_ms, new_max - self.delay_ms if new_max is not None else None)
                new_final = self._final_before(new_watermark, final_ms)
                if new_final is not None:
                    self._prune_final_windows(cur, new_final)
                merged = _merge_offsets(offsets or {}, rows.offsets)
                cur.execute(
                    f"UPDATE {self.t('stream_progress')} SET last_batch_id = %s, max_event_time = %s, "
                    "watermark = %s, offsets = %s, final_before = %s, committed_at = clock_timestamp() "
                    "WHERE query_name = %s",
                    (batch_id, _dt(new_max), _dt(new_watermark), json.dumps(merged), _dt(new_final), self.query_name),
                )
                phases = {"aggregate": computed - clock, "postgres": time.monotonic() - computed}
                if lake is not None:
                    phases.update(lake.result())
            lake_done = time.monotonic()
            cur.execute(
                f"INSERT INTO {self.t('stream_batches')} (query_name, batch_id, run_id, input_rows, "
                "valid_events, counted_events, late_events, dead_letters, watermark, offsets, started_at, "
                "committed_at, checkpoint_id, phases) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp(), %s, %s)",
                (
                    self.query_name,
                    batch_id,
                    self.run_id,
                    rows.input_rows,
                    rows.valid_events,
                    rows.counted_events,
                    late_ids,
                    len(rows.dead_letters),
                    _dt(watermark_ms),
                    json.dumps(merged),
                    started,
                    self.checkpoint_id,
                    json.dumps({k: round(v, 4) for k, v in phases.items()}),
                ),
            )
            if batch_id % PRUNE_EVERY == 0:
                cur.execute(
                    f"DELETE FROM {self.t('stream_batches')} WHERE query_name = %s AND committed_at < "
                    "clock_timestamp() - %s * interval '1 second'",
                    (self.query_name, self.retention_s),
                )
        conn.commit()
        phases["commit"] = time.monotonic() - lake_done
        LOG.info(
            "query %s batch %s committed: %s records, %s counted, %s late, %s dead letters, watermark %s (%s)",
            self.query_name,
            batch_id,
            rows.input_rows,
            rows.counted_events,
            late_ids,
            len(rows.dead_letters),
            _dt(new_watermark),
            ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()),
        )
        return BatchResult(
            batch_id, True, rows.input_rows, rows.counted_events, late_ids, len(rows.dead_letters), new_watermark, phases
        )

    def _write_rows(self, cur: Any, batch_id: int, rows: BatchRows, watermark_ms: int | None, final_ms: int | None) -> int:
        from psycopg2.extras import execute_values

        if rows.dead_letters:
            execute_values(
                cur,
                f"INSERT INTO {self.t('click_dead_letters')} (topic, kafka_partition, kafka_offset, "
                "kafka_timestamp, key, value, reason, detail, batch_id) VALUES %s ON CONFLICT DO NOTHING",
                [
                    (t, p, o, _dt(ts), _bytes(k), _bytes(v), reason, detail, batch_id)
                    for t, p, o, ts, k, v, reason, detail in rows.dead_letters
                ],
                page_size=PAGE_SIZE,
            )
        if rows.late_events and watermark_ms is not None:
            execute_values(
                cur,
                f"INSERT INTO {self.t('click_late_events')} (topic, kafka_partition, kafka_offset, "
                "kafka_timestamp, event_id, event_time, window_start, page, event_type, user_id, session_id, "
                "watermark, lateness_ms, counted, batch_id) VALUES %s ON CONFLICT DO NOTHING",
                [
                    (
                        t,
                        p,
                        o,
                        _dt(ts),
                        eid,
                        _dt(et),
                        _dt(ws),
                        page,
                        etype,
                        user,
                        session,
                        _dt(watermark_ms),
                        watermark_ms - et,
                        self.late_policy == "count" and (final_ms is None or ws > final_ms),
                        batch_id,
                    )
                    for t, p, o, ts, eid, et, ws, page, etype, user, session in rows.late_events
                ],
                page_size=PAGE_SIZE,
            )
        self._stage(cur, rows)
        if rows.window_counts:
            cur.execute(self._aggregates_sql(), {"batch_id": batch_id})
        if rows.funnel_counts:
            cur.execute(self._funnel_sql(), {"batch_id": batch_id})
        return len(rows.late_events)

    def _stage(self, cur: Any, rows: BatchRows) -> None:
        """COPY the batch's members, window counts and funnel counts into temporary tables
        that live for this transaction only (``ON COMMIT DELETE ROWS``)."""
        cur.execute(";\n".join(STAGING_TABLES))  # one round trip
        for table, data in (
            ("spotlake_batch_members", rows.members),
            ("spotlake_batch_counts", rows.window_counts),
            ("spotlake_batch_funnel", rows.funnel_counts),
        ):
            if data:
                buffer = io.StringIO()
                # Strings quoted, so an empty one stays empty (COPY reads an unquoted empty field as NULL).
                csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerows(data)
                buffer.seek(0)
                cur.copy_expert(f"COPY pg_temp.{table} FROM STDIN WITH (FORMAT csv)", buffer)

    def _aggregates_sql(self) -> str:
        """One statement: add the staged members to the distinct sets, count per key those the
        sets did not hold, and upsert the staged window counts with those counts."""
        return f"""
            WITH new_users AS (
                INSERT INTO {self.t("click_window_users")} (window_start, page, event_type, user_id)
                SELECT {_ts("window_ms")}, k1, k2, member FROM pg_temp.spotlake_batch_members WHERE kind = 'user'
                ON CONFLICT DO NOTHING RETURNING window_start, page, event_type
            ), new_sessions AS (
                INSERT INTO {self.t("click_window_sessions")} (window_start, page, event_type, session_id)
                SELECT {_ts("window_ms")}, k1, k2, member FROM pg_temp.spotlake_batch_members WHERE kind = 'session'
                ON CONFLICT DO NOTHING RETURNING window_start, page, event_type
            ), users AS (
                SELECT window_start, page, event_type, count(*) AS added FROM new_users GROUP BY 1, 2, 3
            ), sessions AS (
                SELECT window_start, page, event_type, count(*) AS added FROM new_sessions GROUP BY 1, 2, 3
            )
            INSERT INTO {self.t("click_aggregates")} AS a (window_start, page, event_type, events, users, sessions,
                                                          late_events, last_batch_id, updated_at)
            SELECT c.window_start, c.page, c.event_type, c.events, COALESCE(u.added, 0), COALESCE(s.added, 0),
                   c.late_events, %(batch_id)s, clock_timestamp()
            FROM (SELECT {_ts("window_ms")} AS window_start, page, event_type, events, late_events
                  FROM pg_temp.spotlake_batch_counts) AS c
            LEFT JOIN users AS u USING (window_start, page, event_type)
            LEFT JOIN sessions AS s USING (window_start, page, event_type)
            ON CONFLICT (window_start, page, event_type) DO UPDATE SET
                events = a.events + EXCLUDED.events, users = a.users + EXCLUDED.users,
                sessions = a.sessions + EXCLUDED.sessions, late_events = a.late_events + EXCLUDED.late_events,
                last_batch_id = EXCLUDED.last_batch_id, updated_at = EXCLUDED.updated_at
        """

    def _funnel_sql(self) -> str:
        """Like :meth:`_aggregates_sql`, for the funnel: sessions per window and stage."""
        return f"""
            WITH new_sessions AS (
                INSERT INTO {self.t("click_funnel_sessions")} (window_start, stage, session_id)
                SELECT {_ts("window_ms")}, k1, member FROM pg_temp.spotlake_batch_members WHERE kind = 'funnel'
                ON CONFLICT DO NOTHING RETURNING window_start, stage
            ), sessions AS (
                SELECT window_start, stage, count(*) AS added FROM new_sessions GROUP BY 1, 2
            )
            INSERT INTO {self.t("click_funnel")} AS f (window_start, stage, events, sessions, last_batch_id,
                                                      updated_at)
            SELECT c.window_start, c.stage, c.events, COALESCE(s.added, 0), %(batch_id)s, clock_timestamp()
            FROM (SELECT {_ts("window_ms")} AS window_start, stage, events FROM pg_temp.spotlake_batch_funnel) AS c
            LEFT JOIN sessions AS s USING (window_start, stage)
            ON CONFLICT (window_start, stage) DO UPDATE SET
                events = f.events + EXCLUDED.events, sessions = f.sessions + EXCLUDED.sessions,
                last_batch_id = EXCLUDED.last_batch_id, updated_at = EXCLUDED.updated_at
        """

    def _prune_final_windows(self, cur: Any, final_ms: int) -> None:
        """A final window (starting at or before ``final_ms``) can get no more counted events, so
        its distinct sets are no longer needed."""
        horizon = _dt(final_ms)
        for table in ("click_window_users", "click_window_sessions", "click_funnel_sessions"):
            cur.execute(f"DELETE FROM {self.t(table)} WHERE window_start <= %s", (horizon,))


def committed_offsets(requested: str, committed: Any) -> str:
    """A ``committed`` reset's starting offsets (Spark's JSON, every partition) brought up to the sink's
    offsets now: each partition at the sink's next offset when it has one, else as requested."""
    offsets = json.loads(requested)
    now = committed if isinstance(committed, dict) else json.loads(committed or "{}")
    for topic, parts in offsets.items():
        for partition in parts:
            if str(partition) in now.get(topic, {}):
                parts[partition] = int(now[topic][str(partition)])
    return json.dumps(offsets, separators=(",", ":"))


def _ts(column: str) -> str:
    """SQL: epoch milliseconds in ``column`` as an exact timestamptz."""
    return f"(timestamptz 'epoch' + {column} * interval '1 millisecond')"


def _dt(ms: int | None) -> datetime | None:
    return to_datetime(ms) if ms is not None else None


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return bytes(value)


def _max_or_none(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _merge_offsets(previous: dict[str, Any], batch: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    merged = {topic: {str(p): int(o) for p, o in parts.items()} for topic, parts in previous.items()}
    for topic, parts in batch.items():
        target = merged.setdefault(topic, {})
        for partition, offset in parts.items():
            target[str(partition)] = max(int(offset), target.get(str(partition), 0))
    return merged
