"""The click stream's PostgreSQL sink: one transaction per micro-batch, exactly once.

:meth:`PostgresSinkWriter.write` commits a micro-batch's dead letters, late events,
distinct-set members, aggregates and funnel counts together with the batch id in
``stream_progress``, in ONE transaction that starts by locking the query's
``stream_progress`` row:

- a batch id at or below ``last_batch_id`` was committed before (Spark replays the
  last batch after a restart): the transaction ends without writing anything;
- a ``run_id`` in that row other than this run's means a newer run of the stream
  took over (the supervisor restarted it elsewhere): :class:`StreamFencedError`, so
  a stale run can never write;
- distinct counts stay exact across batches: each member (user or session of a
  window, page and event type; session of a window and funnel stage) is inserted
  into its set table with ``ON CONFLICT DO NOTHING RETURNING``, and only the rows
  actually inserted add to the counts;
- the watermark (latest event time committed minus the delay) is read under the
  lock and handed to the batch's computation, then moved forward in the same
  transaction; so "late" is decided once per batch, the same way on a replay.

The module has no Spark dependency: the Spark job computes :class:`BatchRows` from
a micro-batch, the Python baseline of ``bench/streaming_bench.py`` from a poll.
It needs ``psycopg2``, which every batch brings in its Python archive (spark_jobs/runtime.py).
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from spark_jobs.database_secret import Endpoint, read_database_secret
from spark_jobs.errors import StreamFencedError, StreamingError

LOG = logging.getLogger(__name__)
UTC = timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11; EMR runs 3.9
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PAGE_SIZE = 2000
RETRIES = 3
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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


def resolve_target(secret_id: str, stream: str, region: str | None = None,
                   endpoint: Endpoint | None = None) -> PostgresTarget:
    """Read the sink's secret from Secrets Manager (in ``region``) and check its shape, never echoing values."""
    secret = read_database_secret(
        secret_id, f"stream {stream}: sink secret '{secret_id}'", StreamingError,
        "fix sink.secret_id in config/streaming.yaml", database_required=True, region=region, endpoint=endpoint,
    )
    return PostgresTarget(secret.host, secret.port, str(secret.database), secret.username, secret.password)


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
    dead_letters: list[tuple] = field(default_factory=list)
    late_events: list[tuple] = field(default_factory=list)
    window_counts: list[tuple] = field(default_factory=list)
    members: list[tuple] = field(default_factory=list)
    funnel_counts: list[tuple] = field(default_factory=list)

    @property
    def counted_events(self) -> int:
        return sum(int(row[3]) for row in self.window_counts)


@dataclass(frozen=True)
class BatchResult:
    batch_id: int
    committed: bool
    input_rows: int = 0
    counted_events: int = 0
    late_events: int = 0
    dead_letters: int = 0
    watermark_ms: int | None = None


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
        retries: int = RETRIES,
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
        self.retries = retries

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
            try:
                return psycopg2.connect(
                    host=target.host, port=target.port, dbname=target.database, user=target.username,
                    password=target.password, connect_timeout=10, application_name=f"spotlake-{stream}",
                )
            except psycopg2.OperationalError as exc:
                first = (str(exc).strip().splitlines() or ["connection failed"])[0]
                raise StreamingError(
                    f"stream {stream}: cannot connect to the sink PostgreSQL at {target.address}: {first} — "
                    "check host, port and credentials in the sink secret and that the database accepts "
                    "connections from the cluster"
                ) from None

        return cls(connect, **kwargs)

    # ------------------------------------------------------------ connection
    def t(self, table: str) -> str:
        return f'"{self.schema}"."{table}"'

    @property
    def connection(self) -> Any:
        if self._connection is None or getattr(self._connection, "closed", 0):
            self._connection = self._connect()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def _transient(self, exc: BaseException) -> bool:
        try:
            import psycopg2
        except ImportError:
            return False
        return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))

    # ----------------------------------------------------------------- claim
    def claim(self) -> int:
        """Make this run the query's only writer; return the last committed batch id (-1: none)."""
        conn = self.connection
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {self.t('stream_progress')} (query_name, run_id) VALUES (%s, %s) "
                    "ON CONFLICT (query_name) DO UPDATE SET run_id = EXCLUDED.run_id, claimed_at = now() "
                    "RETURNING last_batch_id",
                    (self.query_name, self.run_id),
                )
                last = int(cur.fetchone()[0])
            conn.commit()
        except Exception as exc:
            conn.rollback()
            if type(exc).__name__ in ("UndefinedTable", "InvalidSchemaName"):
                raise StreamingError(
                    f"query {self.query_name}: the sink schema '{self.schema}' has no stream tables — apply "
                    "the migrations first (the streaming supervisor does: spotlake.sink_schema.apply)"
                ) from None
            raise
        LOG.info("query %s claimed by run %s; last committed batch %s", self.query_name, self.run_id, last)
        return last

    # ----------------------------------------------------------------- write
    def write(self, batch_id: int, compute: Callable[[int | None, int | None], BatchRows]) -> BatchResult:
        """Commit batch ``batch_id`` unless it was committed before.

        ``compute(watermark_ms, final_before_ms)`` returns the batch's rows given the watermark
        in force (None before the first event) and the final-window horizon (windows starting
        at or before it take no counted event; None: none yet); it runs inside the
        transaction, after the lock.
        Connection failures are retried (reconnecting) up to ``retries`` times.
        """
        for attempt in range(1, self.retries + 1):
            try:
                return self._write_once(batch_id, compute)
            except Exception as exc:
                self._rollback_quietly()
                if not self._transient(exc) or attempt == self.retries:
                    raise
                LOG.warning("query %s batch %s: sink connection failed (%s); retrying", self.query_name,
                            batch_id, type(exc).__name__)
                self.close()
                time.sleep(min(2.0**attempt, 10.0))
        raise AssertionError("unreachable")

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

    def _write_once(self, batch_id: int, compute: Callable[[int | None, int | None], BatchRows]) -> BatchResult:
        started = datetime.now(UTC)
        conn = self.connection
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT run_id, last_batch_id, max_event_time, watermark, offsets, final_before "
                f"FROM {self.t('stream_progress')} WHERE query_name = %s FOR UPDATE",
                (self.query_name,),
            )
            row = cur.fetchone()
            if row is None:
                raise StreamingError(
                    f"query {self.query_name}: no stream_progress row; the run must claim the query first"
                )
            owner, last_batch, max_event_time, watermark, offsets, final_before = row
            if owner != self.run_id:
                raise StreamFencedError(
                    f"query {self.query_name}: run {owner} took over the sink; this run ({self.run_id}) stops "
                    f"before batch {batch_id}"
                )
            if batch_id <= last_batch:
                conn.rollback()
                LOG.info("query %s batch %s was committed before (last %s): nothing to do", self.query_name,
                         batch_id, last_batch)
                return BatchResult(batch_id, committed=False)
            watermark_ms = to_millis(watermark) if watermark is not None else None
            final_ms = self._final_before(watermark_ms, to_millis(final_before) if final_before is not None else None)
            clock = time.monotonic()
            rows = compute(watermark_ms, final_ms)
            computed = time.monotonic()
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
            cur.execute(
                f"INSERT INTO {self.t('stream_batches')} (query_name, batch_id, run_id, input_rows, "
                "valid_events, counted_events, late_events, dead_letters, watermark, offsets, started_at, "
                "committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())",
                (self.query_name, batch_id, self.run_id, rows.input_rows, rows.valid_events,
                 rows.counted_events, late_ids, len(rows.dead_letters), _dt(watermark_ms), json.dumps(merged),
                 started),
            )
        conn.commit()
        LOG.info(
            "query %s batch %s committed: %s records, %s counted, %s late, %s dead letters, watermark %s "
            "(computed in %.2f s, written in %.2f s)",
            self.query_name, batch_id, rows.input_rows, rows.counted_events, late_ids, len(rows.dead_letters),
            _dt(new_watermark), computed - clock, time.monotonic() - computed,
        )
        return BatchResult(batch_id, True, rows.input_rows, rows.counted_events, late_ids,
                           len(rows.dead_letters), new_watermark)

    def _write_rows(self, cur: Any, batch_id: int, rows: BatchRows, watermark_ms: int | None,
                    final_ms: int | None) -> int:
        from psycopg2.extras import execute_values

        if rows.dead_letters:
            execute_values(
                cur,
                f"INSERT INTO {self.t('click_dead_letters')} (topic, kafka_partition, kafka_offset, "
                "kafka_timestamp, key, value, reason, detail, batch_id) VALUES %s ON CONFLICT DO NOTHING",
                [(t, p, o, _dt(ts), _bytes(k), _bytes(v), reason, detail, batch_id)
                 for t, p, o, ts, k, v, reason, detail in rows.dead_letters],
                page_size=PAGE_SIZE,
            )
        if rows.late_events and watermark_ms is not None:
            execute_values(
                cur,
                f"INSERT INTO {self.t('click_late_events')} (topic, kafka_partition, kafka_offset, "
                "kafka_timestamp, event_id, event_time, window_start, page, event_type, user_id, session_id, "
                "watermark, lateness_ms, counted, batch_id) VALUES %s ON CONFLICT DO NOTHING",
                [(t, p, o, _dt(ts), eid, _dt(et), _dt(ws), page, etype, user, session, _dt(watermark_ms),
                  watermark_ms - et, self.late_policy == "count" and (final_ms is None or ws > final_ms), batch_id)
                 for t, p, o, ts, eid, et, ws, page, etype, user, session in rows.late_events],
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
        for table, data in (("spotlake_batch_members", rows.members), ("spotlake_batch_counts", rows.window_counts),
                            ("spotlake_batch_funnel", rows.funnel_counts)):
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
                INSERT INTO {self.t('click_window_users')} (window_start, page, event_type, user_id)
                SELECT {_ts('window_ms')}, k1, k2, member FROM pg_temp.spotlake_batch_members WHERE kind = 'user'
                ON CONFLICT DO NOTHING RETURNING window_start, page, event_type
            ), new_sessions AS (
                INSERT INTO {self.t('click_window_sessions')} (window_start, page, event_type, session_id)
                SELECT {_ts('window_ms')}, k1, k2, member FROM pg_temp.spotlake_batch_members WHERE kind = 'session'
                ON CONFLICT DO NOTHING RETURNING window_start, page, event_type
            ), users AS (
                SELECT window_start, page, event_type, count(*) AS added FROM new_users GROUP BY 1, 2, 3
            ), sessions AS (
                SELECT window_start, page, event_type, count(*) AS added FROM new_sessions GROUP BY 1, 2, 3
            )
            INSERT INTO {self.t('click_aggregates')} AS a (window_start, page, event_type, events, users, sessions,
                                                          late_events, last_batch_id, updated_at)
            SELECT c.window_start, c.page, c.event_type, c.events, COALESCE(u.added, 0), COALESCE(s.added, 0),
                   c.late_events, %(batch_id)s, clock_timestamp()
            FROM (SELECT {_ts('window_ms')} AS window_start, page, event_type, events, late_events
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
                INSERT INTO {self.t('click_funnel_sessions')} (window_start, stage, session_id)
                SELECT {_ts('window_ms')}, k1, member FROM pg_temp.spotlake_batch_members WHERE kind = 'funnel'
                ON CONFLICT DO NOTHING RETURNING window_start, stage
            ), sessions AS (
                SELECT window_start, stage, count(*) AS added FROM new_sessions GROUP BY 1, 2
            )
            INSERT INTO {self.t('click_funnel')} AS f (window_start, stage, events, sessions, last_batch_id,
                                                      updated_at)
            SELECT c.window_start, c.stage, c.events, COALESCE(s.added, 0), %(batch_id)s, clock_timestamp()
            FROM (SELECT {_ts('window_ms')} AS window_start, stage, events FROM pg_temp.spotlake_batch_funnel) AS c
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
