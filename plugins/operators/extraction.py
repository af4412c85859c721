"""Extract one window of one pipeline into the lake's Iceberg tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from operators.links import (
    LAKE_TABLE_KEY,
    SNAPSHOT_KEY,
    LakeTableLink,
    LivyLogLink,
    SnapshotLink,
    lake_table_value,
    s3_console,
    snapshot_value,
)
from operators.livy_batch import NEXT_JOB, BatchFailed, OutcomeNotRecorded, PoolBatchOperator
from operators.livy_session import SessionStatementMixin
from spark_jobs.common.contract import encode_job
from spark_jobs.common.lake_state import LakeState, PipelineState, WindowRecord, iso, parse_iso, snapshot_job_key
from spotlake import artifacts, config, expressions
from spotlake.config import Pipeline
from spotlake.errors import ConfigError
from spotlake.fleet import span
from spotlake.jobs import BatchRequest
from spotlake.registry import Job
from spotlake.window_figures import timings_text, window_figures
from spotlake.windows import Window, job_key, window_for_run


@dataclass(frozen=True)
class Plan:
    """What the task's next batch does: the initial snapshot, or its window's planned range;
    ``note`` says how the range came about, for the line the job's start logs."""

    job_key: str
    kind: str
    record: WindowRecord | None = None
    note: str = ""


def extraction_document(
    cfg: config.PipelinesConfig, pipeline: config.Pipeline, registry: Any, job_key: str, kind: str, run_id: str
) -> dict[str, Any]:
    """The job document of ``spark_jobs/extraction/main.py`` for one job of ``pipeline`` (no window yet):
    secret references only, never a credential."""
    claimed = registry.get_job(job_key)
    return {
        "job_key": job_key,
        "attempt": claimed.attempt if claimed is not None and claimed.run_id == run_id else 1,
        "run_id": run_id,
        "pipeline": pipeline.name,
        "kind": kind,
        "source": pipeline.source.to_job(),
        "database": pipeline.database,
        "table": pipeline.table,
        "primary_key": list(pipeline.primary_key),
        "cursor": pipeline.cursor,
        "soft_delete": pipeline.soft_delete,
        "transforms": [t.to_job() for t in pipeline.transforms],
        "lake": cfg.lake.to_job(pipeline),
        "registry": {"prefix": registry.prefix, "region": registry.client.meta.region_name},
        "read": pipeline.read_job(),
    }


class ExtractWindowOperator(SessionStatementMixin, PoolBatchOperator):
    """Runs ``spark_jobs/extraction/main.py`` for the run's window of ``pipeline``.

    A window runs as a statement in one of the pool's long-lived Livy sessions
    (:mod:`operators.livy_session`) unless the pool's ``sessions.enabled`` is false; the initial
    snapshot, a long job, always runs as its own batch.

    While the pipeline's initial snapshot is not finished, the task first runs (or, if
    another run is already running it, reconnects to) the snapshot job, then its window.
    The window reads from the committed watermark (minus the lookback) to its interval's
    end, a range fixed in the registry the first time the window is planned, so a retry,
    a clear or a backfill reads the same range. The batch receives secret references
    only, never a credential.
    """

    template_fields = ("pipeline_name",)
    # The lake table, the snapshot the window committed, the Livy log (operators/links.py)
    operator_extra_links = (LakeTableLink(), SnapshotLink(), LivyLogLink())

    def __init__(self, *, pipeline_name: str, **kwargs: Any) -> None:
        self.pipeline_name = pipeline_name
        self._window: Window | None = None
        self._plan: Plan | None = None
        super().__init__(**kwargs)

    @cached_property
    def config(self) -> config.PipelinesConfig:
        return config.load()

    # (In the class body ``config`` is the property above, not the module: annotate with Pipeline.)
    @cached_property
    def pipeline(self) -> Pipeline:
        return self.config.get(self.pipeline_name)

    @cached_property
    def lake_state(self) -> LakeState:
        return LakeState(self.registry.client, self.registry.prefix)

    def window(self, context: Any) -> Window:
        if self._window is None:
            self._window = window_for_run(
                self.pipeline.schedule,
                self.pipeline.lookback,
                context.get("data_interval_start"),
                context.get("data_interval_end"),
                datetime.now(UTC),
            )
        return self._window

    # ----------------------------------------------------------------- plan
    def state(self, context: Any) -> PipelineState:
        return self.lake_state.ensure(self.pipeline.name, self.pipeline.initial_load, self.window(context).start)

    def plan(self, context: Any) -> Plan:
        """The next job of this task, from the pipeline's state as it is now."""
        state = self.state(context)
        if not state.phase.finished:
            resumes = (
                f"resumes after chunk {state.snapshot_chunks}, {state.snapshot_rows} rows committed"
                if state.snapshot_chunks
                else "from the first chunk"
            )
            return Plan(snapshot_job_key(self.pipeline.name), "snapshot", note=resumes)
        window = self.window(context)
        watermark = parse_iso(state.watermark) if state.watermark else None
        wanted = WindowRecord(
            pipeline=self.pipeline.name,
            window=window.label,
            job_key=job_key(self.pipeline.name, window),
            start=iso(window.start),
            end=iso(window.end),
            read_from=iso(window.read_from(watermark)),
            planned_at=iso(datetime.now(UTC)),
        )
        record = self.lake_state.plan_window(wanted)
        notes = [f"lookback {span(self.pipeline.lookback)}, committed watermark {state.watermark}"]
        if record is wanted:
            gap = window.start - watermark if watermark is not None else None
            if gap and gap.total_seconds() > 0:
                notes.append(f"covers {span(gap)} not yet committed before this window")
        else:
            notes = [f"the range planned at {record.planned_at}, read again"]
        to_read = parse_iso(record.end) - parse_iso(record.read_from)
        if to_read > self.pipeline.max_window:
            notes.append(
                f"{span(to_read)} to read, more than read.max_window ({span(self.pipeline.max_window)}): "
                f"read and committed in {-(-to_read // self.pipeline.max_window)} chunks"
            )
        return Plan(record.job_key, "window", record, "; ".join(notes))

    # ------------------------------------------------------------ execution
    def _submit_and_defer(self, context: Any, waiting_since: str = "") -> Any:
        self._plan = self.plan(context)
        if self._plan.kind == "window" and self.runs_in_session(context):
            return self._run_in_session(context, waiting_since)
        return super()._submit_and_defer(context, waiting_since)

    def start_line(self, job: Job, reconnected: bool, notes: tuple[str, ...] = ()) -> str:
        """The job's one start line, led by what it reads: the window (its data interval) and the
        range actually read (from ``read_from``, the lookback before the committed watermark, to the
        interval's end), or the initial snapshot."""
        runs = super().start_line(job, reconnected, notes)
        plan = self._plan
        source = f"{self.pipeline.database}.{self.pipeline.table}"
        if plan is None or plan.record is None:
            return f"initial snapshot of {source} ({plan.note if plan else 'resumable'}): {runs}"
        record = plan.record
        return (
            f"window {record.window} ({record.start} → {record.end}) of {source} reads {self.pipeline.cursor} "
            f"{record.read_from} → {record.end} ({plan.note}): {runs}"
        )

    def statement_job_key(self, context: Any) -> str:
        return (self._plan or self.plan(context)).job_key

    def statement_argv(self, context: Any, run_id: str) -> list[str]:
        return self.build_args(context, run_id)

    # -------------------------------------------------------------- request
    def build_request(self, context: Any) -> BatchRequest:
        # _submit_and_defer planned this submission's job just before
        self._plan = self._plan or self.plan(context)
        published = artifacts.publish("extraction", s3=self.s3)
        label = self._plan.job_key.rpartition("#")[2]
        return published.request(
            self._plan.job_key, self.pipeline.pool, name=f"spotlake-extract-{self.pipeline.name}-{label}", report=True
        )

    def job_document(self, context: Any, run_id: str) -> dict[str, Any]:
        plan = self._plan or self.plan(context)
        document = extraction_document(self.config, self.pipeline, self.registry, plan.job_key, plan.kind, run_id)
        if plan.record is not None:
            document["window"] = {"start": plan.record.start, "end": plan.record.end, "read_from": plan.record.read_from}
        return document

    def build_args(self, context: Any, run_id: str) -> list[str]:
        document = json.dumps(self.job_document(context, run_id), separators=(",", ":"))
        return ["--job", encode_job(document)]

    # ------------------------------------------------------------- outcomes
    def on_batch_success(self, context: Any, job: Job) -> Any:
        if job.job_key == snapshot_job_key(self.pipeline.name):
            state = self.lake_state.get(self.pipeline.name)
            if state is None or not state.phase.finished:
                raise OutcomeNotRecorded(
                    f"{job.job_key}: batch {job.batch_id} succeeded but the registry shows the snapshot "
                    f"{state.snapshot if state else 'missing'}; re-run the task to resume it"
                )
            self.log.info(
                "initial snapshot of %s.%s done: %d rows in %d chunks; windows start from %s",
                self.pipeline.database,
                self.pipeline.table,
                state.snapshot_rows,
                state.snapshot_chunks,
                state.watermark,
            )
            return NEXT_JOB
        window = self.window(context)
        record = self.lake_state.window(self.pipeline.name, window.label)
        if record is None or record.run_id != job.run_id or record.state != "COMMITTED":
            raise OutcomeNotRecorded(
                f"{job.job_key}: batch {job.batch_id} succeeded but the registry's record of window "
                f"{window.label} is {'missing' if record is None else f'{record.state} by run {record.run_id}'}, "
                f"not COMMITTED by run {job.run_id}; the window is not recorded — re-run it"
            )
        figures = window_figures(record, self.lake_state.get(self.pipeline.name))
        tables = {
            "table": self.config.lake.qualified(self.pipeline.current_table),
            "changes_table": self.config.lake.qualified(self.pipeline.changes_table),
        }
        self.log.info("%s", self.end_line(figures, tables, job))
        if figures["current_snapshot_id"] is not None:
            self.push(context, SNAPSHOT_KEY, snapshot_value(self.lake_table(), figures["current_snapshot_id"]))
        summary = {"pipeline": self.pipeline.name, **figures, **tables, "cluster": job.cluster_id, "batch_id": job.batch_id}
        if job.in_session:
            summary.update(session_id=job.session_id, statement_id=job.statement_id)
        # The lake table's Asset event: the window's figures (spotlake.window_figures), as the end line has them
        for asset in self.outlets or []:
            context["outlet_events"][asset].extra = figures
        return summary

    @staticmethod
    def end_line(figures: dict[str, Any], tables: dict[str, str], job: Job) -> str:
        """The window's one end line: rows read and written, the snapshots committed, the watermark,
        the time each phase took."""
        chunks = figures["chunks"]
        snapshots = [
            f"{tables[table]} {figures[snapshot]}"
            for table, snapshot in (("table", "current_snapshot_id"), ("changes_table", "changes_snapshot_id"))
            if figures[snapshot] is not None
        ]
        held = f"; read up to {figures['read_until']} (a transaction open on the source)" if figures["read_until"] else ""
        return (
            f"window {figures['window']} committed by attempt {job.attempt}: read {figures['rows_read']} rows, "
            f"wrote {figures['rows_written']}{f' in {chunks} chunks' if chunks > 1 else ''}{held}; "
            f"snapshots {', '.join(snapshots) or 'none (nothing to write)'}; watermark {figures['watermark']}; "
            f"timings {timings_text(figures['timings'])}"
        )

    # Every way the task can fail (the job's own error, no cluster, a bad config, the registry)
    # is noted in the pipeline's state, so the status shows the table failing since its
    # watermark with the reason; the task then fails as it would have.
    def execute(self, context: Any) -> Any:
        return self._noting_failure(context, lambda: self._checked_execute(context))

    def _checked_execute(self, context: Any) -> Any:
        self.state(context)  # the pipeline's state exists, so a refusal is noted there as a failure
        try:
            expressions.check_pipeline(self.pipeline, str(self.config.path))
        except ConfigError as exc:
            raise AirflowFailException(f"{exc} (nothing was submitted; fix the config and clear the task)") from None
        self.push(context, LAKE_TABLE_KEY, self.lake_table())
        return super().execute(context)

    def lake_table(self) -> dict[str, Any]:
        """The pipeline's current-state table as its links show it (operators/links.py)."""
        lake, table = self.config.lake, self.pipeline.current_table
        return lake_table_value(lake.qualified(table), lake.table_location(table), s3_console(self.s3))

    def resume_waiting(self, context: Any, event: Any = None, since: str = "") -> Any:
        return self._noting_failure(context, lambda: super(ExtractWindowOperator, self).resume_waiting(context, event, since))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        return self._noting_failure(context, lambda: super(ExtractWindowOperator, self).execute_complete(context, event))

    def statement_complete(self, context: Any, event: dict[str, Any]) -> Any:
        return self._noting_failure(context, lambda: super(ExtractWindowOperator, self).statement_complete(context, event))

    def _noting_failure(self, context: Any, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except TaskDeferred:
            raise
        except Exception as exc:
            job_key = self._plan.job_key if self._plan else f"{self.pipeline_name}#{self.window(context).label}"
            reason = exc.error if isinstance(exc, BatchFailed) else (str(exc).strip() or type(exc).__name__)
            try:
                self.lake_state.record_failure(self.pipeline.name, job_key, reason)
            except Exception as note:  # noqa: BLE001 - the task's own error matters more
                self.log.warning("could not note the failure of %s in the registry: %s", job_key, note)
            raise
