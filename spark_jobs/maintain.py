"""Entry script of the lake's table maintenance, run as a Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/maintain.py --job <base64url(JSON)>

Prints ``SPOTLAKE_RESULT: <json>`` (what each step did, per table) and exits 0, or one
``SPOTLAKE_ERROR: <message>`` line and a non-zero exit (see ``extract.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from spark_jobs.extract import log_to_stderr, run_main
from spark_jobs.job_config import MaintenanceJob


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, "maintain.py", "Compact, expire and clean a pipeline's lake tables.", MaintenanceJob,
                    "spark_jobs.maintenance:run_maintenance", "maintenance")


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
