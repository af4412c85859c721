"""Entry script of the lake's table maintenance (compaction, snapshot expiry, orphan files), as a
Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/maintenance/main.py --job <base64url(JSON)>

Prints ``SPOTLAKE_RESULT: <json>`` (what each step did, per table); errors and exit codes:
:mod:`spark_jobs.common.entry`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from spark_jobs.common.entry import log_to_stderr, run_main
from spark_jobs.common.job_documents import MaintenanceJob


def main(argv: Sequence[str] | None = None, session: Any = None) -> int:
    return run_main(
        argv,
        "maintenance/main.py",
        "Compact, expire and clean a pipeline's lake tables.",
        MaintenanceJob,
        "spark_jobs.maintenance.run:run_maintenance",
        "maintenance",
        session,
    )


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
