"""Keep a click stream running as a Livy batch on its pool: the stream supervisor.

:meth:`StreamSupervisor.supervise` is one idempotent step (the DAG runs it every
minute), testable without Airflow:

1. check that the stream's topics exist on Kafka (:class:`TopicMissing` names the
   topic and the bootstrap servers otherwise), and bring the sink's schema up to date;
2. look at the stream's job (key: the stream name) and decide:

   - its batch is live: nothing to do (``RUNNING``);
   - its cluster does not answer but is not declared dead: wait for the fleet's health
     checks (``WAITING``): a second batch must never run on the same checkpoint;
   - its batch ended (dead, killed, or even success), Livy lost it, or its cluster is
     DEAD/TERMINATED or was re-queued by the fleet: restart it, from its checkpoint, on
     the pool's READY cluster (``RESTARTED``);
   - its cluster is DRAINING and the pool has a READY replacement: stop the batch, then
     start it on the replacement (``MOVED``);
   - no job yet: start it (``STARTED``);

   every restart and move counts against the restart budget (``restarts`` per ``per``);
   when it is spent the supervisor does not restart, records ``BACKED_OFF`` and raises
   :class:`StreamBackedOff`, every run, until older restarts age out;
3. report the lag (Kafka end offsets minus the offsets committed with the last
   micro-batch in the sink's ``stream_progress``), the last committed batch and the
   watermark, in its report and in the stream's status record in the registry. The
   stream's one query writes the lake tables in the same micro-batch as the aggregates,
   so this is the lag of every output.

A batch that ended needs nothing more; before a restart off a lost or draining cluster the
previous batch is deleted (asked of its Livy; a dead cluster cannot answer). A driver that
outlives that (Livy lost it, its cluster only looked dead) is fenced out of every sink by
the job itself: a newer attempt's claim takes the sink's progress
row, and every write of a micro-batch, lake commits included, happens under that row's
lock after checking the owner (spark_jobs.clickstream.sink).

Submission reuses :func:`spotlake.jobs.submit_or_reconnect`, so two supervisors that
race still start one batch.

The package's parts:

- :mod:`~spotlake.stream_supervisor.supervisor`: :class:`StreamSupervisor`, the step (observe,
  decide, act, record) and the protocols of its collaborators;
- :mod:`~spotlake.stream_supervisor.decisions`: the decisions, as functions of what the step
  observed (:class:`Decision`, :class:`Assessment`), and the lag;
- :mod:`~spotlake.stream_supervisor.report`: the step's report (:class:`SupervisionReport`);
- :mod:`~spotlake.stream_supervisor.adapters`: the collaborators for real: Kafka
  (:class:`KafkaTopics`) and the sink's PostgreSQL (:class:`SinkDatabase`); Livy's is the Airflow
  side's :class:`hooks.livy.LivyBatchControl`.
"""

from __future__ import annotations

from spotlake.stream_supervisor.adapters import (
    KafkaTopics,
    KafkaUnreachable,
    SinkDatabase,
    TopicMissing,
)
from spotlake.stream_supervisor.decisions import GONE, TERMINAL, Assessment, BatchProbe, Decision, ProbeFailure
from spotlake.stream_supervisor.report import Lag, Progress, SupervisionReport
from spotlake.stream_supervisor.supervisor import (
    STOP_TIMEOUT_S,
    BatchControl,
    KafkaProbe,
    SinkProbe,
    StreamBackedOff,
    StreamSupervisor,
)

__all__ = [
    "GONE",
    "STOP_TIMEOUT_S",
    "TERMINAL",
    "Assessment",
    "BatchControl",
    "BatchProbe",
    "Decision",
    "KafkaProbe",
    "KafkaTopics",
    "KafkaUnreachable",
    "Lag",
    "ProbeFailure",
    "Progress",
    "SinkDatabase",
    "SinkProbe",
    "StreamBackedOff",
    "StreamSupervisor",
    "SupervisionReport",
    "TopicMissing",
]
