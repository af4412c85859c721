"""Extra links of the extraction task in the Airflow UI: its lake table, the snapshot its window
committed, and the Livy log of its batch or session.

The task pushes what the links need to XCom under fixed keys (:data:`LAKE_TABLE_KEY`,
:data:`SNAPSHOT_KEY`, :data:`LIVY_LOG_KEY`; see :func:`lake_table_value`, :func:`snapshot_value`,
:func:`livy_log_value`); each link reads its key back with ``XCom.get_value`` when the task ends, as
the Amazon provider's links do, and Airflow keeps the URL it returns. A link whose value is missing
(a task that failed before its window committed has no snapshot) is empty.

Lake locations are ``s3://`` URIs. When the task's S3 is AWS's, a link opens the AWS S3 console at
the location; otherwise (the local stack's S3) the link is the ``s3://`` location itself, to copy
into an S3 client.

Airflow 3 shows an operator's extra links only if a plugin registers their classes: a plugin's
``operator_extra_links = [*SPOTLAKE_OPERATOR_LINKS]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

LAKE_TABLE_KEY = "spotlake_lake_table"
SNAPSHOT_KEY = "spotlake_snapshot"
LIVY_LOG_KEY = "spotlake_livy_log"

# The AWS console's domain per partition (as the Amazon provider's links have it).
CONSOLE_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


def s3_console(s3: Any) -> dict[str, str] | None:
    """The S3 console that shows the objects of boto3 S3 client ``s3`` (its region and console
    domain), or None when the client's S3 is not AWS's (a local S3 server the console cannot show)."""
    host = urlsplit(str(s3.meta.endpoint_url)).hostname or ""
    domain = CONSOLE_DOMAINS.get(str(s3.meta.partition))
    if domain is None or not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return None
    return {"region": str(s3.meta.region_name), "aws_domain": domain}


def lake_table_value(table: str, location: str, console: dict[str, str] | None) -> dict[str, Any]:
    """What :class:`LakeTableLink` reads: the table's name, its location, and the S3 console (if any)."""
    return {"table": table, "location": location, "console": console}


def snapshot_value(table: dict[str, Any], snapshot_id: int) -> dict[str, Any]:
    """What :class:`SnapshotLink` reads: the table (a :func:`lake_table_value`) and the snapshot its
    window committed."""
    return {**table, "snapshot_id": snapshot_id}


def livy_log_value(endpoint: str, kind: str, livy_id: int) -> dict[str, Any]:
    """What :class:`LivyLogLink` reads: the Livy endpoint and the batch (``kind`` "batch") or the
    session (``kind`` "session") that runs the job."""
    return {"endpoint": endpoint, "kind": kind, "id": livy_id}


def location_url(location: str, console: dict[str, str] | None) -> str:
    """``s3://bucket/key`` as a link: the S3 console at that prefix, or the location itself."""
    if console is None:
        return location
    parts = urlsplit(location)
    return (
        f"https://console.{console['aws_domain']}/s3/buckets/{parts.netloc}?region={console['region']}"
        f"&prefix={quote(parts.path.lstrip('/'), safe='/')}&showversions=false"
    )


def lake_table_url(value: dict[str, Any]) -> str:
    """The table's folder: its data files and its metadata."""
    return location_url(f"{value['location'].rstrip('/')}/", value.get("console"))


def snapshot_url(value: dict[str, Any]) -> str:
    """The snapshot's manifest list: Iceberg names it ``metadata/snap-<snapshot id>-<attempt>-<uuid>.avro``
    under the table's location, so the prefix up to the id finds it."""
    return location_url(f"{value['location'].rstrip('/')}/metadata/snap-{value['snapshot_id']}-", value.get("console"))


def livy_log_url(value: dict[str, Any]) -> str:
    """Livy's page of the batch's or session's log."""
    return f"{value['endpoint'].rstrip('/')}/ui/{value['kind']}/{value['id']}/log"


class PushedValueLink(BaseOperatorLink):
    """A link built from the value the task pushed to XCom under ``key``; empty without one."""

    name: ClassVar[str]
    key: ClassVar[str]

    def url(self, value: dict[str, Any]) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = XCom.get_value(ti_key=ti_key, key=self.key)
        return self.url(value) if isinstance(value, dict) else ""


class LakeTableLink(PushedValueLink):
    name = "Lake table"
    key = LAKE_TABLE_KEY

    def url(self, value: dict[str, Any]) -> str:
        return lake_table_url(value)


class SnapshotLink(PushedValueLink):
    name = "Committed snapshot"
    key = SNAPSHOT_KEY

    def url(self, value: dict[str, Any]) -> str:
        return snapshot_url(value)


class LivyLogLink(PushedValueLink):
    name = "Livy log"
    key = LIVY_LOG_KEY

    def url(self, value: dict[str, Any]) -> str:
        return livy_log_url(value)


SPOTLAKE_OPERATOR_LINKS = (LakeTableLink(), SnapshotLink(), LivyLogLink())
