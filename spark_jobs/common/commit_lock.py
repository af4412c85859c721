"""Holding a pipeline's commit lock from the Spark driver: wait for it, keep its lease, give it back.

The lock itself (its item and conditions) is :mod:`spark_jobs.common.lake_state`'s. Here: an
attempt waits while another live attempt commits, a background thread renews the lease
while the commit runs, and every step of the commit asks :meth:`HeldLock.check` first, so
an attempt that lost its job (re-queued by the fleet, replaced by a newer attempt) stops
before its next lake commit.
"""

from __future__ import annotations

import logging
import threading
import time

from spark_jobs.common.errors import ExtractionError, StaleAttemptError
from spark_jobs.common.lake_state import AttemptFenced, LakeState, Lock, LockBusy, LockLost, Owner

LOG = logging.getLogger(__name__)


class HeldLock:
    """A taken lock whose lease a daemon thread renews every third of the lease."""

    def __init__(self, store: LakeState, lock: Lock, lease_s: float) -> None:
        self.store = store
        self.lock = lock
        self.lease_s = lease_s
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="spotlake-lock-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.store.renew(self.lock, self.lease_s)
            except (AttemptFenced, LockLost) as exc:
                self.error = exc
                return
            except Exception as exc:  # noqa: BLE001 - a registry hiccup: try again at the next beat
                LOG.warning("renewing the commit lock of %s failed: %s", self.lock.owner.job_key, exc)

    def check(self) -> None:
        """Raise if this attempt may no longer commit."""
        if isinstance(self.error, AttemptFenced):
            raise StaleAttemptError(str(self.error))
        if self.error is not None:
            raise ExtractionError(f"{self.lock.owner.job_key}: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def take_lock(store: LakeState, pipeline: str, owner: Owner, lease_s: float, wait_s: float, poll_s: float = 1.0) -> HeldLock:
    """Wait (up to ``wait_s``) for the pipeline's commit lock; the caller stops the returned
    holder's lease thread when done. The lock itself is freed by :meth:`LakeState.release`
    (which records the commit in the same transaction); after an error it is left to expire
    or to be taken by the next attempt of a job that owns it."""
    started = time.monotonic()
    last_note = 0.0
    while True:
        try:
            return HeldLock(store, store.acquire(pipeline, owner, lease_s), lease_s)
        except AttemptFenced as exc:
            raise StaleAttemptError(str(exc)) from None
        except LockBusy as exc:
            waited = time.monotonic() - started
            if waited > wait_s:
                raise ExtractionError(
                    f"{owner.job_key}: waited {waited:.0f} s for the commit lock: {exc}; windows of one table "
                    "commit one at a time — the holder may be stuck (see its task) or raise commit.wait_s"
                ) from None
            if waited - last_note >= 30:
                LOG.info("%s: waiting for the commit lock: %s", owner.job_key, exc)
                last_note = waited
            time.sleep(poll_s)
