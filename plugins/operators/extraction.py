"""Extract one window of one pipeline into the lake."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.exceptions import AirflowException
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from operators.livy_batch import PoolBatchOperator
from spotlake import artifacts, config, lake
from spotlake.jobs import BatchRequest
from spotlake.registry import ExtractionRecord, Job, StaleState, now_iso
from spotlake.windows import Window, job_key, window_for_run


class ExtractWindowOperator(PoolBatchOperator):
    """Runs ``spark_jobs/extract.py`` for the run's window of ``pipeline`` and, once the
    window's manifest is committed, records it in the extraction log.

    The batch receives the source's secret reference, never a credential.
    """

    template_fields = ("pipeline_name",)

    def __init__(self, *, pipeline_name: str, **kwargs: Any) -> None:
        self.pipeline_name = pipeline_name
        self._window: Window | None = None
        super().__init__(**kwargs)

    @cached_property
    def pipeline(self) -> config.Pipeline:
        return config.load().get(self.pipeline_name)

    @cached_property
    def s3(self) -> Any:
        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def window(self, context: Any) -> Window:
        """The run's window; the pipeline's first committed window also carries all the
        rows from before it (an initial load), so existing rows land too."""
        if self._window is None:
            window = window_for_run(
                self.pipeline.schedule,
                self.pipeline.lookback,
                context.get("data_interval_start"),
                context.get("data_interval_end"),
                datetime.now(UTC),
            )
            if self.pipeline.initial_load and not lake.has_commits(self.s3, self.pipeline.target):
                self.log.info("no committed window in %s yet: initial load of all rows before %s",
                              self.pipeline.target, window.end)
                window = window.as_initial_load()
            self._window = window
        return self._window

    def build_request(self, context: Any) -> BatchRequest:
        window = self.window(context)
        published = artifacts.publish("extract.py", s3=self.s3)
        return BatchRequest(
            job_key=job_key(self.pipeline.name, window),
            pool=self.pipeline.pool,
            file=published.entry,
            py_files=published.py_files,
            name=f"spotlake-extract-{self.pipeline.name}-{window.label}",
        )

    def job_document(self, context: Any, run_id: str) -> dict[str, Any]:
        pipeline, window = self.pipeline, self.window(context)
        ti = context.get("ti")
        return {
            "job_key": job_key(pipeline.name, window),
            "attempt": getattr(ti, "try_number", 1),
            "run_id": run_id,
            "pipeline": pipeline.name,
            "source": {"secret_id": pipeline.source.secret_id},
            "database": pipeline.database,
            "table": pipeline.table,
            "primary_key": list(pipeline.primary_key),
            "cursor": pipeline.cursor,
            "soft_delete": pipeline.soft_delete,
            "window": window.to_job(),
            "transforms": [t.to_job() for t in pipeline.transforms],
            "output": {"root": pipeline.target},
            "read": dict(pipeline.read),
        }

    def build_args(self, context: Any, run_id: str) -> list[str]:
        document = json.dumps(self.job_document(context, run_id), separators=(",", ":"))
        return ["--job", base64.urlsafe_b64encode(document.encode()).decode()]

    def on_batch_success(self, context: Any, job: Job) -> dict[str, Any]:
        window = self.window(context)
        manifest = lake.read_manifest(self.s3, self.pipeline.target, window.label)
        if manifest is None or manifest.get("run_id") != job.run_id:
            raise AirflowException(
                f"{job.job_key}: batch {job.batch_id} succeeded but the committed manifest "
                f"{lake.manifest_uri(self.pipeline.target, window.label)} is "
                f"{'missing' if manifest is None else 'from run ' + str(manifest.get('run_id'))}, "
                f"not run {job.run_id}; the window is not recorded — re-run it"
            )
        record = ExtractionRecord(
            pipeline=self.pipeline.name,
            window=window.label,
            window_start=manifest["window"]["start"],
            window_end=manifest["window"]["end"],
            rows_read=int(manifest["rows_read"]),
            rows_written=int(manifest["rows_written"]),
            output_path=manifest.get("data_path") or "",
            manifest_path=lake.manifest_uri(self.pipeline.target, window.label),
            cursor_min=manifest.get("cursor_min"),
            cursor_max=manifest.get("cursor_max"),
            job_key=job.job_key,
            attempt=job.attempt,
            finished_at=now_iso(),
            timings={k: float(v) for k, v in (manifest.get("timings") or {}).items()},
        )
        try:
            self.registry.record_extraction(record)
        except StaleState as exc:
            self.log.warning("%s", exc)
        summary = {
            "pipeline": record.pipeline, "window": record.window, "rows_read": record.rows_read,
            "rows_written": record.rows_written, "manifest": record.manifest_path,
            "cluster": job.cluster_id, "batch_id": job.batch_id,
        }
        self.log.info("committed %s", summary)
        for asset in self.outlets or []:
            context["outlet_events"][asset].extra = summary
        return summary
