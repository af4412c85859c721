"""The contract between the Airflow side and the Spark jobs, in one place.

Both sides import this module: the operators, triggers and supervisor (``plugins/``) and the
jobs on the cluster (``spark_jobs/``, shipped in ``spark_jobs.zip``). Standard library only, and
nothing newer than Python 3.9 at run time, like the rest of ``spark_jobs/``.

- the lines a job prints for its caller to read in the Livy log or a statement's output;
- the job document: JSON, base64url-encoded in one ``--job`` argument;
- the window label of a job key (``<pipeline>#<label>``);
- what counts as an identifier in a job document (a column, a table).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

# --------------------------------------------------------------------------- printed lines
ERROR_MARK = "SPOTLAKE_ERROR: "  # the job's own error, one line, on stderr
DATA_ERROR_MARK = "SPOTLAKE_DATA_ERROR: "  # the error is the data's: a retry would read the same value
RESULT_MARK = "SPOTLAKE_RESULT: "  # what the job did, one line of JSON, on stdout
STREAM_MARK = "SPOTLAKE_STREAM: "  # the stream's summary when its query ends, one line of JSON, on stdout
EXIT_MARK = "SPOTLAKE_EXIT: "  # a statement's exit code, as the batch would have had it
MEMORY_MARK = "SPOTLAKE_SESSION_MEMORY: "  # a session's memory after a statement, JSON


def last_marked(lines: list[str], mark: str) -> str | None:
    """What follows ``mark`` on the last line that carries it, or None."""
    return next((line.split(mark, 1)[1] for line in reversed(lines) if mark in line), None)


# --------------------------------------------------------------------------- job document
def encode_job(document: dict[str, Any] | str) -> str:
    """The ``--job`` argument for a document (a mapping, or its JSON text)."""
    text = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_job(text: str, error: Callable[[str], Exception]) -> Any:
    """The document of a ``--job`` argument (padding optional); ``error(message)`` builds the
    exception raised for an argument that is not base64url-encoded JSON."""
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise error("job: --job is not base64url-encoded; pass base64.urlsafe_b64encode(json).decode()") from None
    return decode_json(raw.decode("utf-8", errors="replace"), error)


def decode_json(text: str, error: Callable[[str], Exception]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"job: the job document is not valid JSON ({exc})") from None


# --------------------------------------------------------------------------- names
WINDOW_LABEL = "%Y%m%dT%H%M%SZ"  # a window's start, UTC: the part after '#' in its job key
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")  # a column or table name in a job document


def window_label(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(WINDOW_LABEL)
