"""A VPC on moto's EC2 for the EMR pools: subnets, the Airflow workers' security group, and the
project's pools re-pointed at them (config/pools.yaml names subnets of a real account)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from spotlake import pools


@dataclass(frozen=True)
class Network:
    vpc: str
    subnets: tuple[str, ...]
    airflow_group: str  # the Airflow workers' security group: what emr.livy_access names


def moto_network(region: str) -> Network:
    """Inside ``mock_aws``: a VPC with two subnets and the Airflow workers' security group."""
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = tuple(ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2))
    airflow = ec2.create_security_group(GroupName="airflow-workers", Description="Airflow workers", VpcId=vpc)["GroupId"]
    return Network(vpc, subnets, airflow)


def in_network(pool: pools.PoolConfig, network: Network) -> pools.PoolConfig:
    """``pool`` with its EMR clusters in ``network`` and Livy open to its Airflow workers' group."""
    assert pool.emr is not None
    emr = dataclasses.replace(
        pool.emr, subnet_ids=network.subnets, livy_access=pools.LivyAccess(security_groups=(network.airflow_group,))
    )
    return dataclasses.replace(pool, emr=emr)


def pools_file_in(network: Network, folder: Path) -> Path:
    """config/pools.yaml with every EMR pool in ``network`` (for SPOTLAKE_POOLS)."""
    raw: dict[str, Any] = yaml.safe_load(pools.DEFAULT_POOLS.read_text())
    for entry in raw["pools"].values():
        if entry.get("emr"):
            entry["emr"]["subnet_ids"] = list(network.subnets)
            entry["emr"]["livy_access"] = {"security_groups": [network.airflow_group]}
    path = folder / "pools.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
