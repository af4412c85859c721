"""Keep a click stream running as a Livy batch on its pool: the supervisor's logic.

:meth:`StreamSupervisor.supervise` is one idempotent step (the DAG runs it every
minute), testable without Airflow:

1. check that the stream's topics exist on Kafka (:class:`TopicMissing` names the
   topic and the bootstrap servers otherwise), and bring the sink's schema up to date;
2. look at the stream's job (key: the stream name) and decide:

   - its batch is live: nothing to do (``RUNNING``);
   - its cluster does not answer but is not declared dead: wait for the fleet's health
     checks (``WAITING``): a second batch must never run on the same checkpoint;
   - its batch ended (dead, killed, or even success), Livy lost it, or its cluster is
     DEAD/TERMINATED or was re-queued by the fleet: restart it, from its checkpoint, on
     the pool's READY cluster (``RESTARTED``);
   - its cluster is DRAINING and the pool has a READY replacement: stop the batch, then
     start it on the replacement (``MOVED``);
   - no job yet: start it (``STARTED``);

   every restart and move counts against the restart budget (``restarts`` per ``per``);
   when it is spent the supervisor does not restart, records ``BACKED_OFF`` and raises
   :class:`StreamBackedOff`, every run, until older restarts age out;
3. report the lag (Kafka end offsets minus the offsets committed with the last
   micro-batch in the sink's ``stream_progress``), the last committed batch and the
   watermark, in its report and in the stream's status record in the registry. The
   stream's one query writes the lake tables in the same micro-batch as the aggregates,
   so this is the lag of every output.

A batch that ended needs nothing more; before a restart off a lost or draining cluster the
previous batch is deleted (asked of its Livy; a dead cluster cannot answer). A driver that
outlives that (Livy lost it, its cluster only looked dead) is fenced out of every sink by
the job itself: a newer attempt's claim takes the sink's progress
row, and every write of a micro-batch, lake commits included, happens under that row's
lock after checking the owner (spark_jobs.clickstream.sink).

Submission reuses :func:`spotlake.jobs.submit_or_reconnect`, so two supervisors that
race still start one batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from spark_jobs.clickstream.kafka_security import Credentials, KafkaSecurity, read_credentials
from spark_jobs.common.contract import ERROR_MARK, encode_job, last_marked
from spotlake import sink_schema
from spotlake.artifacts import JobArtifacts
from spotlake.errors import ConfigError, SpotlakeError
from spotlake.fleet import span, utc_now
from spotlake.jobs import BatchClient, NoReadyCluster, Submission, submit_or_reconnect
from spotlake.registry import ClusterState, Job, JobState, Registry, StaleState
from spotlake.stream_status import Restart, StreamState, StreamStatus, StreamStatusStore
from spotlake.streaming import STREAM_SPARK_CONF, StreamConfig

log = logging.getLogger(__name__)

TERMINAL = ("success", "dead", "killed", "error")
GONE = (ClusterState.DEAD, ClusterState.TERMINATED)
STOP_TIMEOUT_S = 90.0


class TopicMissing(ConfigError):
    """A topic of the stream does not exist on its Kafka cluster."""


class KafkaUnreachable(SpotlakeError):
    """The stream's Kafka brokers did not answer."""


class StreamBackedOff(SpotlakeError):
    """The stream's restart budget is spent; the supervisor will not restart it for now."""


# ------------------------------------------------------------------ collaborators
class KafkaProbe(Protocol):
    bootstrap: str

    def check_topics(self, stream: str, topics: tuple[str, ...]) -> dict[str, int]: ...

    def end_offsets(self, partitions: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]]: ...


class SinkProbe(Protocol):
    def ensure_schema(self) -> list[str]: ...

    def progress(self, query_name: str) -> Progress | None: ...


class BatchControl(Protocol):
    def probe(self, batch_id: int) -> BatchProbe: ...

    def error_line(self, batch_id: int) -> str: ...

    def delete(self, batch_id: int) -> None: ...


@dataclass(frozen=True)
class BatchProbe:
    """What Livy says of a batch: ``state`` (Livy's), or ``lost`` (unknown), or ``unreachable``."""

    state: str
    detail: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Progress:
    """The aggregates query's row of ``stream_progress``."""

    last_batch_id: int
    committed_at: str
    watermark: str
    offsets: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Lag:
    total: int
    by_partition: dict[str, int]


@dataclass(frozen=True)
class Assessment:
    """What the supervisor makes of the stream's job: ``kind`` is live, wait, start, restart or move."""

    kind: str
    cause: str = ""
    reason: str = ""
    livy_state: str = ""


@dataclass
class SupervisionReport:
    stream: str
    state: str
    action: str
    job: Job | None = None
    lag: Lag | None = None
    progress: Progress | None = None
    migrations: list[str] = field(default_factory=list)
    restarts_in_window: int = 0
    reason: str = ""

    def lines(self) -> list[str]:
        job = self.job
        where = (f"batch {job.batch_id} on cluster {job.cluster_id} (attempt {job.attempt})"
                 if job is not None else "no batch")
        lines = [f"stream {self.stream}: {self.state} ({self.action}): {where}"]
        if self.reason:
            lines.append(f"stream {self.stream}: {self.reason}")
        if self.migrations:
            lines.append(f"stream {self.stream}: applied sink migrations {', '.join(self.migrations)}")
        if self.progress is not None:
            lines.append(
                f"stream {self.stream}: last committed micro-batch {self.progress.last_batch_id} at "
                f"{self.progress.committed_at or '-'}, watermark {self.progress.watermark or '-'}"
            )
        else:
            lines.append(f"stream {self.stream}: no micro-batch committed yet")
        if self.lag is not None:
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.lag.by_partition.items()))
            lines.append(f"stream {self.stream}: lag {self.lag.total} records ({parts})")
        lines.append(f"stream {self.stream}: {self.restarts_in_window} restart(s) within the budget's window")
        return lines

    def to_dict(self) -> dict[str, Any]:
        job = self.job
        return {
            "stream": self.stream,
            "state": self.state,
            "action": self.action,
            "cluster": job.cluster_id if job else "",
            "batch_id": job.batch_id if job else -1,
            "attempt": job.attempt if job else 0,
            "last_batch_id": self.progress.last_batch_id if self.progress else -1,
            "committed_at": self.progress.committed_at if self.progress else "",
            "watermark": self.progress.watermark if self.progress else "",
            "lag": self.lag.total if self.lag else -1,
            "restarts_in_window": self.restarts_in_window,
            "reason": self.reason,
        }


# --------------------------------------------------------------- the supervisor
class StreamSupervisor:
    def __init__(
        self,
        stream: StreamConfig,
        registry: Registry,
        statuses: StreamStatusStore,
        kafka: KafkaProbe,
        sink: SinkProbe,
        client_for: Callable[[str], BatchClient],
        control_for: Callable[[str], BatchControl],
        publish: Callable[[], JobArtifacts],
        clock: Callable[[], datetime] = utc_now,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.stream = stream
        self.registry = registry
        self.statuses = statuses
        self.kafka = kafka
        self.sink = sink
        self.client_for = client_for
        self.control_for = control_for
        self.publish = publish
        self.clock = clock
        self.stop_timeout_s = stop_timeout_s

    # ------------------------------------------------------------------ step
    def supervise(self) -> SupervisionReport:
        stream = self.stream
        partitions = self.kafka.check_topics(stream.name, stream.topics)
        migrations = self.sink.ensure_schema()
        self.statuses.require_table()
        status = self.statuses.get(stream.name) or StreamStatus(stream.name)
        now = self.clock()
        job = self.registry.get_job(stream.job_key)
        assessment = self.assess(job)
        recent = status.recent_restarts(now, stream.restart_budget.per)
        report = SupervisionReport(stream.name, "", assessment.kind, job, migrations=migrations,
                                   restarts_in_window=len(recent), reason=assessment.reason)
        if assessment.kind == "live":
            report.state = StreamState.RUNNING
        elif assessment.kind == "wait":
            report.state = StreamState.WAITING
        else:
            budget = stream.restart_budget
            if assessment.kind in ("restart", "move") and len(recent) >= budget.restarts:
                report.state = StreamState.BACKED_OFF
                oldest = min(recent, key=lambda r: r.at)
                report.reason = (
                    f"{len(recent)} restarts within {span(budget.per)} (restart_budget {budget.restarts} per "
                    f"{span(budget.per)}): not restarting until {oldest.at} is {span(budget.per)} old; "
                    f"the last: {recent[-1].cause}: {recent[-1].reason}; now: {assessment.reason}"
                )
                self._observe(report, partitions)
                self._save(status, report, now, assessment)
                for line in report.lines():
                    log.error("%s", line)
                raise StreamBackedOff(f"stream {stream.name}: {report.reason}")
            if assessment.kind == "move" and job is not None:
                self._stop(job)
            job = self._retire(job, assessment)
            try:
                submission = self._submit(job)
            except NoReadyCluster as exc:
                report.state, report.reason = StreamState.WAITING, f"{assessment.reason}; {exc}"
                self._observe(report, partitions)
                self._save(status, report, now, Assessment("wait", livy_state="no cluster"))
                for line in report.lines():
                    log.warning("%s", line)
                return report
            report.job = submission.job
            report.state = {"start": StreamState.STARTED, "restart": StreamState.RESTARTED,
                            "move": StreamState.MOVED}[assessment.kind]
            if submission.reconnected:
                report.state, report.reason = StreamState.RUNNING, "another run had just started it"
            elif assessment.kind != "start":
                status.restarts.append(Restart(now.isoformat(timespec="seconds"), assessment.cause,
                                               assessment.reason[:500]))
                report.restarts_in_window += 1
        self._observe(report, partitions)
        self._save(status, report, now, assessment)
        for line in report.lines():
            log.info("%s", line)
        return report

    # -------------------------------------------------------------- decision
    def assess(self, job: Job | None) -> Assessment:
        if job is None:
            return Assessment("start", "first start", "the stream has no job yet")
        if job.state == JobState.REQUEUED:
            return Assessment("restart", "cluster lost", job.reason or "the fleet re-queued the stream's job")
        if job.state in (JobState.FAILED, JobState.SUCCEEDED):
            return Assessment("restart", "batch ended", job.reason or f"the job is {job.state}")
        if job.state == JobState.QUEUED or job.batch_id < 0:
            return Assessment("start", "submission under way", "another run is submitting the stream")
        cluster = self.registry.get_cluster(job.pool, job.cluster_id)
        if cluster is None or cluster.state in GONE:
            what = f"{cluster.state}: {cluster.reason}" if cluster else "gone from the registry"
            return Assessment("restart", "cluster lost", f"cluster {job.cluster_id} is {what}")
        control = self.control_for(job.endpoint)
        probe = control.probe(job.batch_id)
        if probe.state == "unreachable":
            return Assessment(
                "wait", "cluster unreachable",
                f"Livy at {job.endpoint} does not answer ({probe.detail}); cluster {job.cluster_id} is still "
                f"{cluster.state}: waiting for the fleet's health checks before moving the stream",
            )
        if probe.state == "lost":
            return Assessment("restart", "batch lost", f"Livy at {job.endpoint} no longer knows batch "
                              f"{job.batch_id} ({probe.detail})")
        if probe.terminal:
            error = control.error_line(job.batch_id)
            return Assessment("restart", f"batch {probe.state}",
                              f"batch {job.batch_id} on {job.cluster_id} ended '{probe.state}': "
                              f"{error or 'no SPOTLAKE_ERROR line in its log'}", probe.state)
        if cluster.state == ClusterState.DRAINING:
            ready = self.registry.ready_cluster(job.pool)
            if ready is not None and ready.cluster_id != cluster.cluster_id:
                return Assessment("move", "cluster draining",
                                  f"cluster {cluster.cluster_id} is draining; moving to {ready.cluster_id}",
                                  probe.state)
        return Assessment("live", livy_state=probe.state, reason=f"batch {job.batch_id} is {probe.state}")

    # --------------------------------------------------------------- actions
    def _stop(self, job: Job) -> None:
        """Delete the batch and wait until Livy reports it ended: two runs never share a checkpoint."""
        control = self.control_for(job.endpoint)
        control.delete(job.batch_id)
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline:
            probe = control.probe(job.batch_id)
            if probe.terminal or probe.state == "lost":
                return
            time.sleep(1.0)
        raise SpotlakeError(
            f"stream {job.job_key}: batch {job.batch_id} on {job.cluster_id} did not stop within "
            f"{self.stop_timeout_s:.0f} s of its deletion; not starting a second one"
        )

    def _retire(self, job: Job | None, assessment: Assessment) -> Job | None:
        """Mark a SUBMITTED job as ended so that submit_or_reconnect claims a new attempt."""
        if job is None or job.state != JobState.SUBMITTED or job.batch_id < 0:
            return job
        moved = assessment.kind == "move" or assessment.cause == "cluster lost"
        if moved:
            # Its driver may still run somewhere: ask its Livy to delete it (a dead cluster cannot
            # answer; the sink fences the driver out anyway once the new attempt claims).
            self._delete_quietly(job)
        state = JobState.REQUEUED if moved else JobState.FAILED
        try:
            changes: dict[str, Any] = {"state": state, "reason": assessment.reason[:1000]}
            if moved:
                changes["moves"] = job.moves + 1
            return self.registry.update_job(job, **changes)
        except StaleState:
            return self.registry.get_job(job.job_key)

    def _delete_quietly(self, job: Job) -> None:
        try:
            self.control_for(job.endpoint).delete(job.batch_id)
        except Exception as exc:  # noqa: BLE001 - a dead cluster cannot answer; that is expected
            log.info("old batch %s on %s not deleted: %s", job.batch_id, job.endpoint, exc)

    def _submit(self, previous: Job | None) -> Submission:
        stream = self.stream
        published = self.publish()
        attempt = (previous.attempt if previous else 0) + 1
        bootstrap = self.kafka.bootstrap

        def build_args(run_id: str) -> list[str]:
            document = stream.job_document(run_id, attempt, bootstrap, region=self.registry.client.meta.region_name)
            return ["--job", encode_job(document)]

        request = published.request(stream.job_key, stream.pool, name=f"spotlake-stream-{stream.name}",
                                    conf={**STREAM_SPARK_CONF, **stream.spark_conf})
        submission = submit_or_reconnect(self.registry, request, self.client_for, build_args=build_args)
        verb = "reconnected to" if submission.reconnected else "submitted"
        log.info("stream %s: %s batch %s on cluster %s (%s), attempt %s", stream.name, verb,
                 submission.job.batch_id, submission.job.cluster_id, submission.job.endpoint, submission.job.attempt)
        return submission

    # ------------------------------------------------------------------- lag
    def _observe(self, report: SupervisionReport, partitions: dict[str, int]) -> None:
        report.progress = self.sink.progress(self.stream.query_name)
        ends = self.kafka.end_offsets(partitions)
        report.lag = self.lag(ends, report.progress.offsets if report.progress is not None else None)

    def lag(self, ends: dict[str, dict[int, tuple[int, int]]], committed: dict[str, dict[str, int]] | None) -> Lag:
        """Records between ``committed`` (a query's offsets; None: it has committed nothing) and Kafka's ``ends``."""
        from_latest = self.stream.starting_offsets == "latest"
        by_partition: dict[str, int] = {}
        for topic, parts in sorted(ends.items()):
            for partition, (low, high) in sorted(parts.items()):
                done = (committed or {}).get(topic, {}).get(str(partition))
                if done is None:
                    done = high if from_latest and committed is None else low
                by_partition[f"{topic}/{partition}"] = max(0, high - max(int(done), low))
        return Lag(sum(by_partition.values()), by_partition)

    # ---------------------------------------------------------------- status
    def _save(self, status: StreamStatus, report: SupervisionReport, now: datetime,
              assessment: Assessment) -> None:
        job = report.job
        status.state = report.state
        status.pool = self.stream.pool
        status.reason = report.reason[:1000]
        status.checked_at = now.isoformat(timespec="seconds")
        status.restarts = status.recent_restarts(now, self.stream.restart_budget.per)
        if job is not None:
            status.cluster_id, status.batch_id, status.attempt = job.cluster_id, job.batch_id, job.attempt
        status.livy_state = assessment.livy_state if assessment.kind in ("live", "wait") else "submitted"
        if report.progress is not None:
            status.last_batch_id = report.progress.last_batch_id
            status.committed_at = report.progress.committed_at
            status.watermark = report.progress.watermark
        if report.lag is not None:
            status.lag, status.lag_by_partition = report.lag.total, dict(report.lag.by_partition)
        try:
            self.statuses.put(status)
        except StaleState:
            log.warning("stream %s: its status changed under this run; not overwritten", status.stream)


# ------------------------------------------------------------ real collaborators
class KafkaTopics:
    """:class:`KafkaProbe` over confluent-kafka (metadata and watermark offsets only)."""

    def __init__(self, bootstrap: str, conn_id: str = "", timeout: float = 10.0,
                 security: KafkaSecurity | None = None, region: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.conn_id = conn_id
        self.timeout = timeout
        self.security = security or KafkaSecurity()
        self.region = region

    @cached_property
    def _credentials(self) -> Credentials | None:
        if not self.security.needs_secret:
            return None
        assert self.security.secret_id is not None
        return read_credentials(self.security.secret_id, f"Kafka secret '{self.security.secret_id}'", ConfigError,
                                self.region)

    def _settings(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
            "log_level": 0,
            **self.security.librdkafka_settings(self._credentials, self.region),
        }

    def check_topics(self, stream: str, topics: tuple[str, ...]) -> dict[str, int]:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        via = f" (Airflow connection '{self.conn_id}')" if self.conn_id else ""
        try:
            metadata = AdminClient(self._settings()).list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise KafkaUnreachable(
                f"stream {stream}: Kafka at {self.bootstrap}{via} did not answer within {self.timeout:.0f} s "
                f"({exc.args[0] if exc.args else exc}) — check the brokers and the connection's bootstrap.servers"
            ) from None
        existing = {name for name, meta in metadata.topics.items() if meta.error is None}
        missing = [t for t in topics if t not in existing]
        if missing:
            shown = ", ".join(sorted(t for t in existing if not t.startswith("__"))[:20]) or "none"
            raise TopicMissing(
                f"stream {stream}: topic {', '.join(repr(t) for t in missing)} does not exist on Kafka at "
                f"{self.bootstrap}{via}; existing topics: {shown} — create it, or fix streams.{stream}.topics "
                "in config/streaming.yaml"
            )
        return {t: len(metadata.topics[t].partitions) for t in topics}

    def end_offsets(self, partitions: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self._settings(), "group.id": "spotlake-stream-supervisor",
                             "enable.auto.commit": False})
        try:
            return {
                topic: {
                    p: tuple(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout))
                    for p in range(count)
                }
                for topic, count in partitions.items()
            }
        finally:
            consumer.close()


class SinkDatabase:
    """:class:`SinkProbe` over a DB-API connection factory (Airflow's PostgresHook)."""

    def __init__(self, connect: Callable[[], Any], schema: str) -> None:
        self.connect = connect
        self.schema = schema

    def ensure_schema(self) -> list[str]:
        connection = self.connect()
        try:
            return sink_schema.apply(connection, self.schema)
        finally:
            connection.close()

    def progress(self, query_name: str) -> Progress | None:
        quoted = sink_schema.quote_schema(self.schema)
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(
                f"SELECT last_batch_id, committed_at, watermark, offsets FROM {quoted}.stream_progress "
                "WHERE query_name = %s",
                (query_name,),
            )
            row = cursor.fetchone()
            connection.rollback()
        finally:
            connection.close()
        if row is None or int(row[0]) < 0:
            return None
        offsets = row[3] if isinstance(row[3], dict) else json.loads(row[3] or "{}")
        return Progress(
            last_batch_id=int(row[0]),
            committed_at=row[1].isoformat(timespec="milliseconds") if row[1] else "",
            watermark=row[2].isoformat(timespec="milliseconds") if row[2] else "",
            offsets={t: {str(p): int(o) for p, o in parts.items()} for t, parts in offsets.items()},
        )


class LivyBatchControl:
    """:class:`BatchControl` over Livy's REST API at one endpoint."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def probe(self, batch_id: int) -> BatchProbe:
        import requests

        try:
            response = requests.get(f"{self.endpoint}/batches/{batch_id}/state", timeout=self.timeout)
        except requests.RequestException as exc:
            return BatchProbe("unreachable", f"{type(exc).__name__}")
        if response.status_code == 404:
            return BatchProbe("lost", "HTTP 404")
        if response.status_code != 200:
            return BatchProbe("unreachable", f"HTTP {response.status_code}")
        return BatchProbe(str(response.json().get("state", "")))

    def error_line(self, batch_id: int) -> str:
        import requests

        try:
            response = requests.get(f"{self.endpoint}/batches/{batch_id}/log", params={"from": 0, "size": 2000},
                                    timeout=self.timeout)
            lines = response.json().get("log", []) if response.status_code == 200 else []
        except (requests.RequestException, ValueError):
            return ""
        return last_marked(lines, ERROR_MARK) or ""

    def delete(self, batch_id: int) -> None:
        import requests

        response = requests.delete(f"{self.endpoint}/batches/{batch_id}", timeout=self.timeout)
        if response.status_code not in (200, 404):
            raise SpotlakeError(f"Livy at {self.endpoint} refused to delete batch {batch_id}: "
                                f"HTTP {response.status_code} {response.text[:200]}")
