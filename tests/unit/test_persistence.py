"""Saving and restoring the local registry (moto's DynamoDB and Secrets Manager) across restarts."""

from __future__ import annotations

from pathlib import Path

import boto3
from moto import mock_aws

from spotlake.stack import PROJECT_ROOT, StackLayout
from spotlake_dev.localstack import persistence


def clients(service: str) -> object:
    return boto3.client(service, region_name="us-east-1")


def test_every_table_and_secret_comes_back_even_past_a_hundred_tables(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    names = [f"t{n:03d}" for n in range(120)]  # list_tables answers 100 at a time
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        for name in names:
            ddb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            )
        ddb.put_item(TableName="t119", Item={"k": {"S": "last"}, "blob": {"B": b"\x00\xff"}, "n": {"N": "7"}})
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name="s/x", SecretString='{"a": 1}')
        assert persistence.save(layout, clients) == 1

    with mock_aws():  # a fresh, empty moto
        assert persistence.restore(layout, clients) == 1
        again = boto3.client("dynamodb", region_name="us-east-1")
        assert sorted(persistence.table_names(again)) == names
        item = again.get_item(TableName="t119", Key={"k": {"S": "last"}})["Item"]
        assert item == {"k": {"S": "last"}, "blob": {"B": b"\x00\xff"}, "n": {"N": "7"}}
        secret = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(SecretId="s/x")
        assert secret["SecretString"] == '{"a": 1}'
        assert persistence.restore(layout, clients) == 0  # moto kept its state: nothing is loaded twice


def test_a_table_whose_indexes_were_added_one_by_one_comes_back_with_them(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="jobs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        )
        for index, attribute in (("by-a", "a"), ("by-b", "b")):  # each UpdateTable names only its own attribute
            ddb.update_table(
                TableName="jobs",
                AttributeDefinitions=[{"AttributeName": attribute, "AttributeType": "S"}],
                GlobalSecondaryIndexUpdates=[
                    {
                        "Create": {
                            "IndexName": index,
                            "KeySchema": [{"AttributeName": attribute, "KeyType": "HASH"}],
                            "Projection": {"ProjectionType": "ALL"},
                        }
                    }
                ],
            )
        ddb.put_item(TableName="jobs", Item={"k": {"S": "1"}, "a": {"S": "x"}, "b": {"S": "y"}})
        assert persistence.save(layout, clients) == 1

    with mock_aws():
        assert persistence.restore(layout, clients) == 1
        again = boto3.client("dynamodb", region_name="us-east-1")
        table = again.describe_table(TableName="jobs")["Table"]
        assert sorted(i["IndexName"] for i in table["GlobalSecondaryIndexes"]) == ["by-a", "by-b"]
        found = again.query(
            TableName="jobs", IndexName="by-a", KeyConditionExpression="a = :v", ExpressionAttributeValues={":v": {"S": "x"}}
        )
        assert [item["k"]["S"] for item in found["Items"]] == ["1"]


def postgres_home(parent: Path, name: str) -> Path:
    home = parent / f"spotlake-{name}"
    (home / "postgres").mkdir(parents=True)
    (home / "postgres" / "PG_VERSION").write_text("15\n")
    return home


def test_a_deleted_stack_folder_does_not_bring_back_its_postgres_data(tmp_path: Path) -> None:
    from spotlake_dev.localstack import services

    homes = tmp_path / "var-lib-postgresql"
    layout = StackLayout(root=tmp_path / "stack", project=PROJECT_ROOT, settings={})
    home = postgres_home(homes, "aaa")  # left by an earlier stack at the same path, whose folder was deleted
    services.claim_postgres_home(layout, home)
    assert not (home / "postgres").exists()  # initdb makes it afresh: no old Airflow runs, no stale lake catalog
    assert (home / services.POSTGRES_OWNER).read_text() == str(layout.root)
    assert (layout.data_dir / services.POSTGRES_MARK).read_text() == str(home)

    # The same stack started again keeps its data.
    (home / "postgres").mkdir()
    (home / "postgres" / "PG_VERSION").write_text("15\n")
    services.claim_postgres_home(layout, home)
    assert (home / "postgres" / "PG_VERSION").exists()

    # A stack from before the marks existed, with lake files: adopted, not wiped.
    older = StackLayout(root=tmp_path / "older", project=PROJECT_ROOT, settings={})
    (older.data_dir / "s3").mkdir(parents=True)
    older_home = postgres_home(homes, "bbb")
    services.claim_postgres_home(older, older_home)
    assert (older_home / "postgres" / "PG_VERSION").exists()


def test_postgres_homes_of_deleted_stack_folders_are_swept(tmp_path: Path) -> None:
    from spotlake_dev.localstack import services

    homes = tmp_path / "var-lib-postgresql"
    live = StackLayout(root=tmp_path / "live", project=PROJECT_ROOT, settings={})
    live_home = postgres_home(homes, "live")
    services.claim_postgres_home(live, live_home)
    gone = postgres_home(homes, "gone")
    (gone / services.POSTGRES_OWNER).write_text(str(tmp_path / "deleted-stack"))
    running = postgres_home(homes, "running")
    (running / services.POSTGRES_OWNER).write_text(str(tmp_path / "deleted-too"))
    (running / "postgres" / "postmaster.pid").write_text("4242\n")
    unowned = postgres_home(homes, "unowned")  # no owner file: cannot tell, left alone
    me = postgres_home(homes, "me")

    assert services.sweep_postgres_homes(homes, keep=me) == [gone]
    assert all(h.exists() for h in (live_home, running, unowned, me))
