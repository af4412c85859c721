"""Give each local pool a READY cluster before Airflow starts (what `make up` runs),
with the same fleet logic the fleet DAGs run every minute afterwards."""

from __future__ import annotations

import boto3

from hooks.livy import probe_livy
from spotlake import pools, stack
from spotlake.fleet import Fleet
from spotlake.registry import Registry
from spotlake.stack import StackLayout
from spotlake_dev.localstack.provider import LocalClusterProvider, LocalProvider


def local_registry(layout: StackLayout) -> Registry:
    env = stack.aws_env(layout)
    client = boto3.client(
        "dynamodb",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return Registry(client)


def ensure_local_pools(layout: StackLayout) -> list[str]:
    """One fleet pass (health, heal) per pool of config/pools.yaml; returns the report lines."""
    fleet = Fleet(local_registry(layout), LocalClusterProvider(LocalProvider(layout), probe=probe_livy))
    lines: list[str] = []
    for pool in pools.load(provider="local").pools:
        report = fleet.check_health(pool)
        fleet.heal(pool, report)
        lines.extend(report.lines())
        active = fleet.registry.ready_cluster(pool.name)
        lines.append(
            f"pool {pool.name}: " + (f"cluster {active.cluster_id} READY at {active.endpoint}" if active else "no READY cluster")
        )
    return lines
