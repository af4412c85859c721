"""The extraction task's extra links: each URL is built from what the task pushed to XCom under its
fixed key; the S3 console on AWS, the s3:// location itself elsewhere; empty without a value."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from airflow.sdk.execution_time.xcom import XCom
from airflow.sdk.types import TaskInstanceKey

from operators.extraction import ExtractWindowOperator
from operators.links import (
    LAKE_TABLE_KEY,
    LIVY_LOG_KEY,
    SNAPSHOT_KEY,
    SPOTLAKE_OPERATOR_LINKS,
    lake_table_value,
    livy_log_value,
    s3_console,
    snapshot_value,
)

KEY = TaskInstanceKey(dag_id="extract_shop_orders", task_id="extract", run_id="scheduled__2026-12-05T14:00:00+00:00")
CONSOLE = {"region": "eu-west-1", "aws_domain": "aws.amazon.com"}
LOCATION = "s3://spotlake-lake/warehouse/shop/shop_orders"


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The task instance's XComs, as XCom.get_value reads them when the task ends."""
    values: dict[str, Any] = {}

    def get_value(*, ti_key: TaskInstanceKey, key: str) -> Any:
        assert ti_key == KEY
        return values.get(key)

    monkeypatch.setattr(XCom, "get_value", staticmethod(get_value))
    return values


def urls() -> dict[str, str]:
    task = ExtractWindowOperator(task_id="extract", pipeline_name="shop_orders", pool_name="small")
    return {link.name: link.get_link(task, ti_key=KEY) for link in task.operator_extra_links}


def test_on_aws_the_lake_links_open_the_s3_console_and_the_livy_link_its_log_page(pushed: dict[str, Any]) -> None:
    table = lake_table_value("lake.shop.shop_orders", LOCATION, CONSOLE)
    pushed.update(
        {
            LAKE_TABLE_KEY: table,
            SNAPSHOT_KEY: snapshot_value(table, 4179528390213451733),
            LIVY_LOG_KEY: livy_log_value("http://10.0.1.17:8998", "batch", 12),
        }
    )
    console = "https://console.aws.amazon.com/s3/buckets/spotlake-lake?region=eu-west-1&prefix=warehouse/shop/shop_orders/"
    assert urls() == {
        "Lake table": f"{console}&showversions=false",
        "Committed snapshot": f"{console}metadata/snap-4179528390213451733-&showversions=false",
        "Livy log": "http://10.0.1.17:8998/ui/batch/12/log",
    }


def test_elsewhere_the_lake_links_are_the_locations_and_a_session_has_its_own_log_page(pushed: dict[str, Any]) -> None:
    table = lake_table_value("lake.shop.shop_orders", LOCATION, None)
    pushed.update(
        {
            LAKE_TABLE_KEY: table,
            SNAPSHOT_KEY: snapshot_value(table, 41),
            LIVY_LOG_KEY: livy_log_value("http://127.0.0.1:18998/", "session", 3),
        }
    )
    assert urls() == {
        "Lake table": f"{LOCATION}/",
        "Committed snapshot": f"{LOCATION}/metadata/snap-41-",
        "Livy log": "http://127.0.0.1:18998/ui/session/3/log",
    }


def test_a_link_without_its_value_is_empty(pushed: dict[str, Any]) -> None:
    pushed[LAKE_TABLE_KEY] = lake_table_value("lake.shop.shop_orders", LOCATION, None)  # failed before its commit
    assert urls() == {"Lake table": f"{LOCATION}/", "Committed snapshot": "", "Livy log": ""}


def test_the_console_is_the_s3_clients_when_its_s3_is_awss() -> None:
    assert s3_console(boto3.client("s3", region_name="eu-west-1")) == CONSOLE
    assert s3_console(boto3.client("s3", region_name="us-east-1")) == {"region": "us-east-1", "aws_domain": "aws.amazon.com"}
    assert s3_console(boto3.client("s3", region_name="cn-north-1")) == {"region": "cn-north-1", "aws_domain": "amazonaws.cn"}
    # the local stack's S3 server: no console shows it
    assert s3_console(boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:19000")) is None


def test_the_links_a_plugin_registers_are_the_tasks() -> None:
    task = ExtractWindowOperator(task_id="extract", pipeline_name="shop_orders", pool_name="small")
    assert [type(link) for link in SPOTLAKE_OPERATOR_LINKS] == [type(link) for link in task.operator_extra_links]
    assert [(link.name, link.xcom_key) for link in SPOTLAKE_OPERATOR_LINKS] == [
        ("Lake table", "_link_LakeTableLink"),
        ("Committed snapshot", "_link_SnapshotLink"),
        ("Livy log", "_link_LivyLogLink"),
    ]
