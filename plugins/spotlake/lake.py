"""The lake as readers see it: committed windows are those with a manifest.

Layout under a pipeline's target (see spark_jobs/lake_commit.py, which writes it):

- ``data/window_start=<label>/run=<run_id>/part-*.parquet``: one directory per attempt;
- ``_manifests/window_start=<label>.json``: the commit; names the files of the
  attempt that won. Readers trust only manifests, so a partial or superseded
  attempt is never visible.

The merged view de-duplicates rows by primary key, newest cursor first (ties:
the later window), which folds the lookback overlap and updates into the
table's current state.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

MANIFESTS = "_manifests"


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a"):
        raise ValueError(f"{uri} is not an s3:// or s3a:// URI")
    return parsed.netloc, parsed.path.lstrip("/")


def manifest_uri(target: str, label: str) -> str:
    return f"{target.rstrip('/')}/{MANIFESTS}/window_start={label}.json"


def read_manifest(s3: Any, target: str, label: str) -> dict[str, Any] | None:
    """The committed manifest of one window, or None if the window is not committed."""
    bucket, key = split_s3(manifest_uri(target, label))
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def has_commits(s3: Any, target: str) -> bool:
    """Whether any window of the pipeline was ever committed."""
    bucket, prefix = split_s3(f"{target.rstrip('/')}/{MANIFESTS}/")
    return s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0


def manifests(s3: Any, target: str) -> list[dict[str, Any]]:
    bucket, prefix = split_s3(f"{target.rstrip('/')}/{MANIFESTS}/")
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                found.append(json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
    return sorted(found, key=lambda m: m["window"]["start"])


def window_table(s3: Any, manifest: dict[str, Any]) -> pa.Table | None:
    tables = []
    for uri in manifest.get("files", []):
        bucket, key = split_s3(uri)
        tables.append(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def current_rows(s3: Any, target: str, include_deleted: bool = True) -> list[dict[str, Any]]:
    """The merged view of a pipeline's lake table as Python rows (small tables: tests, checks)."""
    newest: dict[tuple[Any, ...], tuple[tuple[Any, str], dict[str, Any]]] = {}
    soft_delete = None
    for manifest in manifests(s3, target):
        table = window_table(s3, manifest)
        if table is None:
            continue
        pk, cursor = manifest["primary_key"], manifest["cursor"]
        soft_delete = manifest.get("soft_delete")
        for row in table.to_pylist():
            key = tuple(row[c] for c in pk)
            rank = (row[cursor], manifest["window"]["start"])
            if key not in newest or rank >= newest[key][0]:
                newest[key] = (rank, row)
    rows = [row for _, row in newest.values()]
    if not include_deleted and soft_delete:
        rows = [r for r in rows if r.get(soft_delete) is None]
    return rows
