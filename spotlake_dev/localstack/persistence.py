"""The local registry across restarts: moto keeps DynamoDB and Secrets Manager in memory, so
the stack saves them.

``make down`` writes every DynamoDB table of moto server (its key schema and all its items)
and every secret (name and value) to ``.stack/data/moto/dynamodb.json`` before it stops moto;
``make up`` loads that file into a fresh moto server. With the lake's files on the local S3 server and its catalog in
PostgreSQL (both on disk), the registry's watermarks, snapshot progress and window plans
come back with them. A stack stopped without ``make down`` (a crash, a SIGKILL) comes back
with the registry of its last ``make down``: windows then re-read from an older watermark,
which re-commits rows the lake already has and loses nothing.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spotlake.stack import StackLayout

FORMAT = 1


def dump_file(layout: StackLayout) -> Path:
    return layout.data_dir / "moto" / "dynamodb.json"


def _client(layout: StackLayout, service: str = "dynamodb") -> Any:
    import boto3

    from spotlake.stack import aws_env

    env = aws_env(layout)
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _encode(value: Any) -> Any:
    """An attribute value as JSON (binary values as base64)."""
    if isinstance(value, bytes | bytearray):
        return {"__b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__b64"}:
            return base64.b64decode(value["__b64"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _table_spec(description: dict[str, Any]) -> dict[str, Any]:
    indexes = [
        {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
        for i in description.get("GlobalSecondaryIndexes", [])
    ]
    # The definitions of exactly the key attributes of the table and its indexes: a table whose
    # indexes were added one UpdateTable at a time can describe fewer (moto keeps only the last
    # call's), and CreateTable refuses both missing and unused ones. Spotlake's keys are strings.
    types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
    schemas = [description["KeySchema"], *(i["KeySchema"] for i in indexes)]
    names = dict.fromkeys(k["AttributeName"] for schema in schemas for k in schema)
    spec: dict[str, Any] = {
        "TableName": description["TableName"],
        "KeySchema": description["KeySchema"],
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": types.get(name, "S")} for name in names],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        spec["GlobalSecondaryIndexes"] = indexes
    return spec


def table_names(client: Any) -> list[str]:
    """Every table's name (``list_tables`` answers 100 at a time)."""
    names: list[str] = []
    for page in client.get_paginator("list_tables").paginate():
        names.extend(page.get("TableNames", []))
    return names


def save(layout: StackLayout, client_for: Callable[[str], Any] | None = None) -> int:
    """Write every table and secret of the running moto server to the dump file; returns the
    number of table items."""
    client_for = client_for or (lambda service: _client(layout, service))
    client = client_for("dynamodb")
    tables = []
    items_total = 0
    for name in table_names(client):
        spec = _table_spec(client.describe_table(TableName=name)["Table"])
        items: list[dict[str, Any]] = []
        for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            items.extend(page.get("Items", []))
        tables.append({"spec": spec, "items": _encode(items)})
        items_total += len(items)
    secrets = client_for("secretsmanager")
    saved = []
    for page in secrets.get_paginator("list_secrets").paginate():
        for entry in page.get("SecretList", []):
            value = secrets.get_secret_value(SecretId=entry["Name"])
            if "SecretString" in value:
                saved.append({"name": entry["Name"], "value": value["SecretString"]})
    target = dump_file(layout)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps({"format": FORMAT, "tables": tables, "secrets": saved}))
    os.replace(partial, target)
    return items_total


def restore(layout: StackLayout, client_for: Callable[[str], Any] | None = None) -> int:
    """Load the dump file into a moto server that has no tables yet; returns the number of table
    items (0 when there is no dump, or when moto already has tables: it kept its state)."""
    source = dump_file(layout)
    if not source.exists():
        return 0
    client_for = client_for or (lambda service: _client(layout, service))
    client = client_for("dynamodb")
    if client.list_tables(Limit=1).get("TableNames"):
        return 0
    dump = json.loads(source.read_text())
    restored = 0
    for table in dump["tables"]:
        spec = table["spec"]
        client.create_table(**spec)
        client.get_waiter("table_exists").wait(TableName=spec["TableName"])
        items = _decode(table["items"])
        for start in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            request = {spec["TableName"]: batch}
            while request:
                request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
        restored += len(items)
    secrets = client_for("secretsmanager")
    for secret in dump.get("secrets", []):
        try:
            secrets.create_secret(Name=secret["name"], SecretString=secret["value"])
        except secrets.exceptions.ResourceExistsException:
            secrets.put_secret_value(SecretId=secret["name"], SecretString=secret["value"])
    return restored
