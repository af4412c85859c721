"""Create the AWS resources spotlake uses: its DynamoDB tables, its S3 buckets and the Glue
database of the lake.

    python -m spotlake.aws_setup --prefix spotlake --region eu-west-1 [--endpoint-url URL] [--dry-run]

The tables, named ``<prefix>-<name>``, on-demand capacity, every key attribute a string:

- ``clusters``, ``jobs``, ``extraction-log``, ``sessions``: the registry's (:data:`spotlake.registry.TABLE_KEYS`);
- ``streams``: the stream supervisor's status (:data:`spotlake.stream_status.TABLE_KEYS`);
- ``alerts``: the alerts' state (:data:`spotlake.alert_store.TABLE_KEYS`).

The buckets the configuration names (:func:`configured_buckets`): the lake's warehouse
(``config/pipelines.yaml``), the streams' checkpoints and outputs (``config/streaming.yaml``),
the job artifacts (``SPOTLAKE_ARTIFACTS`` or ``--artifacts``) and the EMR pools' log locations
(``config/pools.yaml``); a new bucket gets S3's public access block. With ``lake.type: glue``,
the Glue databases ``lake.namespace`` and each stream's ``lake.namespace``.

Idempotent: a table that exists with the expected key is left as it is (items, capacity
mode and settings untouched); a table with another key is an error naming the table and
the fix, raised before anything is created. An existing bucket or database is left as it is.
Nothing is ever changed or deleted. ``--dry-run`` only looks.

The step runs once per deployment with the deployer's credentials: it needs
``dynamodb:DescribeTable`` and ``dynamodb:CreateTable`` on the tables
(``docs/iam/setup-policy.json``); Airflow's role needs neither ``CreateTable`` nor this
module. The local stack and the tests run the same function through
:meth:`spotlake.registry.Registry.create_tables`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spotlake.alert_store import AlertStore
from spotlake.errors import SpotlakeError
from spotlake.registry import Registry
from spotlake.stream_status import StreamStatusStore


class Outcome(StrEnum):
    """What the setup step did with a table, bucket or database."""

    CREATED = "created"
    EXISTS = "exists"  # left as it is
    WOULD_CREATE = "would create"  # --dry-run: missing, not created


CREATED, EXISTS, WOULD_CREATE = Outcome.CREATED, Outcome.EXISTS, Outcome.WOULD_CREATE

# How long to wait for a new table to become ACTIVE (on-demand tables take seconds).
WAIT = {"Delay": 2, "MaxAttempts": 90}


class KeySchemaMismatch(SpotlakeError):
    """A table of spotlake's name exists with another key: it is not spotlake's table."""


def table_keys(prefix: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Every table of the project's state and its key: the registry's, the stream status table and the alerts table."""
    return {
        **Registry(None, prefix).table_keys(),
        **StreamStatusStore(None, prefix).table_keys(),
        **AlertStore(None, prefix).table_keys(),
    }


@dataclass(frozen=True)
class TableResult:
    table: str
    keys: tuple[tuple[str, str], ...]
    outcome: Outcome

    def line(self) -> str:
        key = ", ".join(f"{name} {kind} S" for name, kind in self.keys)
        return f"{self.table}: {self.outcome} (key {key}{'; on-demand' if self.outcome != EXISTS else ''})"


def _describe(client: Any, table: str) -> dict[str, Any] | None:
    try:
        description: dict[str, Any] = client.describe_table(TableName=table)["Table"]
        return description
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def _key_of(description: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
    return tuple(
        sorted((k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?")) for k in description.get("KeySchema", []))
    )


def check_key(table: str, keys: tuple[tuple[str, str], ...], description: dict[str, Any], prefix: str) -> None:
    """KeySchemaMismatch unless the described table has the key ``keys`` (string attributes)."""
    found = _key_of(description)
    wanted = tuple(sorted((name, kind, "S") for name, kind in keys))
    if found != wanted:
        said = ", ".join(" ".join(k) for k in found) or "none"
        raise KeySchemaMismatch(
            f"DynamoDB table {table} exists with the key ({said}), not spotlake's "
            f"({', '.join(' '.join(k) for k in wanted)}): it is another application's table, or a "
            f"leftover of an incompatible version. Fix: use another prefix (--prefix, and the same "
            f"SPOTLAKE_REGISTRY_PREFIX for Airflow) than '{prefix}', or delete the table if nothing uses it "
            f"(its items are lost), then run the setup again"
        )


def _create(client: Any, table: str, keys: tuple[tuple[str, str], ...], prefix: str) -> Outcome:
    try:
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        # Another setup created it meanwhile: it must still have the expected key.
        described = _describe(client, table)
        if described is not None:
            check_key(table, keys, described, prefix)
        return EXISTS
    return CREATED


def ensure_tables(client: Any, prefix: str, dry_run: bool = False) -> list[TableResult]:
    """Create the missing tables of ``table_keys(prefix)`` through the low-level DynamoDB
    ``client``; check the existing ones' keys first (KeySchemaMismatch before any change)."""
    specs = table_keys(prefix)
    present = {table: _describe(client, table) for table in specs}
    for table, description in present.items():
        if description is not None:
            check_key(table, specs[table], description, prefix)
    results = []
    for table, keys in specs.items():
        if present[table] is not None:
            outcome = EXISTS
        elif dry_run:
            outcome = WOULD_CREATE
        else:
            outcome = _create(client, table, keys, prefix)
        results.append(TableResult(table, keys, outcome))
    if not dry_run:
        for table in specs:  # new tables, and existing ones another setup is still creating
            client.get_waiter("table_exists").wait(TableName=table, WaiterConfig=WAIT)
    return results


@dataclass(frozen=True)
class ResourceResult:
    kind: str  # bucket, glue database
    name: str
    outcome: Outcome
    why: str = ""

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.outcome}" + (f" ({self.why})" if self.why else "")


def configured_buckets(artifacts: str | None = None) -> dict[str, str]:
    """Every S3 bucket the configuration names, with what it holds."""
    from spotlake import config, pools, streaming
    from spotlake.lake import split_s3

    found: dict[str, list[str]] = {}

    def add(uri: str | None, what: str) -> None:
        if uri and uri.startswith(("s3://", "s3a://")):
            found.setdefault(split_s3(uri)[0], []).append(what)

    lake = config.load().lake
    add(lake.warehouse, "the lake's tables")
    for stream in streaming.load().streams:
        add(stream.checkpoint, f"stream {stream.name}'s checkpoints")
    add(artifacts or os.environ.get("SPOTLAKE_ARTIFACTS"), "job code and dependencies")
    try:
        emr_pools = pools.load(provider="emr").pools
    except SpotlakeError as exc:
        if "has no 'emr' section" not in str(exc):
            raise  # a pools.yaml the fleet would refuse too: say so now
        emr_pools = ()  # pools without EMR shapes: no EMR log locations
    for pool in emr_pools:
        add(pool.emr.log_uri if pool.emr else None, f"pool {pool.name}'s EMR logs")
    return {bucket: ", ".join(dict.fromkeys(what)) for bucket, what in found.items()}


def ensure_buckets(s3: Any, buckets: dict[str, str], region: str | None, dry_run: bool = False) -> list[ResourceResult]:
    results = []
    for bucket, what in buckets.items():
        try:
            s3.head_bucket(Bucket=bucket)
            results.append(ResourceResult("bucket", bucket, EXISTS, what))
            continue
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("301", "PermanentRedirect"):
                raise SpotlakeError(
                    f"S3 bucket {bucket} ({what}) exists in another region than {region}: buckets are used from "
                    "the clusters' region. Fix: run the setup with that bucket's --region, or name a bucket of "
                    "this region in the configuration"
                ) from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise SpotlakeError(
                    f"S3 bucket {bucket} ({what}) exists but cannot be used with these credentials ({code}): it "
                    "belongs to another account, or the role lacks s3:ListBucket on it. Fix: name another bucket "
                    "in the configuration, or grant access"
                ) from None
        if dry_run:
            results.append(ResourceResult("bucket", bucket, WOULD_CREATE, what))
            continue
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        results.append(ResourceResult("bucket", bucket, CREATED, what))
    return results


def ensure_glue_database(glue: Any, dry_run: bool = False) -> list[ResourceResult]:
    """The lake's Glue databases (the pipelines' namespace and each stream's), when the lake's catalog is Glue."""
    from spotlake import config, streaming

    lake = config.load().lake
    if lake.type != "glue":
        return []
    namespaces = {lake.namespace: "the lake's tables"}
    for stream in streaming.load(catalog=lake).streams:
        if stream.lake is not None:
            namespaces.setdefault(stream.lake.namespace, f"stream {stream.name}'s tables")
    results = []
    for namespace, what in namespaces.items():
        try:
            glue.get_database(Name=namespace)
            results.append(ResourceResult("glue database", namespace, EXISTS, what))
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "EntityNotFoundException":
                raise
        if dry_run:
            results.append(ResourceResult("glue database", namespace, WOULD_CREATE, what))
            continue
        glue.create_database(DatabaseInput={"Name": namespace, "Description": f"spotlake: {what}"})
        results.append(ResourceResult("glue database", namespace, CREATED, what))
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spotlake.aws_setup", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prefix",
        default=os.environ.get("SPOTLAKE_REGISTRY_PREFIX", "spotlake"),
        help="table name prefix: Airflow's SPOTLAKE_REGISTRY_PREFIX (default: that variable, else 'spotlake')",
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")
    parser.add_argument(
        "--endpoint-url", default=None, help="endpoint of DynamoDB, S3 and Glue (default: AWS's; e.g. a moto server)"
    )
    parser.add_argument(
        "--artifacts", default=None, help="the job artifacts location s3://bucket/prefix (default: SPOTLAKE_ARTIFACTS)"
    )
    parser.add_argument("--tables-only", action="store_true", help="only the DynamoDB tables")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be created")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import boto3

    try:
        client = boto3.client("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url)
        results: list[Any] = list(ensure_tables(client, args.prefix, dry_run=args.dry_run))
        if not args.tables_only:
            s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.endpoint_url)
            region = args.region or s3.meta.region_name
            results += ensure_buckets(s3, configured_buckets(args.artifacts), region, dry_run=args.dry_run)
            glue = boto3.client("glue", region_name=args.region, endpoint_url=args.endpoint_url)
            results += ensure_glue_database(glue, dry_run=args.dry_run)
    except SpotlakeError as exc:
        print(f"spotlake aws_setup: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(
            f"spotlake aws_setup: {exc}. Fix: check the credentials and the region (--region or "
            "AWS_DEFAULT_REGION), and that they may do what docs/iam/setup-policy.json allows (the tables "
            f"{args.prefix}-*, the configured buckets, the Glue database)",
            file=sys.stderr,
        )
        return 2
    for result in results:
        print(result.line())
    if args.dry_run:
        print("dry run: nothing was created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
