"""The Spark jobs as a cluster sees them: an entry script, a zip of ``spark_jobs``, and the
jobs' dependencies (jars and a Python package archive, :mod:`spotlake.job_dependencies`).

Artifacts are content-addressed, so publishing is idempotent and a running batch
never sees its code change. ``SPOTLAKE_ARTIFACTS`` says where they go:
an ``s3://bucket/prefix`` (production: EMR reads from S3) or a local folder that
the local Livy servers may read (default ``.stack/artifacts``). The job code is published by the
operators as they submit; the dependencies once per pin change, by
``python -m spotlake.job_dependencies publish`` (``make up`` does it locally).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotlake import job_dependencies
from spotlake.jobs import BatchRequest
from spotlake.lake import split_s3

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
JOBS_DIR = PROJECT_ROOT / "spark_jobs"
# The Spark jobs: each is the package spark_jobs/<job>/ with its entry script main.py.
JOBS = ("extraction", "maintenance", "clickstream")


# YARN runs a failed application again by default (2 attempts): in cluster mode that is the whole
# driver, with the same attempt's run id, a second time inside one batch. spotlake re-submits
# failed jobs itself, as new attempts, so YARN must not.
ONE_ATTEMPT = {"spark.yarn.maxAppAttempts": "1"}


@dataclass(frozen=True)
class JobArtifacts:
    """What a batch names: the entry script, the package zip, the jars and the Spark settings that
    bring the Python package archive (``spark.archives``)."""

    entry: str
    py_files: list[str]
    jars: list[str] = field(default_factory=list)
    conf: dict[str, str] = field(default_factory=dict)
    root: str | None = None  # the artifacts root; the jobs' reports go under it

    def request(
        self, job_key: str, pool: str, name: str, conf: dict[str, str] | None = None, report: bool = False
    ) -> BatchRequest:
        """The batch of ``job_key``: these artifacts, plus ``conf`` (which may not replace the archive);
        ``report``: the job writes its outcome under ``<root>/reports/`` (read by :func:`read_report`)."""
        return BatchRequest(
            job_key=job_key,
            pool=pool,
            file=self.entry,
            py_files=list(self.py_files),
            jars=list(self.jars),
            conf={**(conf or {}), **self.conf, **ONE_ATTEMPT},
            name=name,
            report_root=self.root if report else None,
        )


def _package_zip() -> bytes:
    """A deterministic zip of the ``spark_jobs`` package (sorted, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(JOBS_DIR.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(str(path.relative_to(PROJECT_ROOT)), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def artifacts_root() -> str:
    default = Path(os.environ.get("SPOTLAKE_STACK_DIR", PROJECT_ROOT / ".stack")) / "artifacts"
    return os.environ.get("SPOTLAKE_ARTIFACTS", str(default))


def publish(job: str, s3: Any = None, root: str | None = None) -> JobArtifacts:
    """Publish the entry script of ``job`` (``spark_jobs/<job>/main.py``) and the package zip; return
    their URIs with the published dependencies' (:class:`~spotlake.job_dependencies.DependenciesMissing`
    if none are)."""
    if job not in JOBS:
        raise ValueError(f"unknown Spark job {job!r}; the jobs are {', '.join(JOBS)} (spark_jobs/<job>/main.py)")
    root = (root or artifacts_root()).rstrip("/")
    dependencies = job_dependencies.load(root, s3)
    package = _package_zip()
    entry_script = f"{job}/main.py"
    entry = (JOBS_DIR / entry_script).read_bytes()
    digest = hashlib.sha256(package + entry).hexdigest()[:16]
    names = {f"{digest}/spark_jobs.zip": package, f"{digest}/{entry_script}": entry}
    if root.startswith(("s3://", "s3a://")):
        if s3 is None:
            raise ValueError("publishing artifacts to S3 needs an S3 client")
        bucket, prefix = split_s3(root)
        for name, body in names.items():
            key = f"{prefix}/{name}".lstrip("/")
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        base = f"s3://{bucket}/{prefix}".rstrip("/")
    else:
        folder = Path(root)
        for name, body in names.items():
            path = folder / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(body)
                tmp.replace(path)
        base = str(folder.resolve())
    return JobArtifacts(
        entry=f"{base}/{digest}/{entry_script}",
        py_files=[f"{base}/{digest}/spark_jobs.zip"],
        jars=list(dependencies.jars),
        conf=dependencies.spark_conf(),
        root=base,
    )


def artifacts_base(root: str | None = None) -> str:
    """The artifacts root as batches name it: ``s3://bucket/prefix`` or an absolute folder."""
    root = (root or artifacts_root()).rstrip("/")
    if root.startswith(("s3://", "s3a://")):
        bucket, prefix = split_s3(root)
        return f"s3://{bucket}/{prefix}".rstrip("/")
    return str(Path(root).resolve())


def read_report(uri: str, s3: Any = None, run_id: str | None = None) -> dict[str, Any] | None:
    """The outcome attempt ``run_id`` of a job wrote to ``uri`` (spark_jobs/common/report.py), or None if
    it wrote none. A report that cannot be read for another reason (access, KMS) is logged: the
    caller then falls back to the batch log."""
    try:
        if uri.startswith(("s3://", "s3a://")):
            if s3 is None:
                return None
            bucket, key = split_s3(uri)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        else:
            body = Path(uri).read_bytes()
        document = json.loads(body)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - the report is a courtesy; the batch log is the fallback
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code not in ("NoSuchKey", "404", "NotFound"):
            log.warning("job report %s could not be read (%s: %s); using the batch log", uri, type(exc).__name__, exc)
        return None
    if not isinstance(document, dict) or (run_id and document.get("run_id") not in (None, run_id)):
        return None
    return document
