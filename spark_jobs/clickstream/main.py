"""Entry script of the click stream, as a Livy batch / ``spark-submit``::

    spark-submit --py-files spark_jobs.zip spark_jobs/clickstream/main.py --job <base64url(JSON)>

It runs until stopped (or, with ``trigger.available_now``, until it has read what Kafka held at its
start), then prints ``SPOTLAKE_STREAM: <json summary>`` and exits 0; errors and exit codes:
:mod:`spark_jobs.common.entry` (a configuration or sink problem is a
:class:`~spark_jobs.common.errors.StreamingError`). The job's ``psycopg2`` and ``boto3`` come with
the batch (``spark.archives``, :mod:`spark_jobs.common.runtime`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from spark_jobs.clickstream.job import StreamJob
from spark_jobs.common.contract import STREAM_MARK
from spark_jobs.common.entry import log_to_stderr, run_main
from spark_jobs.common.errors import StreamingError


def main(argv: Sequence[str] | None = None, session: Any = None) -> int:
    return run_main(
        argv,
        "clickstream/main.py",
        "Run the click stream into PostgreSQL and the lake.",
        StreamJob,
        "spark_jobs.clickstream.run:run_and_describe",
        "stream",
        session,
        result_mark=STREAM_MARK,
        refusal=StreamingError,
        sql_extensions=False,
    )


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(main())
