"""The jobs' Python packages on the driver: the archive every batch names in ``spark.archives``.

A Spark cluster ships Python and PySpark but not the packages the jobs import (Amazon EMR has no
psycopg2 and no pinned boto3). The project publishes them as one archive of wheels
(``spark_jobs/requirements.txt``, built by ``spotlake.job_dependencies``) and every batch names it
as ``spark.archives=<uri>#pydeps``. Spark unpacks it into the driver's SparkFiles folder (client
mode and local) or the YARN container's working directory (cluster mode); :func:`use_job_packages`
puts whichever exists on ``sys.path``. Entry scripts call it once the session exists and before
they import the job modules, which import boto3 at module level.

Standard library, PySpark and :mod:`spark_jobs.common.errors` only: this module runs before the packages
are reachable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.errors import SpotlakeJobError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ARCHIVE_ALIAS = "pydeps"  # the fragment after '#' in spark.archives: the folder it unpacks into
REQUIRED_MODULES = ("boto3", "psycopg2")


class MissingPackagesError(SpotlakeJobError):
    """The job's Python packages did not reach the driver."""


def _candidates() -> list[Path]:
    found: list[Path] = []
    try:
        from pyspark import SparkFiles

        found.append(Path(SparkFiles.getRootDirectory()) / ARCHIVE_ALIAS)
    except Exception:  # noqa: BLE001, S110 - no SparkContext yet: only the working directory is left
        pass
    found.append(Path(os.getcwd()) / ARCHIVE_ALIAS)
    return found


def use_job_packages(required: tuple[str, ...] = REQUIRED_MODULES) -> str | None:
    """Put the unpacked ``pydeps`` archive on ``sys.path``; return the folder used, or None when the
    batch named no archive but the interpreter already has the packages (a test session).

    Raises :class:`MissingPackagesError` naming the fix when neither holds.
    """
    for folder in _candidates():
        if folder.is_dir():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return str(folder)
    import importlib.util

    missing = [name for name in required if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackagesError(
            f"the job's Python packages ({', '.join(missing)}) are not on the driver and the batch named no "
            f"'#{ARCHIVE_ALIAS}' archive in spark.archives: publish them with `python -m "
            "spotlake.job_dependencies publish --to <SPOTLAKE_ARTIFACTS>` (the operators add them to every batch)"
        )
    return None


def driver_jvm(spark: SparkSession) -> Any:
    """The py4j view of the driver JVM of ``spark`` (its Java and Scala classes)."""
    jvm = spark._jvm
    if jvm is None:
        raise RuntimeError("the SparkSession has no JVM gateway: it was stopped")
    return jvm


def java_root_cause(java: Any) -> Any:
    """The innermost cause of a Java exception (itself when it has none)."""
    root = java
    while root.getCause() is not None and root.getCause() is not root:
        root = root.getCause()
    return root
