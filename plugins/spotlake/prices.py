"""What the cost ledger charges: ``config/prices.yaml`` (``SPOTLAKE_PRICES``), and its refresh.

The file holds, for one region and currency, each instance type's price per instance-hour on demand
and on spot and EMR's charge on top, and AWS Glue's price per DPU-hour, minimum billed time per job
run, DPUs per worker type and the Glue job each pool's work would run as (for the comparison).

``python -m spotlake.prices refresh [--region R]`` rewrites the instance prices of every type the
file or config/pools.yaml names: on demand from the AWS Price List (``AmazonEC2``: Linux, shared
tenancy, no pre-installed software), EMR's charge from its ``ElasticMapReduce`` products, spot as
the median of the last day's EC2 spot price history (Linux/UNIX, every availability zone). It needs
AWS credentials allowed ``pricing:GetProducts`` and ``ec2:DescribeSpotPriceHistory``; a type the
Price List does not know is an error naming it, and nothing is written unless every price was found.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from spotlake import pools
from spotlake.config import _mapping, _unknown_keys, parse_duration, read_yaml
from spotlake.errors import ConfigError, SpotlakeError

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "config" / "prices.yaml"
TOP_KEYS = {"region", "currency", "taken", "source", "instances", "glue"}
INSTANCE_KEYS = {"on_demand", "spot", "emr"}
GLUE_KEYS = {"dpu_hour", "minimum", "worker_dpu", "pools"}
GLUE_JOB_KEYS = {"worker_type", "workers"}
PRICE_LIST_REGION = "us-east-1"  # the Price List API answers in us-east-1 (and ap-south-1, eu-central-1)
SPOT_HISTORY = timedelta(days=1)


def prices_path() -> Path:
    return Path(os.environ.get("SPOTLAKE_PRICES", DEFAULT_PRICES))


@dataclass(frozen=True)
class InstancePrice:
    """Per instance-hour: EC2 on demand, EC2 spot, and EMR's charge on top of either."""

    on_demand: float
    spot: float
    emr: float

    def hourly(self, market: str) -> float:
        """What an hour of this type costs on ``market`` (``SPOT`` or ``ON_DEMAND``), EMR's charge included."""
        return (self.spot if market == "SPOT" else self.on_demand) + self.emr

    @property
    def on_demand_hourly(self) -> float:
        return self.on_demand + self.emr


@dataclass(frozen=True)
class GlueJob:
    worker_type: str
    workers: int


@dataclass(frozen=True)
class GluePrices:
    dpu_hour: float
    minimum: timedelta
    worker_dpu: dict[str, float]
    pools: dict[str, GlueJob] = field(default_factory=dict)

    def dpus(self, pool: str) -> float | None:
        """The DPUs of the Glue job ``pool``'s work would run as; None: the file names none."""
        job = self.pools.get(pool)
        return None if job is None else job.workers * self.worker_dpu[job.worker_type]

    def run_cost(self, pool: str, seconds: float, minimum: bool = True) -> float | None:
        """A Glue job run of ``seconds``: DPUs × billed hours × the DPU-hour price, billed at least
        ``minimum`` (``minimum`` False: a stream's hour, billed as it runs)."""
        dpus = self.dpus(pool)
        if dpus is None:
            return None
        billed = max(seconds, self.minimum.total_seconds()) if minimum else seconds
        return dpus * billed / 3600 * self.dpu_hour


@dataclass(frozen=True)
class Prices:
    path: Path
    region: str
    currency: str
    taken: str
    source: str
    instances: dict[str, InstancePrice]
    glue: GluePrices

    def instance(self, instance_type: str) -> InstancePrice | None:
        return self.instances.get(instance_type)


def load(path: Path | None = None) -> Prices:
    path = path or prices_path()
    return parse(read_yaml(path, "create it (see docs/configuration.md, config/prices.yaml)"), path)


def _amount(value: Any, where: str, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{where}: {value!r} is not a price; write an amount in the file's currency, e.g. 0.192")
    return float(value)


def parse(raw: Any, path: Path) -> Prices:
    where = str(path)
    raw = _mapping(raw or {}, where)
    _unknown_keys(raw, TOP_KEYS, where)
    for key in ("region", "currency", "instances", "glue"):
        if key not in raw:
            raise ConfigError(f"{where}: '{key}' is missing; see docs/configuration.md (config/prices.yaml)")
    instances = {}
    for name, entry in _mapping(raw["instances"], f"{where}: instances").items():
        at = f"{where}: instances.{name}"
        if not pools.INSTANCE_TYPE.match(str(name)):
            raise ConfigError(f"{at}: not an EC2 instance type such as m5.xlarge")
        entry = _mapping(entry, at)
        _unknown_keys(entry, INSTANCE_KEYS, at)
        missing = sorted(INSTANCE_KEYS - set(entry))
        if missing:
            raise ConfigError(f"{at}: {', '.join(missing)} missing; give on_demand, spot and emr per instance-hour")
        instances[str(name)] = InstancePrice(
            _amount(entry["on_demand"], f"{at}.on_demand"),
            _amount(entry["spot"], f"{at}.spot"),
            _amount(entry["emr"], f"{at}.emr", zero=True),
        )
    glue_raw = _mapping(raw["glue"], f"{where}: glue")
    _unknown_keys(glue_raw, GLUE_KEYS, f"{where}: glue")
    worker_dpu = {
        str(k): _amount(v, f"{where}: glue.worker_dpu.{k}")
        for k, v in _mapping(glue_raw.get("worker_dpu") or {}, f"{where}: glue.worker_dpu").items()
    }
    jobs = {}
    for pool, entry in _mapping(glue_raw.get("pools") or {}, f"{where}: glue.pools").items():
        at = f"{where}: glue.pools.{pool}"
        entry = _mapping(entry, at)
        _unknown_keys(entry, GLUE_JOB_KEYS, at)
        worker_type, workers = entry.get("worker_type"), entry.get("workers")
        if worker_type not in worker_dpu:
            raise ConfigError(f"{at}.worker_type: {worker_type!r} is not in glue.worker_dpu ({', '.join(worker_dpu)})")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"{at}.workers: {workers!r} is not a number of workers (Glue's least for a Spark job is 2)")
        jobs[str(pool)] = GlueJob(str(worker_type), workers)
    minimum = parse_duration(glue_raw.get("minimum", "1m"), f"{where}: glue.minimum")
    return Prices(
        path=path,
        region=str(raw["region"]),
        currency=str(raw["currency"]),
        taken=str(raw.get("taken", "")),
        source=str(raw.get("source", "")),
        instances=instances,
        glue=GluePrices(_amount(glue_raw.get("dpu_hour"), f"{where}: glue.dpu_hour"), minimum, worker_dpu, jobs),
    )


# ------------------------------------------------------------------ refresh


def _price_list_products(pricing: Any, service: str, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Every product of ``service`` matching ``filters`` (GetProducts, every page), parsed."""
    kwargs: dict[str, Any] = {
        "ServiceCode": service,
        "Filters": [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        "FormatVersion": "aws_v1",
    }
    found: list[dict[str, Any]] = []
    while True:
        page = pricing.get_products(**kwargs)
        found.extend(json.loads(p) for p in page.get("PriceList", []))
        if not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]


def _on_demand_usd(product: dict[str, Any]) -> float | None:
    """The hourly on-demand USD price of a Price List product (its one OnDemand term's dimension)."""
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") in ("Hrs", "Hours", "hours"):
                return float(dimension["pricePerUnit"]["USD"])
    return None


def price_list(pricing: Any, region: str, instance_type: str) -> tuple[float, float]:
    """(EC2 on demand, EMR's charge) per hour of ``instance_type`` in ``region``, from the Price List."""
    ec2 = _price_list_products(
        pricing,
        "AmazonEC2",
        {
            "instanceType": instance_type,
            "regionCode": region,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
        },
    )
    on_demand = next((p for p in (_on_demand_usd(x) for x in ec2) if p), None)
    emr_products = _price_list_products(pricing, "ElasticMapReduce", {"instanceType": instance_type, "regionCode": region})
    emr = next(
        (
            p
            for p in (
                _on_demand_usd(x) for x in emr_products if x.get("product", {}).get("attributes", {}).get("softwareType") == "EMR"
            )
            if p is not None
        ),
        None,
    )
    if on_demand is None or emr is None:
        lacking = " and ".join(what for what, price in (("EC2 on-demand", on_demand), ("EMR", emr)) if price is None)
        raise SpotlakeError(
            f"the AWS Price List has no {lacking} price for {instance_type} in {region}; check the type's name "
            f"and that EMR offers it there, or remove it from config/pools.yaml and config/prices.yaml"
        )
    return on_demand, emr


def spot_median(ec2: Any, instance_type: str, now: datetime) -> float:
    """The median EC2 spot price (Linux/UNIX, every zone) of ``instance_type`` over the last day."""
    kwargs: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": now - SPOT_HISTORY,
        "EndTime": now,
    }
    prices: list[float] = []
    while True:
        page = ec2.describe_spot_price_history(**kwargs)
        prices.extend(float(p["SpotPrice"]) for p in page.get("SpotPriceHistory", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    if not prices:
        raise SpotlakeError(
            f"EC2 has no spot price history for {instance_type} over the last day; the type may not be offered on "
            "spot in this region: use another type for the task fleet"
        )
    return round(float(statistics.median(prices)), 6)


def refresh(
    path: Path,
    region: str,
    pricing: Any,
    ec2: Any,
    types: list[str],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, InstancePrice]:
    """Rewrite ``path``'s instance prices for ``types`` in ``region`` (the rest of the file kept);
    every price is fetched before the file is written."""
    raw = _mapping(read_yaml(path, "create it (see docs/configuration.md, config/prices.yaml)") or {}, str(path))
    moment = now()
    found = {}
    for instance_type in sorted(set(types)):
        on_demand, emr = price_list(pricing, region, instance_type)
        found[instance_type] = InstancePrice(on_demand, spot_median(ec2, instance_type, moment), emr)
    raw["region"] = region
    raw["taken"] = moment.strftime("%Y-%m-%dT%H:%MZ")
    raw["source"] = (
        "AWS Price List (AmazonEC2 Linux shared on demand; ElasticMapReduce) and the median of the last day's EC2 "
        "spot price history (Linux/UNIX), by python -m spotlake.prices refresh"
    )
    raw["instances"] = {
        **(raw.get("instances") or {}),
        **{t: {"on_demand": p.on_demand, "spot": p.spot, "emr": p.emr} for t, p in found.items()},
    }
    parse(raw, path)  # what is written must load
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return found


def configured_types(prices: Path, pools_cfg: pools.PoolsConfig) -> list[str]:
    """Every instance type config/prices.yaml or config/pools.yaml (EMR fleets, local shapes) names."""
    raw = read_yaml(prices, "create it (see docs/configuration.md, config/prices.yaml)") or {}
    types = set((raw.get("instances") or {}).keys())
    for pool in pools_cfg.pools:
        if pool.local is not None:
            types.add(pool.local.instance_type)
        if pool.emr is not None:
            for fleet in (pool.emr.master, pool.emr.core, pool.emr.task):
                types.update(t.type for t in fleet.instance_types)
    return sorted(types)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.prices", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    again = sub.add_parser("refresh", help="fetch the instance prices from the AWS Price List and the spot price history")
    again.add_argument("--region", help="the region to price (default: the file's region)")
    sub.add_parser("show", help="print the prices the ledger uses")
    args = parser.parse_args(argv)
    path = prices_path()
    try:
        current = load(path)
        if args.command == "show":
            print(f"{path}: {current.region}, {current.currency}, taken {current.taken} ({current.source})")
            for name, price in sorted(current.instances.items()):
                print(f"  {name:<14} on demand {price.on_demand:.4f}  spot {price.spot:.4f}  emr {price.emr:.4f}  per hour")
            return 0
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        region = args.region or current.region
        try:
            found = refresh(
                path,
                region,
                boto3.client("pricing", region_name=PRICE_LIST_REGION),
                boto3.client("ec2", region_name=region),
                configured_types(path, pools.load()),
            )
        except (BotoCoreError, ClientError) as exc:
            raise SpotlakeError(
                f"the prices could not be fetched ({exc}); refresh needs AWS credentials allowed pricing:GetProducts "
                "and ec2:DescribeSpotPriceHistory (docs/deploying-to-aws.md); the file was left as it was"
            ) from exc
    except SpotlakeError as exc:
        print(f"spotlake prices: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {len(found)} instance type(s) priced in {region}: {', '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
