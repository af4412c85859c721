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
the Glue databases ``lake.namespace`` and each stream's ``lake.namespace``. Each EMR pool's Livy
security group (:func:`ensure_livy_groups`, from ``emr.livy_access``).

The jobs table also has global secondary indexes (:data:`spotlake.registry.JOB_INDEXES`: the
fleet finds jobs by cluster and by pool with a Query, never a Scan) and DynamoDB's time to live on
``expires_at`` (finished jobs expire after ``SPOTLAKE_JOB_RETENTION_DAYS``).

Idempotent: a table that exists with the expected key keeps its items, capacity mode and
settings; it only gains the indexes and the time to live it lacks (an index is added, then
waited for until ACTIVE; nothing is ever removed). A table with another key, or an index of
spotlake's name with another key, is an error naming the table and the fix, raised before
anything is created. An existing bucket or database is left as it is. Nothing is ever deleted.
``--dry-run`` only looks.

The step runs once per deployment (and again after an upgrade) with the deployer's
credentials: it needs ``dynamodb:DescribeTable``, ``CreateTable``, ``UpdateTable``,
``DescribeTimeToLive`` and ``UpdateTimeToLive`` on the tables (``docs/iam/setup-policy.json``);
Airflow's role needs none of them, nor this module. The local stack and the tests run the same function through
:meth:`spotlake.registry.Registry.create_tables`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    UPDATED = "updated"  # existed; indexes or time to live added
    WOULD_CREATE = "would create"  # --dry-run: missing, not created
    WOULD_UPDATE = "would update"  # --dry-run: exists, lacks indexes or time to live


CREATED, EXISTS, UPDATED, WOULD_CREATE, WOULD_UPDATE = (
    Outcome.CREATED,
    Outcome.EXISTS,
    Outcome.UPDATED,
    Outcome.WOULD_CREATE,
    Outcome.WOULD_UPDATE,
)
Indexes = dict[str, tuple[tuple[str, str], ...]]

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


def table_indexes(prefix: str) -> dict[str, Indexes]:
    """The global secondary indexes of each table that has some."""
    return Registry(None, prefix).table_indexes()


def table_ttl(prefix: str) -> dict[str, str]:
    """The time-to-live attribute of each table that has one."""
    return Registry(None, prefix).table_ttl()


@dataclass(frozen=True)
class TableResult:
    table: str
    keys: tuple[tuple[str, str], ...]
    outcome: Outcome
    added: tuple[str, ...] = ()  # what an existing table gained (or would gain)

    def line(self) -> str:
        key = ", ".join(f"{name} {kind} S" for name, kind in self.keys)
        said = "; on-demand" if self.outcome in (CREATED, WOULD_CREATE) else ""
        if self.added:
            said += "; " + ", ".join(self.added)
        return f"{self.table}: {self.outcome} (key {key}{said})"


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


def check_indexes(table: str, indexes: Indexes, description: dict[str, Any], prefix: str) -> None:
    """KeySchemaMismatch when the table has an index of one of ``indexes``' names with another key."""
    for index in description.get("GlobalSecondaryIndexes", []):
        wanted = indexes.get(index["IndexName"])
        found = tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"])
        if wanted is not None and tuple(sorted(found)) != tuple(sorted(wanted)):
            said, own = (", ".join(" ".join(k) for k in keys) for keys in (found, wanted))
            raise KeySchemaMismatch(
                f"DynamoDB table {table} has an index {index['IndexName']} keyed ({said}), not spotlake's ({own}): "
                "it is another application's table, or a leftover of an incompatible version. "
                f"Fix: use another prefix than '{prefix}', or delete that index (DynamoDB console or "
                "update-table --global-secondary-index-updates Delete), then run the setup again"
            )


def _index_spec(name: str, keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": attribute, "KeyType": kind} for attribute, kind in keys],
        "Projection": {"ProjectionType": "ALL"},
    }


def _definitions(*keys: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    names = dict.fromkeys(name for key in keys for name, _ in key)
    return [{"AttributeName": name, "AttributeType": "S"} for name in names]


def _create(client: Any, table: str, keys: tuple[tuple[str, str], ...], prefix: str, indexes: Indexes) -> Outcome:
    kwargs: dict[str, Any] = {}
    if indexes:
        kwargs["GlobalSecondaryIndexes"] = [_index_spec(name, index) for name, index in indexes.items()]
    try:
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=_definitions(keys, *indexes.values()),
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            **kwargs,
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


def _missing(client: Any, table: str, description: dict[str, Any] | None, indexes: Indexes, ttl: str) -> list[str]:
    """What the table lacks of spotlake's: ``index <name>``, ``time to live on <attribute>``."""
    have = {i["IndexName"] for i in (description or {}).get("GlobalSecondaryIndexes", [])}
    missing = [f"index {name}" for name in indexes if name not in have]
    if ttl:
        described = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        status, attribute = described.get("TimeToLiveStatus"), described.get("AttributeName")
        if status in ("ENABLED", "ENABLING") and attribute != ttl:
            raise SpotlakeError(
                f"DynamoDB table {table} has time to live on '{attribute}', not spotlake's '{ttl}'. Fix: disable "
                "it (update-time-to-live), wait an hour (DynamoDB's rule), then run the setup again"
            )
        if status not in ("ENABLED", "ENABLING"):
            missing.append(f"time to live on {ttl}")
    return missing


def _add(client: Any, table: str, keys: tuple[tuple[str, str], ...], indexes: Indexes, ttl: str, missing: list[str]) -> None:
    """Add the ``missing`` indexes (one UpdateTable each: DynamoDB's rule) and time to live."""
    for what in missing:
        if what.startswith("index "):
            name = what.removeprefix("index ")
            for _ in range(WAIT["MaxAttempts"]):
                # Every key attribute the table will have, its present indexes' included: a store that
                # takes the list as the table's whole set (moto does) must not lose the others'.
                present = [
                    tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"])
                    for index in client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
                ]
                try:
                    client.update_table(
                        TableName=table,
                        AttributeDefinitions=_definitions(keys, *present, indexes[name]),
                        GlobalSecondaryIndexUpdates=[{"Create": _index_spec(name, indexes[name])}],
                    )
                    break
                except ClientError as exc:
                    # The table is being updated (another index fills): DynamoDB takes one at a time.
                    if exc.response["Error"]["Code"] not in ("ResourceInUseException", "LimitExceededException"):
                        raise
                    if name in {
                        i["IndexName"] for i in client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
                    }:
                        break  # another setup is creating it
                    time.sleep(WAIT["Delay"])
            wait_for_indexes(client, table, [name])
        elif ttl:
            client.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl})


def wait_for_indexes(client: Any, table: str, names: list[str]) -> None:
    """Wait until the table's indexes ``names`` are ACTIVE (a new index fills from the table first)."""
    for _ in range(WAIT["MaxAttempts"] * 10):
        described = client.describe_table(TableName=table)["Table"]
        status = {i["IndexName"]: i.get("IndexStatus") for i in described.get("GlobalSecondaryIndexes", [])}
        if all(status.get(name) == "ACTIVE" for name in names):
            return
        time.sleep(WAIT["Delay"])
    raise SpotlakeError(
        f"the indexes {names} of DynamoDB table {table} are not ACTIVE after {WAIT['MaxAttempts'] * 10 * WAIT['Delay']} s; "
        "run the setup again later (it waits for them again)"
    )


def ensure_tables(client: Any, prefix: str, dry_run: bool = False) -> list[TableResult]:
    """Create the missing tables of ``table_keys(prefix)`` (with their indexes and time to live)
    through the low-level DynamoDB ``client``, and add what existing ones lack; check the existing
    ones' keys and indexes first (KeySchemaMismatch before any change)."""
    specs, all_indexes, ttls = table_keys(prefix), table_indexes(prefix), table_ttl(prefix)
    present = {table: _describe(client, table) for table in specs}
    for table, description in present.items():
        if description is not None:
            check_key(table, specs[table], description, prefix)
            check_indexes(table, all_indexes.get(table, {}), description, prefix)
    results = []
    for table, keys in specs.items():
        indexes, ttl = all_indexes.get(table, {}), ttls.get(table, "")
        if present[table] is None and dry_run:
            results.append(TableResult(table, keys, WOULD_CREATE))
            continue
        outcome = EXISTS if present[table] is not None else _create(client, table, keys, prefix, indexes)
        if not dry_run:
            client.get_waiter("table_exists").wait(TableName=table, WaiterConfig=WAIT)
        # A new table has its indexes; a table found (or created by another setup meanwhile) may not.
        described = present[table] if present[table] is not None else _describe(client, table)
        missing = _missing(client, table, described, indexes, ttl)
        if missing and dry_run:
            results.append(TableResult(table, keys, WOULD_UPDATE, tuple(missing)))
            continue
        _add(client, table, keys, indexes, ttl, missing)
        if outcome == EXISTS and missing:
            outcome = UPDATED
        results.append(TableResult(table, keys, outcome, tuple(missing) if outcome == UPDATED else ()))
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
    from spotlake import config, streaming
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
    for pool in emr_pools():
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


def emr_pools() -> tuple[Any, ...]:
    """The pools' EMR shapes (none when pools.yaml describes no EMR cluster)."""
    from spotlake import pools

    try:
        return pools.load(provider="emr").pools
    except SpotlakeError as exc:
        if "has no 'emr' section" not in str(exc):
            raise  # a pools.yaml the fleet would refuse too: say so now
        return ()


def ensure_livy_groups(ec2: Any, prefix: str, pool_configs: Any = None, dry_run: bool = False) -> list[ResourceResult]:
    """Each EMR pool's Livy security group (``emr.livy_access``), in the VPC of its subnets: made
    once (tagged with the pool and the registry prefix, and for EMR's v2 managed policy), then
    kept admitting exactly the configured sources on TCP 8998: missing rules added, any other
    ingress rule revoked. The EMR provider adds it to every cluster's primary node."""
    from spotlake.providers.emr import (
        TAG_LIVY_FOR,
        TAG_MANAGED_POLICIES,
        TAG_REGISTRY,
        livy_group_name,
        livy_permissions,
        rule_set,
    )

    results = []
    for pool in pool_configs if pool_configs is not None else emr_pools():
        if pool.emr is None or pool.emr.livy_access is None:
            continue
        name = livy_group_name(prefix, pool.name)
        access = pool.emr.livy_access
        what = f"pool {pool.name}'s Livy (TCP 8998) for {', '.join(access.security_groups + access.cidrs)}"
        vpc = ec2.describe_subnets(SubnetIds=[pool.emr.subnet_ids[0]])["Subnets"][0]["VpcId"]
        found = ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": [name]}]
        )["SecurityGroups"]
        want = livy_permissions(pool.emr.livy_access)
        if not found:
            if dry_run:
                results.append(ResourceResult("security group", name, WOULD_CREATE, what))
                continue
            tags = {TAG_LIVY_FOR: pool.name, TAG_REGISTRY: prefix, TAG_MANAGED_POLICIES: "true", "Name": name}
            group_id = ec2.create_security_group(
                GroupName=name,
                Description=f"spotlake {prefix}: Livy of pool {pool.name}, for the Airflow workers only",
                VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
            )["GroupId"]
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=want)
            results.append(ResourceResult("security group", f"{name} ({group_id})", CREATED, what))
            continue
        group = found[0]
        have = group.get("IpPermissions", [])
        extra = [p for p in _split(have) if not rule_set([p]) <= rule_set(want)]
        missing = [p for p in _split(want) if not rule_set([p]) <= rule_set(have)]
        label = f"{name} ({group['GroupId']})"
        if not extra and not missing:
            results.append(ResourceResult("security group", label, EXISTS, what))
            continue
        changes = f"{what}; {len(missing)} rule(s) to add, {len(extra)} other rule(s) to revoke"
        if dry_run:
            results.append(ResourceResult("security group", label, WOULD_UPDATE, changes))
            continue
        if extra:
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=extra)
        if missing:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=missing)
        results.append(ResourceResult("security group", label, UPDATED, changes))
    return results


def _split(permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingress rules one source each (the form authorize and revoke take them in)."""
    out: list[dict[str, Any]] = []
    for p in permissions:
        head: dict[str, Any] = {k: p[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in p}
        for key in ("UserIdGroupPairs", "IpRanges", "Ipv6Ranges", "PrefixListIds"):
            for source in p.get(key, []):
                kept = {k: v for k, v in source.items() if k in ("GroupId", "CidrIp", "CidrIpv6", "PrefixListId", "Description")}
                out.append({**head, key: [kept]})
    return out


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
            ec2 = boto3.client("ec2", region_name=args.region, endpoint_url=args.endpoint_url)
            results += ensure_livy_groups(ec2, args.prefix, dry_run=args.dry_run)
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
