"""Atomic commit of a window into the lake.

Layout under a pipeline's output root::

    <root>/data/window_start=<YYYYMMDDTHHMMSSZ>/run=<run_id>/part-*.parquet
    <root>/_manifests/window_start=<YYYYMMDDTHHMMSSZ>.json

Each attempt writes its Parquet files into its own run directory, which no
reader looks at. The commit is the manifest: one small JSON object naming the
run's files, written through the Hadoop FileSystem API of the driver JVM. On an
object store (s3a, s3 via EMRFS) the object appears whole when the stream is
closed (one PUT), so readers see the old manifest or the new one, never a part;
on a local file system it is written to a hidden temporary file in the same
directory and renamed over the old one. Nothing before the manifest write
changes what readers see, so a failure at any point leaves the previous
manifest in force.

After the commit, run directories of the window that the manifest does not
reference are deleted once their newest file is older than the retention (a
younger one may belong to a concurrent attempt that is still writing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from spark_jobs.errors import ExtractionError

OBJECT_STORE_SCHEMES = frozenset({"s3a", "s3", "s3n", "gs", "oss", "abfs", "abfss", "wasb", "wasbs"})
MANIFESTS = "_manifests"


@dataclass(frozen=True)
class WindowLayout:
    """Where one attempt of one window lives under a pipeline's output root."""

    root: str
    label: str
    run_id: str

    @property
    def window_dir(self) -> str:
        return f"{self.root}/data/window_start={self.label}"

    @property
    def run_dir(self) -> str:
        return f"{self.window_dir}/run={self.run_id}"

    @property
    def manifest(self) -> str:
        return manifest_uri(self.root, self.label)


def manifest_uri(root: str, label: str) -> str:
    return f"{root}/{MANIFESTS}/window_start={label}.json"


def hadoop_file(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    """(FileSystem, Path) of ``uri`` in the driver JVM."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def write_window(df: DataFrame, layout: WindowLayout) -> None:
    """Write the window's rows as Parquet into the attempt's own run directory."""
    df.write.mode("overwrite").parquet(layout.run_dir)


def data_files(spark: SparkSession, directory: str) -> list[str]:
    """URIs of the data files in ``directory`` (not ``_SUCCESS`` or hidden files), sorted."""
    fs, path = hadoop_file(spark, directory)
    names = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if status.isFile() and not name.startswith(("_", ".")):
            names.append(status.getPath().toString())
    return sorted(names)


def read_manifest(spark: SparkSession, uri: str) -> dict[str, Any] | None:
    """The manifest at ``uri``, or None if there is none."""
    fs, path = hadoop_file(spark, uri)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return json.loads(spark._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def commit_manifest(spark: SparkSession, uri: str, manifest: dict[str, Any]) -> None:
    """Make ``manifest`` the window's committed manifest in one atomic step."""
    body = bytearray(json.dumps(manifest, indent=2).encode("utf-8"))
    fs, path = hadoop_file(spark, uri)
    if fs.getScheme() in OBJECT_STORE_SCHEMES:
        _write(fs, path, body)
        return
    if fs.getScheme() == "file":
        fs = fs.getRawFileSystem()  # no .crc side files next to the manifest
    temp_name = f".{path.getName()}.{manifest['run_id']}.tmp"
    temp = spark._jvm.org.apache.hadoop.fs.Path(path.getParent(), temp_name)
    try:
        _write(fs, temp, body)
        if not fs.rename(temp, path):
            raise ExtractionError(
                f"pipeline {manifest['pipeline']}: could not replace {uri} by rename on a {fs.getScheme()} "
                "file system; use an s3a:// or file: output root"
            )
    finally:
        if fs.exists(temp):
            fs.delete(temp, False)


def _write(fs: Any, path: Any, body: bytearray) -> None:
    stream = fs.create(path, True)
    try:
        stream.write(body)
    finally:
        stream.close()


def remove_stale_runs(
    spark: SparkSession, layout: WindowLayout, retention_s: float, now: float | None = None
) -> list[str]:
    """Delete the window's run directories other than ``layout``'s whose newest file is older
    than ``retention_s``; return the deleted URIs. A directory's age is that of its newest
    file (object stores give directories no time of their own); an empty directory on a
    local file system counts by its own time."""
    fs, window_dir = hadoop_file(spark, layout.window_dir)
    if not fs.exists(window_dir):
        return []
    cutoff_ms = ((time.time() if now is None else now) - retention_s) * 1000
    deleted = []
    for status in fs.listStatus(window_dir):
        path = status.getPath()
        name = path.getName()
        if not status.isDirectory() or not name.startswith("run=") or name == f"run={layout.run_id}":
            continue
        newest = _newest_file_ms(fs, path)
        if newest == 0 and fs.getScheme() not in OBJECT_STORE_SCHEMES:
            newest = status.getModificationTime()  # an empty directory (object stores report "now")
        if 0 < newest < cutoff_ms and fs.delete(path, True):
            deleted.append(path.toString())
    return deleted


def _newest_file_ms(fs: Any, directory: Any) -> int:
    newest = 0
    files = fs.listFiles(directory, True)
    while files.hasNext():
        newest = max(newest, files.next().getModificationTime())
    return newest
