"""Reconcile one pipeline's lake with its source as a Livy batch (see :mod:`spark_jobs.extraction.reconcile`)."""

from __future__ import annotations

from typing import Any

from operators.extraction import extraction_document
from operators.livy_batch import PipelineBatchOperator
from spark_jobs.common.contract import encode_job
from spotlake import artifacts
from spotlake.jobs import BatchRequest
from spotlake.registry import Job


class ReconcileOperator(PipelineBatchOperator):
    """Runs ``spark_jobs/extraction/main.py`` with a ``reconcile`` job for ``pipeline``: checksums of the
    source and the lake per key-hash bucket, then only the buckets that differ are compared row by
    row; rows that differ are re-extracted and rows gone from the source recorded as deletes.

    Its commits take the pipeline's commit lock like a window's; the watermark does not move."""

    ui_color = "#e8e0f5"
    job_kind = "reconcile"

    def build_request(self, context: Any) -> BatchRequest:
        published = artifacts.publish("extraction", s3=self.s3)
        return published.request(
            self.job_key(context), self.pool_name, name=f"spotlake-reconcile-{self.pipeline_name}", report=True
        )

    def build_args(self, context: Any, run_id: str) -> list[str]:
        pipeline = self.config.get(self.pipeline_name)
        document = extraction_document(self.config, pipeline, self.registry, self.job_key(context), "reconcile", run_id)
        document["reconcile"] = pipeline.reconcile.to_job(pipeline.source)
        return ["--job", encode_job(document)]

    def on_batch_success(self, context: Any, job: Job) -> Any:
        result = self._batch_result(job) or {}
        self.log.info("%s: %s", self.pipeline_name, result.get("summary", "reconciled"))
        return result
