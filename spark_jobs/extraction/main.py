"""Entry script of the extraction job: a window, the initial snapshot or a reconciliation of one
pipeline (the job document's ``kind``), as a Livy batch / ``spark-submit`` or a session statement::

    spark-submit --py-files spark_jobs.zip spark_jobs/extraction/main.py --job <base64url(JSON)>

What it prints and its exit codes: :mod:`spark_jobs.common.entry`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from spark_jobs.common.entry import log_to_stderr, run_main
from spark_jobs.common.job_documents import ExtractJob


def main(argv: Sequence[str] | None = None, session: Any = None) -> int:
    return run_main(
        argv,
        "extraction/main.py",
        "Extract one window of one MySQL table into the lake.",
        ExtractJob,
        "spark_jobs.extraction.run:run_extraction",
        "extraction",
        session,
    )


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
