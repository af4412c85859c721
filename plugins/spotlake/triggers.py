"""Former home of the triggers, kept so that tasks deferred before an upgrade resume.

Airflow stores a deferred task's trigger by class path; tasks deferred by an earlier release
name ``spotlake.triggers.<Class>``. The triggers live in :mod:`triggers.livy` and
:mod:`triggers.fleet` now; remove this module one release after the move.
"""

from __future__ import annotations

from triggers.fleet import PoolWatchTrigger
from triggers.livy import JobTrigger, LivyBatchTrigger, LivyStatementTrigger

__all__ = ["JobTrigger", "LivyBatchTrigger", "LivyStatementTrigger", "PoolWatchTrigger"]
