"""The stream supervisor: one idempotent step, :meth:`StreamSupervisor.supervise`.

It observes (Kafka, the sink, the registry, Livy, through the protocols below), asks the
decisions (:mod:`spotlake.stream_supervisor.decisions`) what to do, acts (stops, retires and
submits batches), and records the outcome in its report
(:mod:`spotlake.stream_supervisor.report`) and the stream's status record
(:mod:`spotlake.stream_status`). The package's docstring (:mod:`spotlake.stream_supervisor`)
describes the whole step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from spark_jobs.common.contract import encode_job
from spotlake.artifacts import JobArtifacts
from spotlake.errors import SpotlakeError
from spotlake.fleet import utc_now
from spotlake.jobs import BatchClient, NoReadyCluster, Submission, submit_or_reconnect
from spotlake.registry import ClusterState, Job, Registry, StaleState
from spotlake.stream_status import Restart, StreamState, StreamStatus, StreamStatusStore
from spotlake.stream_supervisor import decisions
from spotlake.stream_supervisor.decisions import Assessment, BatchProbe, Decision, ProbeFailure
from spotlake.stream_supervisor.report import Lag, Progress, SupervisionReport
from spotlake.streaming import STREAM_SPARK_CONF, StreamConfig

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 90.0


class StreamBackedOff(SpotlakeError):
    """The stream's restart budget is spent; the supervisor will not restart it for now."""


# ------------------------------------------------------------------ collaborators
class KafkaProbe(Protocol):
    """The stream's Kafka: ``check_topics`` raises TopicMissing or KafkaUnreachable
    (:mod:`spotlake.stream_supervisor.adapters`)."""

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
        budget = stream.restart_budget
        recent = status.recent_restarts(now, budget.per)
        report = SupervisionReport(
            stream.name,
            decisions.state_after(assessment),
            assessment.kind,
            job,
            migrations=migrations,
            restarts_in_window=len(recent),
            reason=assessment.reason,
        )
        if assessment.kind not in (Decision.LIVE, Decision.WAIT):
            if decisions.over_budget(assessment, recent, budget):
                report.state = StreamState.BACKED_OFF
                report.reason = decisions.backed_off_reason(assessment, recent, budget)
                self._observe(report, partitions)
                self._save(status, report, now, assessment)
                for line in report.lines():
                    log.error("%s", line)
                raise StreamBackedOff(f"stream {stream.name}: {report.reason}")
            if assessment.kind == Decision.MOVE and job is not None:
                self._stop(job)
            job = self._retire(job, assessment)
            try:
                submission = self._submit(job)
            except NoReadyCluster as exc:
                report.state, report.reason = StreamState.WAITING, f"{assessment.reason}; {exc}"
                self._observe(report, partitions)
                self._save(status, report, now, Assessment(Decision.WAIT, livy_state="no cluster"))
                for line in report.lines():
                    log.warning("%s", line)
                return report
            report.job = submission.job
            report.state = decisions.state_after(assessment, submission.reconnected)
            if submission.reconnected:
                report.reason = "another run had just started it"
            elif assessment.kind != Decision.START:
                status.restarts.append(Restart(now.isoformat(timespec="seconds"), assessment.cause, assessment.reason[:500]))
                report.restarts_in_window += 1
        self._observe(report, partitions)
        self._save(status, report, now, assessment)
        for line in report.lines():
            log.info("%s", line)
        return report

    # -------------------------------------------------------------- decision
    def assess(self, job: Job | None) -> Assessment:
        """Look at the job, then its cluster, then its batch, as far as the decisions need."""
        decided = decisions.assess_job(job)
        if decided is not None:
            return decided
        assert job is not None, "assess_job decides for a stream without a job"
        cluster = self.registry.get_cluster(job.pool, job.cluster_id)
        decided = decisions.assess_cluster(job, cluster)
        if decided is not None:
            return decided
        assert cluster is not None, "assess_cluster decides for a cluster the registry does not have"
        control = self.control_for(job.endpoint)
        probe = control.probe(job.batch_id)
        decided = decisions.assess_batch(job, cluster, probe, control.error_line(job.batch_id) if probe.terminal else "")
        if decided is not None:
            return decided
        replacement = self.registry.ready_cluster(job.pool) if cluster.state == ClusterState.DRAINING else None
        return decisions.assess_live_batch(job, cluster, probe, replacement)

    # --------------------------------------------------------------- actions
    def _stop(self, job: Job) -> None:
        """Delete the batch and wait until Livy reports it ended: two runs never share a checkpoint."""
        control = self.control_for(job.endpoint)
        control.delete(job.batch_id)
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline:
            probe = control.probe(job.batch_id)
            if probe.terminal or probe.state == ProbeFailure.LOST:
                return
            time.sleep(1.0)
        raise SpotlakeError(
            f"stream {job.job_key}: batch {job.batch_id} on {job.cluster_id} did not stop within "
            f"{self.stop_timeout_s:.0f} s of its deletion; not starting a second one"
        )

    def _retire(self, job: Job | None, assessment: Assessment) -> Job | None:
        """Mark a SUBMITTED job as ended so that submit_or_reconnect claims a new attempt."""
        changes = decisions.retirement(job, assessment)
        if job is None or changes is None:
            return job
        if assessment.requeue:
            # Its driver may still run somewhere: ask its Livy to delete it (a dead cluster cannot
            # answer; the sink fences the driver out anyway once the new attempt claims).
            self._delete_quietly(job)
        try:
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

        request = published.request(
            stream.job_key, stream.pool, name=f"spotlake-stream-{stream.name}", conf={**STREAM_SPARK_CONF, **stream.spark_conf}
        )
        submission = submit_or_reconnect(self.registry, request, self.client_for, build_args=build_args)
        verb = "reconnected to" if submission.reconnected else "submitted"
        log.info(
            "stream %s: %s batch %s on cluster %s (%s), attempt %s",
            stream.name,
            verb,
            submission.job.batch_id,
            submission.job.cluster_id,
            submission.job.endpoint,
            submission.job.attempt,
        )
        return submission

    # ------------------------------------------------------------------- lag
    def _observe(self, report: SupervisionReport, partitions: dict[str, int]) -> None:
        report.progress = self.sink.progress(self.stream.query_name)
        ends = self.kafka.end_offsets(partitions)
        report.lag = self.lag(ends, report.progress.offsets if report.progress is not None else None)

    def lag(self, ends: dict[str, dict[int, tuple[int, int]]], committed: dict[str, dict[str, int]] | None) -> Lag:
        """Records between ``committed`` (a query's offsets; None: it has committed nothing) and Kafka's ``ends``."""
        return decisions.lag(ends, committed, from_latest=self.stream.starting_offsets == "latest")

    # ---------------------------------------------------------------- status
    def _save(self, status: StreamStatus, report: SupervisionReport, now: datetime, assessment: Assessment) -> None:
        job = report.job
        status.state = report.state
        status.pool = self.stream.pool
        status.reason = report.reason[:1000]
        status.checked_at = now.isoformat(timespec="seconds")
        status.restarts = status.recent_restarts(now, self.stream.restart_budget.per)
        if job is not None:
            status.cluster_id, status.batch_id, status.attempt = job.cluster_id, job.batch_id, job.attempt
        status.livy_state = decisions.recorded_livy_state(assessment)
        if report.progress is not None:
            status.last_batch_id = report.progress.last_batch_id
            status.committed_at = report.progress.committed_at
            status.watermark = report.progress.watermark
            status.dead_letters_last_hour = report.progress.dead_letters_last_hour
        if report.lag is not None:
            status.lag, status.lag_by_partition = report.lag.total, dict(report.lag.by_partition)
            status.record_lag(now, report.lag.total)
        try:
            self.statuses.put(status)
        except StaleState:
            log.warning("stream %s: its status changed under this run; not overwritten", status.stream)
