"""The job's outcome as a small JSON document the operator reads, whatever the deploy mode.

In client mode the driver's output is Livy's batch log and the operator finds the job's result
and error lines there; in cluster mode (EMR ``deploy_mode: cluster``) that output goes to YARN's
container logs instead, which Livy does not show. So the job also writes its outcome to the
``--report`` URI the batch names (``<artifacts root>/reports/<run id>.json``: S3 on AWS, a file
locally): ``{"status": "succeeded", "result": {...}}`` or ``{"status": "failed", "error": "...",
"data_error": true|false}``. Writing it never changes the job's outcome: a report that cannot be
written is logged, and the operator falls back to the log lines.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

LOG = logging.getLogger(__name__)


def write_report(uri: str | None, document: dict[str, Any], region: str | None = None) -> None:
    if not uri:
        return
    body = json.dumps(document, separators=(",", ":"), default=str).encode("utf-8")
    try:
        if uri.startswith(("s3://", "s3a://")):
            import boto3

            bucket, _, key = uri.split("://", 1)[1].partition("/")
            boto3.client("s3", region_name=region).put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
            return
        path = uri.removeprefix("file://")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.partial"
        with open(tmp, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - the report is a courtesy; the job's outcome stands
        LOG.warning("could not write the job report to %s: %s", uri, exc)
