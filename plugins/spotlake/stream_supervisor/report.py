"""What one supervision step reports: the stream's state, what the supervisor did and why, its
batch, the sink's last committed micro-batch, the lag and the restarts within the budget's window.

The operator logs :meth:`SupervisionReport.lines` and returns :meth:`SupervisionReport.to_dict` as
its XCom; the same values go to the stream's status record (:mod:`spotlake.stream_status`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotlake.registry import Job


@dataclass(frozen=True)
class Progress:
    """The aggregates query's row of ``stream_progress``."""

    last_batch_id: int
    committed_at: str
    watermark: str
    offsets: dict[str, dict[str, int]]
    dead_letters_last_hour: int = 0  # dead letters of the micro-batches committed in the last hour


@dataclass(frozen=True)
class Lag:
    total: int
    by_partition: dict[str, int]


@dataclass
class SupervisionReport:
    stream: str
    state: str
    action: str
    job: Job | None = None
    lag: Lag | None = None
    progress: Progress | None = None
    migrations: list[str] = field(default_factory=list)
    restarts_in_window: int = 0
    reason: str = ""

    def lines(self) -> list[str]:
        job = self.job
        where = f"batch {job.batch_id} on cluster {job.cluster_id} (attempt {job.attempt})" if job is not None else "no batch"
        lines = [f"stream {self.stream}: {self.state} ({self.action}): {where}"]
        if self.reason:
            lines.append(f"stream {self.stream}: {self.reason}")
        if self.migrations:
            lines.append(f"stream {self.stream}: applied sink migrations {', '.join(self.migrations)}")
        if self.progress is not None:
            lines.append(
                f"stream {self.stream}: last committed micro-batch {self.progress.last_batch_id} at "
                f"{self.progress.committed_at or '-'}, watermark {self.progress.watermark or '-'}"
            )
        else:
            lines.append(f"stream {self.stream}: no micro-batch committed yet")
        if self.lag is not None:
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.lag.by_partition.items()))
            lines.append(f"stream {self.stream}: lag {self.lag.total} records ({parts})")
        lines.append(f"stream {self.stream}: {self.restarts_in_window} restart(s) within the budget's window")
        return lines

    def to_dict(self) -> dict[str, Any]:
        job = self.job
        return {
            "stream": self.stream,
            "state": str(self.state),  # plain strings, also where they are enum members
            "action": str(self.action),
            "cluster": job.cluster_id if job else "",
            "batch_id": job.batch_id if job else -1,
            "attempt": job.attempt if job else 0,
            "last_batch_id": self.progress.last_batch_id if self.progress else -1,
            "committed_at": self.progress.committed_at if self.progress else "",
            "watermark": self.progress.watermark if self.progress else "",
            "lag": self.lag.total if self.lag else -1,
            "restarts_in_window": self.restarts_in_window,
            "reason": self.reason,
        }
