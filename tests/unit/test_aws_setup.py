"""The setup step: the DynamoDB tables, idempotently, on moto's in-process mock (and a
botocore Stubber for a race moto cannot play)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from spotlake import aws_setup
from spotlake.alert_store import AlertStore
from spotlake.aws_setup import KeySchemaMismatch, ensure_tables, table_keys
from spotlake.providers.emr import rule_set
from spotlake.registry import JOB_INDEXES, Registry
from spotlake.stream_status import StreamStatusStore, StreamTableMissing
from tests.support.emr_network import Network, moto_network, pools_file_in

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
EXPECTED = {
    "t-clusters": {("pool", "HASH", "S"), ("cluster_id", "RANGE", "S")},
    "t-jobs": {("job_key", "HASH", "S")},
    "t-extraction-log": {("pipeline", "HASH", "S"), ("window", "RANGE", "S")},
    "t-sessions": {("cluster_id", "HASH", "S"), ("slot", "RANGE", "S")},
    "t-streams": {("stream", "HASH", "S")},
    "t-alerts": {("alert", "HASH", "S")},
}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    with mock_aws():
        in_a_network(monkeypatch, tmp_path, REGION)
        yield boto3.client("dynamodb", region_name=REGION)


def in_a_network(monkeypatch: pytest.MonkeyPatch, folder: Path, region: str) -> Network:
    """Inside ``mock_aws``: a VPC for the EMR pools, and the project's pools in it (SPOTLAKE_POOLS)."""
    network = moto_network(region)
    monkeypatch.setenv("SPOTLAKE_POOLS", str(pools_file_in(network, folder)))
    return network


def key_of(client: Any, table: str) -> set[tuple[str, str, str]]:
    described = client.describe_table(TableName=table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
    return {(k["AttributeName"], k["KeyType"], types[k["AttributeName"]]) for k in described["KeySchema"]}


def tables(client: Any) -> set[str]:
    return set(client.list_tables()["TableNames"])


def test_the_definitions_are_the_registry_stream_status_and_alerts_ones() -> None:
    assert table_keys("t") == {
        **Registry(None, "t").table_keys(),
        **StreamStatusStore(None, "t").table_keys(),
        **AlertStore(None, "t").table_keys(),
    }
    assert set(table_keys("t")) == set(EXPECTED)


def test_creates_the_tables_then_finds_them(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
    first = capsys.readouterr().out
    assert tables(client) == set(EXPECTED)
    for table, key in EXPECTED.items():
        assert key_of(client, table) == key
        described = client.describe_table(TableName=table)["Table"]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert f"{table}: created (key " in first
    assert "t-clusters: created (key pool HASH S, cluster_id RANGE S; on-demand)" in first

    assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
    second = capsys.readouterr().out
    table_lines = [line for line in second.splitlines() if line.startswith("t-")]
    assert table_lines == [f"{t}: exists (key {', '.join(f'{n} {k} S' for n, k in keys)})" for t, keys in table_keys("t").items()]


def test_an_existing_table_keeps_its_items_and_the_others_are_added(client: Any) -> None:
    Registry(client, "t")  # nothing at construction
    client.create_table(
        TableName="t-jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_key", "KeyType": "HASH"}],
    )
    client.put_item(TableName="t-jobs", Item={"job_key": {"S": "p#w"}})
    results = {r.table: r for r in ensure_tables(client, "t")}
    assert {table: r.outcome for table, r in results.items()} == {
        "t-clusters": "created",
        "t-jobs": "updated",  # a table of an earlier version: it gains the indexes and the time to live
        "t-extraction-log": "created",
        "t-sessions": "created",
        "t-streams": "created",
        "t-alerts": "created",
    }
    assert results["t-jobs"].line() == (
        "t-jobs: updated (key job_key HASH S; index by-cluster, index by-pool, index by-move-day, time to live on expires_at)"
    )
    assert client.get_item(TableName="t-jobs", Key={"job_key": {"S": "p#w"}})["Item"]
    assert indexes_of(client, "t-jobs") == JOB_INDEXES
    # Each index's attributes stay defined after the next index is added.
    defined = {a["AttributeName"] for a in client.describe_table(TableName="t-jobs")["Table"]["AttributeDefinitions"]}
    assert defined == {"job_key"} | {name for keys in JOB_INDEXES.values() for name, _ in keys}
    assert {r.table: r.outcome for r in ensure_tables(client, "t")}["t-jobs"] == "exists"


def indexes_of(client: Any, table: str) -> dict[str, tuple[tuple[str, str], ...]]:
    found = client.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]
    assert all(i["IndexStatus"] == "ACTIVE" and i["Projection"]["ProjectionType"] == "ALL" for i in found)
    return {i["IndexName"]: tuple((k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]) for i in found}


def test_the_jobs_table_is_created_with_its_indexes_and_time_to_live(client: Any) -> None:
    ensure_tables(client, "t")
    assert indexes_of(client, "t-jobs") == JOB_INDEXES
    ttl = client.describe_time_to_live(TableName="t-jobs")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert client.describe_table(TableName="t-clusters")["Table"].get("GlobalSecondaryIndexes", []) == []


def test_an_index_of_spotlakes_name_with_another_key_is_a_clear_error(client: Any) -> None:
    client.create_table(
        TableName="t-jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in ("job_key", "owner")],
        KeySchema=[{"AttributeName": "job_key", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-pool",
                "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    with pytest.raises(KeySchemaMismatch) as caught:
        ensure_tables(client, "t")
    assert "t-jobs has an index by-pool keyed (owner HASH), not spotlake's (pool HASH, state RANGE)" in str(caught.value)
    assert tables(client) == {"t-jobs"}


def test_dry_run_creates_nothing(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert aws_setup.main(["--prefix", "t", "--region", REGION, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert tables(client) == set()
    assert "t-streams: would create (key stream HASH S; on-demand)" in out and "dry run: nothing was created" in out


def test_dry_run_on_a_table_of_an_earlier_version_says_what_it_would_add(client: Any) -> None:
    client.create_table(
        TableName="t-jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_key", "KeyType": "HASH"}],
    )
    results = {r.table: r for r in ensure_tables(client, "t", dry_run=True)}
    assert results["t-jobs"].outcome == "would update" and "index by-pool" in results["t-jobs"].line()
    assert client.describe_table(TableName="t-jobs")["Table"].get("GlobalSecondaryIndexes", []) == []


@pytest.mark.parametrize(("attribute", "kind"), [("id", "S"), ("job_key", "N")])
def test_a_table_with_another_key_is_a_clear_error_before_any_change(
    client: Any, capsys: pytest.CaptureFixture[str], attribute: str, kind: str
) -> None:
    client.create_table(
        TableName="t-jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": attribute, "AttributeType": kind}],
        KeySchema=[{"AttributeName": attribute, "KeyType": "HASH"}],
    )
    with pytest.raises(KeySchemaMismatch) as caught:
        ensure_tables(client, "t")
    message = str(caught.value)
    assert message.startswith(
        f"DynamoDB table t-jobs exists with the key ({attribute} HASH {kind}), not spotlake's (job_key HASH S)"
    )
    assert "Fix: use another prefix (--prefix, and the same SPOTLAKE_REGISTRY_PREFIX for Airflow)" in message
    assert tables(client) == {"t-jobs"}  # nothing created
    assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 2
    assert "spotlake aws_setup: DynamoDB table t-jobs exists with the key" in capsys.readouterr().err


def test_a_table_another_setup_creates_meanwhile_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("dynamodb", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s")
    monkeypatch.setattr(aws_setup, "table_keys", lambda prefix: {"t-jobs": (("job_key", "HASH"),)})
    monkeypatch.setattr(aws_setup, "table_indexes", lambda prefix: {})
    monkeypatch.setattr(aws_setup, "table_ttl", lambda prefix: {})
    active = {
        "Table": {
            "TableName": "t-jobs",
            "TableStatus": "ACTIVE",
            "AttributeDefinitions": [{"AttributeName": "job_key", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "job_key", "KeyType": "HASH"}],
        }
    }
    with Stubber(client) as stub:
        stub.add_client_error("describe_table", "ResourceNotFoundException", expected_params={"TableName": "t-jobs"})
        stub.add_client_error("create_table", "ResourceInUseException")
        stub.add_response("describe_table", active, {"TableName": "t-jobs"})
        stub.add_response("describe_table", active, {"TableName": "t-jobs"})  # the waiter
        stub.add_response("describe_table", active, {"TableName": "t-jobs"})  # what it lacks
        (result,) = ensure_tables(client, "t")
        stub.assert_no_pending_responses()
    assert result.outcome == "exists"


def test_registry_create_tables_is_the_setup_and_the_supervisor_only_checks(client: Any) -> None:
    registry = Registry(client, "t")
    store = StreamStatusStore(client, "t")
    with pytest.raises(StreamTableMissing) as caught:
        store.require_table()
    assert str(caught.value) == (
        "DynamoDB table t-streams (the streams' status) does not exist. Fix: create the registry's tables with "
        "`python -m spotlake.aws_setup --prefix t` (docs/deploying-to-aws.md, section 4; the local stack: `make up`)"
    )
    registry.create_tables()
    registry.create_tables()  # idempotent
    assert tables(client) == set(EXPECTED)
    store.require_table()


def test_the_deployment_doc_lists_the_same_tables() -> None:
    """Section 4 of docs/deploying-to-aws.md: one row per table, with the keys the setup creates."""
    doc = (ROOT / "docs" / "deploying-to-aws.md").read_text()
    section = doc.split("## 4. DynamoDB tables", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            name = cells[0].strip("`")
            keys = [re.fullmatch(r"`(\w+)` \(S\)", c) for c in cells[1:]]
            rows[name] = tuple((m.group(1), kind) for m, kind in zip(keys, ("HASH", "RANGE"), strict=True) if m)
    assert rows == table_keys("spotlake")
    assert "python -m spotlake.aws_setup --prefix spotlake" in section


# ------------------------------------------------------- buckets and the Glue database
def test_the_configured_buckets_are_every_s3_location_of_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTLAKE_ARTIFACTS", raising=False)
    buckets = aws_setup.configured_buckets("s3://deploy-artifacts/spotlake")
    assert set(buckets) == {"spotlake-lake", "spotlake-checkpoints", "deploy-artifacts", "spotlake-emr-logs"}
    assert buckets["spotlake-lake"] == "the lake's tables"
    assert "EMR logs" in buckets["spotlake-emr-logs"]


def test_buckets_are_created_private_once_and_found_after(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with mock_aws():
        in_a_network(monkeypatch, tmp_path, "eu-west-1")
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="spotlake-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="spotlake-lake", Key="warehouse/kept", Body=b"x")
        assert aws_setup.main(["--prefix", "t", "--region", "eu-west-1", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "bucket spotlake-lake: exists" in out and "bucket spotlake-checkpoints: would create" in out
        assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"spotlake-lake"}
        assert aws_setup.main(["--prefix", "t", "--region", "eu-west-1"]) == 0
        out = capsys.readouterr().out
        assert "bucket spotlake-checkpoints: created" in out and "bucket spotlake-emr-logs: created" in out
        block = s3.get_public_access_block(Bucket="spotlake-checkpoints")["PublicAccessBlockConfiguration"]
        assert all(block.values())
        assert s3.get_bucket_location(Bucket="spotlake-checkpoints")["LocationConstraint"] == "eu-west-1"
        assert s3.get_object(Bucket="spotlake-lake", Key="warehouse/kept")["Body"].read() == b"x"
        assert aws_setup.main(["--prefix", "t", "--region", "eu-west-1"]) == 0
        assert "created" not in capsys.readouterr().out


def test_a_glue_lake_gets_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "pipelines.yaml").read_text())
    raw["lake"] = {"type": "glue", "warehouse": "s3://spotlake-lake/warehouse", "namespace": "shop"}
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SPOTLAKE_PIPELINES", str(path))
    with mock_aws():
        in_a_network(monkeypatch, tmp_path, REGION)
        assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
        assert "glue database shop: created" in capsys.readouterr().out
        assert boto3.client("glue", region_name=REGION).get_database(Name="shop")["Database"]["Name"] == "shop"
        assert aws_setup.main(["--prefix", "t", "--region", REGION, "--tables-only"]) == 0
        assert "glue" not in capsys.readouterr().out


# ------------------------------------------------------------------ the Livy security groups
def livy_rules(ec2: Any, group_id: str) -> set[tuple[str, int, int, str]]:
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return rule_set(group["IpPermissions"])


def test_each_emr_pool_gets_a_livy_group_admitting_only_the_airflow_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        network = in_a_network(monkeypatch, tmp_path, REGION)
        ec2 = boto3.client("ec2", region_name=REGION)
        assert aws_setup.main(["--prefix", "t", "--region", REGION, "--dry-run"]) == 0
        assert "security group spotlake-t-livy-small: would create (pool small's Livy (TCP 8998)" in capsys.readouterr().out
        assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
        out = capsys.readouterr().out
        groups = {
            g["GroupName"]: g
            for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [network.vpc]}])["SecurityGroups"]
        }
        small = groups["spotlake-t-livy-small"]
        assert f"security group spotlake-t-livy-small ({small['GroupId']}): created" in out
        assert "spotlake-t-livy-large" in groups
        assert rule_set(small["IpPermissions"]) == {("tcp", 8998, 8998, network.airflow_group)}
        tags = {t["Key"]: t["Value"] for t in small["Tags"]}
        assert tags["spotlake:livy-for"] == "small" and tags["spotlake:registry"] == "t"
        assert tags["for-use-with-amazon-emr-managed-policies"] == "true"

        # Opened to the world by hand: the setup takes it back to the configured rule only.
        ec2.authorize_security_group_ingress(
            GroupId=small["GroupId"],
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 8998, "ToPort": 8998, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        )
        assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
        assert "1 rule(s) to add, 0" not in (out := capsys.readouterr().out)
        assert f"spotlake-t-livy-small ({small['GroupId']}): updated" in out and "1 other rule(s) to revoke" in out
        assert livy_rules(ec2, small["GroupId"]) == {("tcp", 8998, 8998, network.airflow_group)}
        assert aws_setup.main(["--prefix", "t", "--region", REGION]) == 0
        assert f"spotlake-t-livy-small ({small['GroupId']}): exists" in capsys.readouterr().out
