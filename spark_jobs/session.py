"""Entry of the jobs in a long-lived Livy session (warm execution, ``spotlake.sessions``).

A session loads the job code once per code version: its first statement adds the published
``spark_jobs.zip`` with ``sc.addPyFile`` and calls :func:`prepare`. Each window is then one
statement calling :func:`run`, which runs the same entry function as the batch's script
(``extract.py``'s ``main``) with the same arguments in the session's SparkSession: the same job
document, the same result and error lines, the same report. Nothing here stops the session.

Standard library, PySpark and the jobs' own modules only.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from spark_jobs.runtime import use_job_packages

ENTRIES = {"extract": "spark_jobs.extract"}
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
    importlib.import_module("spark_jobs.extraction")
    return folder


def run(spark: Any, entry: str, argv: list[str]) -> int:
    """Run job ``entry`` (``extract``) with ``argv`` in this session; prints the job's result or
    error line and the exit code it would have had as a batch (``SPOTLAKE_EXIT: n``)."""
    if entry not in ENTRIES:
        raise ValueError(f"unknown job entry {entry!r}; known: {', '.join(sorted(ENTRIES))}")
    module = importlib.import_module(ENTRIES[entry])
    code = int(module.main(argv, session=spark))
    print(f"SPOTLAKE_EXIT: {code}", flush=True)
    return code
