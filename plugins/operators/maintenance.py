"""Maintain one pipeline's lake tables (compaction, snapshot expiry, orphan files) as a Livy batch."""

from __future__ import annotations

from typing import Any

from operators.livy_batch import PipelineBatchOperator
from spark_jobs.common.contract import encode_job
from spark_jobs.common.lake_state import LakeState
from spotlake import artifacts, streaming
from spotlake.errors import ConfigError
from spotlake.jobs import BatchRequest
from spotlake.registry import Job


class LakeMaintenanceOperator(PipelineBatchOperator):
    """Runs ``spark_jobs/maintenance/main.py`` for ``pipeline``: see :mod:`spark_jobs.maintenance.run`.

    It takes the pipeline's commit lock like a window does, so windows wait while it runs
    and it never races a ``MERGE INTO``; readers are unaffected (snapshots younger than the
    retention, and the files they reference, stay)."""

    job_kind = "maintenance"

    def execute(self, context: Any) -> Any:
        why = self.nothing_to_maintain()
        if why:
            self.log.info("%s: %s; no batch submitted", self.pipeline_name, why)
            return {"skipped": why}
        return super().execute(context)

    def nothing_to_maintain(self) -> str:
        """Why there is nothing to maintain yet ("" if there is): no window and no snapshot chunk
        of the pipeline has committed, so its lake tables do not exist."""
        state = LakeState(self.registry.client, self.registry.prefix).get(self.pipeline_name)
        if state is None or (not state.watermark and not state.snapshot_chunks):
            return "nothing has been committed to its lake tables yet"
        return ""

    def build_request(self, context: Any) -> BatchRequest:
        published = artifacts.publish("maintenance", s3=self.s3)
        key = self.job_key(context)
        return published.request(key, self.pool_name, name=f"spotlake-maintain-{self.pipeline_name}", report=True)

    def lake_section(self) -> dict[str, Any]:
        return self.config.lake.to_job(self.config.get(self.pipeline_name))

    def build_args(self, context: Any, run_id: str) -> list[str]:
        key = self.job_key(context)
        claimed = self.registry.get_job(key)
        maintenance = self.config.lake.maintenance
        document = {
            "job_key": key,
            "attempt": claimed.attempt if claimed is not None and claimed.run_id == run_id else 1,
            "run_id": run_id,
            "pipeline": self.pipeline_name,
            **self.extra_document(),
            "lake": self.lake_section(),
            "registry": {"prefix": self.registry.prefix, "region": self.registry.client.meta.region_name},
            "maintenance": {
                "snapshot_retention_s": maintenance.snapshot_retention.total_seconds(),
                "retain_last": maintenance.retain_last,
                "orphan_age_s": maintenance.orphan_age.total_seconds(),
                "target_file_size_mb": maintenance.target_file_size_mb,
            },
        }
        return ["--job", encode_job(document)]

    def extra_document(self) -> dict[str, Any]:
        return {}

    def on_batch_success(self, context: Any, job: Job) -> Any:
        result = self._batch_result(job) or {}
        if result.get("skipped"):
            self.log.info("%s: %s", self.pipeline_name, result["skipped"])
        for table, steps in (result.get("tables") or {}).items():
            rewrite = steps.get("rewrite", {})
            self.log.info(
                "%s: compacted %s data files into %s, expired %s data files of old snapshots, removed %d orphan files, in %s s",
                table,
                rewrite.get("rewritten_data_files_count", 0),
                rewrite.get("added_data_files_count", 0),
                steps.get("expire", {}).get("deleted_data_files_count", 0),
                len(steps.get("orphans_removed", [])),
                steps.get("seconds"),
            )
        return result


class StreamMaintenanceOperator(LakeMaintenanceOperator):
    """The same maintenance for a click stream's Iceberg tables (its events and dead letters), as
    pipeline ``stream_<name>`` in the job key; no commit lock: the stream only appends."""

    template_fields = ("stream_name",)

    def __init__(self, *, stream_name: str, **kwargs: Any) -> None:
        self.stream_name = stream_name
        super().__init__(pipeline_name=f"stream_{stream_name}", **kwargs)

    def nothing_to_maintain(self) -> str:
        return ""  # the stream's tables: the job finds out itself whether they exist

    def lake_section(self) -> dict[str, Any]:
        stream = streaming.load(catalog=self.config.lake).get(self.stream_name)
        doc = stream.lake_document()
        if doc is None:
            raise ConfigError(f"stream {self.stream_name} has no lake tables in config/streaming.yaml; set its lake")
        events, dead = doc.pop("events"), doc.pop("dead_letters")
        doc.pop("snapshot_retention_s", None)  # the stream's own expiry; maintenance uses the lake's retention
        return {**doc, "current": events, "changes": dead or events}

    def extra_document(self) -> dict[str, Any]:
        return {"stream": self.stream_name}
