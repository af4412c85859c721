"""The merged view of a pipeline's lake table: its current state, read from committed windows.

Only manifests are trusted: the files of every committed window are read, and
rows are de-duplicated by primary key, keeping the row with the newest cursor
(ties: the later window). That folds the lookback overlap between windows and
the updates of a row into one row per key. Rows whose soft-delete column is set
can be left out with ``include_deleted=False``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql.types import StructType

from spark_jobs.errors import LakeReadError
from spark_jobs.lake_commit import MANIFESTS, hadoop_file

MANIFEST_NAME = re.compile(r"^window_start=(\d{8}T\d{6}Z)\.json$")
# Window labels (YYYYMMDDTHHMMSSZ) sort as their times do.
WINDOW_IN_PATH = r"/window_start=(\d{8}T\d{6}Z)/"
WINDOW_COLUMN = "__spotlake_window"
RANK_COLUMN = "__spotlake_rank"


def read_manifests(spark: SparkSession, root: str) -> list[dict[str, Any]]:
    """Every committed manifest under ``root``, oldest window first."""
    root = root.rstrip("/")
    fs, directory = hadoop_file(spark, f"{root}/{MANIFESTS}")
    if not fs.exists(directory):
        return []
    io = spark._jvm.org.apache.commons.io.IOUtils
    found = []
    for status in fs.listStatus(directory):
        if not status.isFile() or not MANIFEST_NAME.match(status.getPath().getName()):
            continue
        stream = fs.open(status.getPath())
        try:
            found.append(json.loads(io.toString(stream, "UTF-8")))
        finally:
            stream.close()
    return sorted(found, key=lambda m: m["window"]["start"])


def read_current(spark: SparkSession, root: str, include_deleted: bool = True) -> DataFrame:
    """One row per primary key: the newest version committed under ``root``."""
    manifests = read_manifests(spark, root)
    if not manifests:
        raise LakeReadError(f"{root}: no committed window (no {MANIFESTS}/window_start=*.json) to read")
    latest = manifests[-1]
    primary_key, cursor, soft_delete = latest["primary_key"], latest["cursor"], latest.get("soft_delete")
    for manifest in manifests:
        if manifest["primary_key"] != primary_key or manifest["cursor"] != cursor:
            raise LakeReadError(
                f"{root}: window {manifest['window']['start']} was written with primary key "
                f"{manifest['primary_key']} and cursor {manifest['cursor']!r}, the latest with {primary_key} "
                f"and {cursor!r}; the windows cannot be merged — re-extract the older windows"
            )
    rows = _committed_rows(spark, manifests)
    newest_first = Window.partitionBy(*primary_key).orderBy(F.col(cursor).desc(), F.col(WINDOW_COLUMN).desc())
    current = (
        rows.withColumn(RANK_COLUMN, F.row_number().over(newest_first))
        .filter(F.col(RANK_COLUMN) == 1)
        .drop(RANK_COLUMN, WINDOW_COLUMN)
    )
    if not include_deleted and soft_delete and soft_delete in current.columns:
        current = current.filter(F.col(soft_delete).isNull())
    return current


def _committed_rows(spark: SparkSession, manifests: list[dict[str, Any]]) -> DataFrame:
    """The rows of every committed window, tagged with their window label; one scan per schema."""
    files_by_schema: dict[str, list[str]] = {}
    for manifest in manifests:
        files_by_schema.setdefault(manifest["schema"], []).extend(manifest.get("files") or [])
    frames = [
        spark.read.schema(StructType.fromJson(json.loads(schema)))
        .parquet(*files)
        .withColumn(WINDOW_COLUMN, F.regexp_extract(F.col("_metadata.file_path"), WINDOW_IN_PATH, 1))
        for schema, files in files_by_schema.items()
        if files
    ]
    if not frames:
        raise LakeReadError("the committed windows list no data files")
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.unionByName(frame, allowMissingColumns=True)
    return merged
