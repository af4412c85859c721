"""The exceptions the Spark jobs raise.

A user-facing failure (bad configuration, a source that does not match it, an
unreachable database) raises an :class:`ExtractionError`, a ``ValueError`` whose
message names the pipeline, the table, the cause and the fix. The entry script
prints it as one ``SPOTLAKE_ERROR:`` line that the operator shows from the Livy log; a
:class:`DataError` also prints a ``SPOTLAKE_DATA_ERROR:`` line, and the operator then fails the
task without retries.
"""

from __future__ import annotations


class SpotlakeJobError(Exception):
    """Base class of every error raised by the Spark jobs."""


class ExtractionError(SpotlakeJobError, ValueError):
    """An extraction cannot run as configured; the message says where and how to fix it."""


class DataError(ExtractionError):
    """A value or a schema that the job, as configured, can never write: every retry would fail the
    same way, so the task fails at once (no Airflow retry); the message names the table, the
    column, what is wrong with the value and the configuration change that fixes it."""


class UnknownUserTransformError(SpotlakeJobError, LookupError):
    """No user transform function is registered under the requested name."""


class LakeReadError(SpotlakeJobError, ValueError):
    """The lake under a root cannot be read as a merged view."""


class StreamingError(SpotlakeJobError, ValueError):
    """The click stream cannot run as configured; the message says where and how to fix it."""


class StreamFencedError(SpotlakeJobError):
    """Another run of the same stream took over its sink; this run must stop."""


class StaleAttemptError(SpotlakeJobError):
    """This attempt no longer owns its job (re-queued or replaced); its commit is refused."""


class CommitConflict(SpotlakeJobError):
    """Another commit to the same Iceberg table won the race; the job retries the chunk."""
