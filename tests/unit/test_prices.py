"""The prices refresh: the AWS Price List's and the spot price history's answers (stubbed with
botocore's Stubber, which checks every request and answer against the services' API models: the
tests never reach AWS) written to config/prices.yaml, or nothing written at all."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from spotlake import prices
from spotlake.errors import SpotlakeError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "prices.yaml"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def product(price: str, software: str | None = None) -> str:
    attributes = {"instanceType": "m5.xlarge"} | ({"softwareType": software} if software else {})
    return json.dumps(
        {
            "product": {"attributes": attributes},
            "terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": price}}}}}},
        }
    )


def clients() -> tuple[Any, Any]:
    creds = {"aws_access_key_id": "x", "aws_secret_access_key": "x"}
    return boto3.client("pricing", region_name="us-east-1", **creds), boto3.client("ec2", region_name="eu-west-1", **creds)


def expect_type(pricing: Stubber, ec2: Stubber, kind: str, on_demand: str, emr: str, spots: list[list[str]]) -> None:
    pricing.add_response(
        "get_products",
        {"PriceList": [product(on_demand)], "FormatVersion": "aws_v1"},
        {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1"},
    )
    pricing.add_response(
        "get_products",
        {"PriceList": [product("0.5", "EMR-EKS"), product(emr, "EMR")], "FormatVersion": "aws_v1"},
        {"ServiceCode": "ElasticMapReduce", "Filters": ANY, "FormatVersion": "aws_v1"},
    )
    for i, page in enumerate(spots):
        request: dict[str, Any] = {
            "InstanceTypes": [kind],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": NOW - timedelta(days=1),
            "EndTime": NOW,
        }
        if i:
            request["NextToken"] = f"p{i}"
        answer: dict[str, Any] = {
            "SpotPriceHistory": [{"InstanceType": kind, "SpotPrice": p, "AvailabilityZone": "eu-west-1a"} for p in page]
        }
        if i < len(spots) - 1:
            answer["NextToken"] = f"p{i + 1}"
        ec2.add_response("describe_spot_price_history", answer, request)


def test_refresh_writes_the_price_lists_prices_and_the_spot_median(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    shutil.copy(SHIPPED, path)
    pricing, ec2 = clients()
    with Stubber(pricing) as p, Stubber(ec2) as e:
        expect_type(p, e, "m5.xlarge", "0.214", "0.053", [["0.07", "0.09"], ["0.08"]])
        found = prices.refresh(path, "eu-west-1", pricing, ec2, ["m5.xlarge"], now=lambda: NOW)
        p.assert_no_pending_responses()
        e.assert_no_pending_responses()
    assert found == {"m5.xlarge": prices.InstancePrice(0.214, 0.08, 0.053)}
    written = prices.load(path)
    assert (written.region, written.taken) == ("eu-west-1", "2026-12-06T12:00Z")
    assert written.instances["m5.xlarge"] == prices.InstancePrice(0.214, 0.08, 0.053)
    assert written.instances["r5.4xlarge"] == prices.load(SHIPPED).instances["r5.4xlarge"]  # the rest kept
    assert written.glue == prices.load(SHIPPED).glue


def test_a_type_the_price_list_lacks_fails_the_refresh_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    shutil.copy(SHIPPED, path)
    before = path.read_text()
    pricing, ec2 = clients()
    with Stubber(pricing) as p, Stubber(ec2) as e:
        expect_type(p, e, "m5.xlarge", "0.214", "0.053", [["0.07"]])
        p.add_response(
            "get_products",
            {"PriceList": [], "FormatVersion": "aws_v1"},
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1"},
        )
        p.add_response(
            "get_products",
            {"PriceList": [], "FormatVersion": "aws_v1"},
            {"ServiceCode": "ElasticMapReduce", "Filters": ANY, "FormatVersion": "aws_v1"},
        )
        with pytest.raises(SpotlakeError, match="no EC2 on-demand and EMR price for m5.zlarge in eu-west-1"):
            prices.refresh(path, "eu-west-1", pricing, ec2, ["m5.xlarge", "m5.zlarge"], now=lambda: NOW)
    assert path.read_text() == before


def test_a_type_without_spot_history_is_named(tmp_path: Path) -> None:
    pricing, ec2 = clients()
    with Stubber(ec2) as e:
        e.add_response(
            "describe_spot_price_history",
            {"SpotPriceHistory": []},
            {
                "InstanceTypes": ["m5.xlarge"],
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": NOW - timedelta(days=1),
                "EndTime": NOW,
            },
        )
        with pytest.raises(SpotlakeError, match="no spot price history for m5.xlarge"):
            prices.spot_median(ec2, "m5.xlarge", NOW)


def test_the_types_to_refresh_are_the_files_and_the_pools(tmp_path: Path) -> None:
    from spotlake import pools

    types = prices.configured_types(SHIPPED, pools.load())
    assert {"m5.xlarge", "r5.2xlarge", "r5.4xlarge", "m6i.xlarge"} <= set(types)


def test_show_prints_the_prices_the_ledger_uses(capsys: pytest.CaptureFixture[str]) -> None:
    assert prices.main(["show"]) == 0
    out = capsys.readouterr().out
    assert "us-east-1, USD" in out and "m5.xlarge" in out and "on demand 0.1920" in out


def test_main_refresh_prices_every_configured_type_or_says_what_credentials_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotlake import pools

    path = tmp_path / "prices.yaml"
    shutil.copy(SHIPPED, path)
    monkeypatch.setenv("SPOTLAKE_PRICES", str(path))
    types = prices.configured_types(path, pools.load())
    pricing, ec2 = clients()
    made = {"pricing": pricing, "ec2": ec2}
    monkeypatch.setattr(boto3, "client", lambda service, **kwargs: made[service])
    monkeypatch.setattr(prices, "datetime", type("Clock", (), {"now": staticmethod(lambda tz=None: NOW)}))
    with Stubber(pricing) as p, Stubber(ec2) as e:
        for kind in types:
            expect_type(p, e, kind, "1.0", "0.25", [["0.3"]])
        assert prices.main(["refresh", "--region", "eu-west-1"]) == 0
    assert f"{len(types)} instance type(s) priced in eu-west-1" in capsys.readouterr().out
    assert all(price == prices.InstancePrice(1.0, 0.3, 0.25) for price in prices.load(path).instances.values())

    before = path.read_text()
    with Stubber(pricing) as p:
        p.add_client_error(
            "get_products", "UnrecognizedClientException", "The security token included in the request is invalid."
        )
        assert prices.main(["refresh"]) == 2
    err = capsys.readouterr().err
    assert "needs AWS credentials allowed pricing:GetProducts and ec2:DescribeSpotPriceHistory" in err
    assert path.read_text() == before
