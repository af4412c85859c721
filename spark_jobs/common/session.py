"""Entry of the jobs in a long-lived Livy session (warm execution, ``spotlake.sessions``).

A session loads the job code once per code version: its first statement adds the published
``spark_jobs.zip`` with ``sc.addPyFile`` and calls :func:`prepare`. Each window is then one
statement calling :func:`run`, which runs the same entry function as the batch's script
(``extraction/main.py``'s ``main``) with the same arguments in the session's SparkSession: the same job
document, the same result and error lines, the same report. Nothing here stops the session.

Standard library, PySpark and the jobs' own modules only.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

from spark_jobs.common.contract import EXIT_MARK, MEMORY_MARK
from spark_jobs.common.runtime import use_job_packages

# The jobs a session runs, by name: their entry modules (spark_jobs/<job>/main.py).
ENTRIES = {"extraction": "spark_jobs.extraction.main"}
MB = 1024 * 1024
_PREPARED: dict[str, Any] = {}


def prepare() -> str | None:
    """Once per session: the job packages on ``sys.path``, the jobs' log lines on the driver's
    stderr, and the entry modules imported (so a window pays for none of it)."""
    folder = use_job_packages()
    if "log" not in _PREPARED:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("spark_jobs")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        _PREPARED["log"] = handler
    for module in ENTRIES.values():
        importlib.import_module(module)
    importlib.import_module("spark_jobs.extraction.run")
    return folder


def run(spark: Any, entry: str, argv: list[str]) -> int:
    """Run job ``entry`` (``extraction``) with ``argv`` in this session; prints the job's result or
    error line and the exit code it would have had as a batch (``SPOTLAKE_EXIT: n``)."""
    if entry not in ENTRIES:
        raise ValueError(f"unknown job entry {entry!r}; known: {', '.join(sorted(ENTRIES))}")
    module = importlib.import_module(ENTRIES[entry])
    try:
        code = int(module.main(argv, session=spark))
        print(f"{EXIT_MARK}{code}", flush=True)
        return code
    finally:
        print(MEMORY_MARK + json.dumps(memory(spark)), flush=True)


def memory(spark: Any) -> dict[str, float | None]:
    """The session's memory after a statement, for recycling a session that grows
    (``sessions.recycle_heap`` / ``recycle_python_mb``): the driver JVM's heap still live after its
    last garbage collections and its maximum, and the resident size of this Python process. A
    figure that cannot be read is None; reading costs a few py4j calls, no collection."""
    found: dict[str, float | None] = {"heap_live_mb": None, "heap_max_mb": None, "python_rss_mb": None}
    try:
        management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
        live = 0
        for pool in management.getMemoryPoolMXBeans():
            after_gc = pool.getCollectionUsage()
            if pool.getType().toString() == "Heap memory" and after_gc is not None:
                live += after_gc.getUsed()
        heap_max = management.getMemoryMXBean().getHeapMemoryUsage().getMax()
        found["heap_live_mb"] = round(live / MB, 1)
        found["heap_max_mb"] = round(heap_max / MB, 1) if heap_max > 0 else None
    except Exception:  # noqa: BLE001, S110 - no JVM figures: the session is judged by the rest
        pass
    found["python_rss_mb"] = _python_rss_mb()
    return found


def _python_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
