"""The streaming supervisor's record of each stream, in the registry (DynamoDB).

Table ``<prefix>-streams`` (key ``stream``, :data:`TABLE_KEYS`), next to the registry's own
tables and created with them by ``python -m spotlake.aws_setup`` (the supervisor only checks
that it exists: Airflow's role needs no ``dynamodb:CreateTable``). One item per stream: what
the supervisor last saw (state, cluster, Livy batch, lag, last committed micro-batch,
watermark) and the restarts it made, which its restart budget counts. Writes are conditional on the item's
version, like every registry write; ``python -m spotlake.status`` reads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from spotlake.errors import SpotlakeError
from spotlake.fleet import parse_time
from spotlake.registry import StaleState

# The table's key, by its name after the prefix (as spotlake.registry.TABLE_KEYS).
LAG_HISTORY_SECONDS = 24 * 3600

TABLE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {"streams": (("stream", "HASH"),)}


class StreamTableMissing(SpotlakeError):
    """The stream status table does not exist: the deployment's setup step was not run."""


class StreamState(StrEnum):
    """The stream's state as the supervisor last saw it (its report's and its status record's ``state``)."""

    RUNNING = "RUNNING"  # its batch is live
    STARTED = "STARTED"  # first submission (or after a deliberate stop)
    RESTARTED = "RESTARTED"  # resubmitted after its batch ended or its cluster was lost
    MOVED = "MOVED"  # stopped on a draining cluster and started on the replacement
    WAITING = "WAITING"  # its cluster does not answer; the fleet decides whether it is dead
    BACKED_OFF = "BACKED_OFF"  # restart budget spent: no restart until older restarts age out


@dataclass
class Restart:
    at: str
    cause: str
    reason: str = ""


@dataclass
class StreamStatus:
    stream: str
    state: str = ""
    pool: str = ""
    cluster_id: str = ""
    batch_id: int = -1
    livy_state: str = ""
    attempt: int = 0
    last_batch_id: int = -1
    committed_at: str = ""
    watermark: str = ""
    lag: int = -1
    lag_by_partition: dict[str, int] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)
    reason: str = ""
    checked_at: str = ""
    version: int = 0
    dead_letters_last_hour: int = 0  # as of the last check
    # The lag at each check of the last day: "<epoch seconds>,<records>;..." (the lag chart)
    lag_history: str = ""

    def record_lag(self, now: datetime, lag: int) -> None:
        """Add a lag reading to ``lag_history``, dropping readings older than a day."""
        since = now.timestamp() - LAG_HISTORY_SECONDS
        kept = [entry for entry in self.lag_history.split(";") if entry and float(entry.split(",")[0]) >= since]
        self.lag_history = ";".join([*kept, f"{now.timestamp():.0f},{lag}"])

    def lag_readings(self) -> list[tuple[float, int]]:
        """``lag_history`` as (epoch seconds, records) pairs, oldest first."""
        readings = []
        for entry in self.lag_history.split(";"):
            at, _, lag = entry.partition(",")
            if at and lag:
                readings.append((float(at), int(lag)))
        return readings

    def recent_restarts(self, now: datetime, per: timedelta) -> list[Restart]:
        """Restarts within ``per`` before ``now``."""
        return [r for r in self.restarts if (moment := parse_time(r.at)) is not None and now - moment < per]

    def to_doc(self) -> str:
        body = asdict(self)
        for key in ("stream", "version"):
            body.pop(key)
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StreamStatus:
        body = json.loads(item.get("doc", {}).get("S", "{}"))
        names = {f.name for f in fields(cls)}
        body = {k: v for k, v in body.items() if k in names}
        body["restarts"] = [Restart(**r) for r in body.get("restarts", [])]
        return cls(stream=item["stream"]["S"], version=int(item["version"]["N"]), **body)


class StreamStatusStore:
    """Stream status items over a low-level boto3 DynamoDB client (the registry's)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @property
    def table(self) -> str:
        return f"{self.prefix}-streams"

    def table_keys(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """The table and its key (:data:`TABLE_KEYS`)."""
        return {self.table: TABLE_KEYS["streams"]}

    def require_table(self) -> None:
        """Check that the table exists; :class:`StreamTableMissing`, naming the setup command, if not."""
        try:
            self.client.describe_table(TableName=self.table)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            raise StreamTableMissing(
                f"DynamoDB table {self.table} (the streams' status) does not exist. Fix: create the registry's "
                f"tables with `python -m spotlake.aws_setup --prefix {self.prefix}` (docs/deploying-to-aws.md, "
                "section 4; the local stack: `make up`)"
            ) from None

    def get(self, stream: str) -> StreamStatus | None:
        try:
            item = self.client.get_item(TableName=self.table, Key={"stream": {"S": stream}}, ConsistentRead=True).get("Item")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return StreamStatus.from_item(item) if item else None

    def all(self) -> list[StreamStatus]:
        """Every stream's status ([] while the table does not exist)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        try:
            while True:
                page = self.client.scan(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return []
            raise
        return sorted((StreamStatus.from_item(i) for i in items), key=lambda s: s.stream)

    def put(self, status: StreamStatus) -> StreamStatus:
        """Write ``status`` if the stored item is still at ``status.version`` (absent for 0)."""
        # "stream" is a DynamoDB reserved word: name it through #k.
        if status.version == 0:
            condition, values = "attribute_not_exists(#k)", {}
        else:
            condition, values = "version = :v", {":v": {"N": str(status.version)}}
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"stream": {"S": status.stream}, "version": {"N": str(status.version + 1)}, "doc": {"S": status.to_doc()}},
                ConditionExpression=condition,
                **({"ExpressionAttributeNames": {"#k": "stream"}} if status.version == 0 else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StaleState(f"stream status of {status.stream} changed since version {status.version}") from None
            raise
        status.version += 1
        return status
