"""Saving and restoring the local registry (moto's DynamoDB and Secrets Manager) across restarts."""

from __future__ import annotations

from pathlib import Path

import boto3
from moto import mock_aws

from spotlake.localstack import persistence
from spotlake.localstack.layout import PROJECT_ROOT, StackLayout


def clients(service: str) -> object:
    return boto3.client(service, region_name="us-east-1")


def test_every_table_and_secret_comes_back_even_past_a_hundred_tables(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path, project=PROJECT_ROOT, settings={})
    names = [f"t{n:03d}" for n in range(120)]  # list_tables answers 100 at a time
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        for name in names:
            ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
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
