"""The alerts' record in the registry (DynamoDB): one item per alert, changed only by conditional writes.

Table ``<prefix>-alerts`` (key ``alert``, :data:`TABLE_KEYS`), created with the registry's tables
by ``python -m spotlake.aws_setup`` (the alerts task never creates it: Airflow's role needs no
``dynamodb:CreateTable``). An item is what :mod:`spotlake.alerts` decided about one condition
(``pipeline:<name>:stale``, ``pool:<name>:no_ready``, ``stream:<name>:restart_budget``): whether
it is pending, firing or cleared, what it said when it was raised, and whether the notifiers have
been told of its last transition (its delivery). Every write names the version it read, as the
registry's do (:mod:`spotlake.registry`): of two alert tasks at once, one wins each change and the
other gets :class:`~spotlake.registry.StaleState`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from spotlake.dynamo_items import attribute_values, from_item, to_item
from spotlake.errors import SpotlakeError
from spotlake.registry import StaleState

# The table's key, by its name after the prefix (as spotlake.registry.TABLE_KEYS).
TABLE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {"alerts": (("alert", "HASH"),)}


class AlertTableMissing(SpotlakeError):
    """The alerts table does not exist: the deployment's setup step was not run."""


class AlertState(StrEnum):
    """Where an alert stands."""

    PENDING = "PENDING"  # its condition holds, for less than the condition's ``after``: nothing raised yet
    FIRING = "FIRING"  # raised (one event), not cleared yet
    CLEARED = "CLEARED"  # its condition no longer holds (cleared: one event, if it had been raised)


class Delivery(StrEnum):
    """Whether the notifiers have been told of the alert's last transition (raise or clear)."""

    DONE = "done"  # told (or nothing to tell)
    SENDING = "sending"  # an alerts task claimed it at ``claimed_at`` and is sending it
    RETRY = "retry"  # the notifiers of ``retry`` failed it: the next alerts task sends it to them again


@dataclass
class AlertRecord:
    alert: str  # the condition's key, e.g. pipeline:shop_orders:stale
    kind: str  # spotlake.alerts.AlertKind
    subject: str  # the pipeline, pool or stream
    state: str  # AlertState
    severity: str = ""
    title: str = ""
    message: str = ""  # what was wrong and what to do, as it was when raised
    since: str = ""  # when the condition was first seen holding (ISO time)
    raised_at: str = ""  # "" while pending, and for a pending alert that cleared unraised
    cleared_at: str = ""
    delivery: str = Delivery.DONE
    retry: list[str] = field(default_factory=list)  # the notifiers still to tell (RETRY; SENDING: [] is all)
    claimed_at: str = ""  # when the delivery was last claimed
    attempts: int = 0  # claims of the last transition's delivery
    last_error: str = ""
    updated_at: str = ""
    version: int = 0


class AlertStore:
    """Alert items over a low-level boto3 DynamoDB client (the registry's)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @property
    def table(self) -> str:
        return f"{self.prefix}-alerts"

    def table_keys(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """The table and its key (:data:`TABLE_KEYS`)."""
        return {self.table: TABLE_KEYS["alerts"]}

    def _missing(self) -> AlertTableMissing:
        return AlertTableMissing(
            f"DynamoDB table {self.table} (the alerts' state) does not exist. Fix: create the registry's tables with "
            f"`python -m spotlake.aws_setup --prefix {self.prefix}` (docs/deploying-to-aws.md, section 4; the local "
            "stack: `make up`)"
        )

    def get(self, alert: str) -> AlertRecord | None:
        try:
            item = self.client.get_item(TableName=self.table, Key=attribute_values({"alert": alert}), ConsistentRead=True).get(
                "Item"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise self._missing() from None
            raise
        return from_item(AlertRecord, item) if item else None

    def all(self) -> list[AlertRecord]:
        """Every alert's record, by key (:class:`AlertTableMissing` without the table)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        try:
            while True:
                page = self.client.scan(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise self._missing() from None
            raise
        return sorted((from_item(AlertRecord, i) for i in items), key=lambda r: r.alert)

    def put(self, record: AlertRecord, now: str) -> AlertRecord:
        """Write ``record`` whole if the stored item is still at ``record.version`` (0: if there is
        none); the record as written (at the next version). :class:`StaleState` if another task
        changed the item first; ``record`` itself is left as it was."""
        written = replace(record, version=record.version + 1, updated_at=now)
        if record.version == 0:
            condition, names, values = "attribute_not_exists(#k)", {"#k": "alert"}, {}
        else:
            condition, names, values = "version = :v", {}, {":v": record.version}
        try:
            self.client.put_item(
                TableName=self.table,
                Item=to_item(written),
                ConditionExpression=condition,
                **({"ExpressionAttributeNames": names} if names else {}),
                **({"ExpressionAttributeValues": attribute_values(values)} if values else {}),
            )
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                raise StaleState(f"alert {record.alert} changed since version {record.version}") from None
            if code == "ResourceNotFoundException":
                raise self._missing() from None
            raise
        return written
