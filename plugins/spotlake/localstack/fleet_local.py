"""Give each local pool a READY cluster in the registry (what `make up` runs before
the fleet DAG takes over): launch a Livy server if the pool has no live one."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3

from spotlake.localstack import services
from spotlake.localstack.layout import StackLayout
from spotlake.providers.local import LocalProvider
from spotlake.registry import Cluster, ClusterState, Registry, StaleState

LOCAL_POOLS = {"small": "local[2]"}


def local_registry(layout: StackLayout) -> Registry:
    env = services.aws_env(layout)
    client = boto3.client(
        "dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return Registry(client)


def ensure_local_pools(layout: StackLayout) -> list[str]:
    registry = local_registry(layout)
    provider = LocalProvider(layout)
    lines = []
    for pool, master in LOCAL_POOLS.items():
        active = registry.ready_cluster(pool)
        if active is not None and provider.is_alive(active.cluster_id, active.endpoint):
            lines.append(f"pool {pool}: cluster {active.cluster_id} READY at {active.endpoint}")
            continue
        replaces = ""
        if active is not None:
            registry.transition_cluster(active, ClusterState.DEAD, "Livy process not running")
        cluster_id = f"local-{pool}-{datetime.now(UTC):%Y%m%d%H%M%S}"
        cluster = Cluster(pool=pool, cluster_id=cluster_id, provider=provider.name, state="")
        registry.put_launching(cluster)
        launched = provider.launch(cluster_id, master=master)
        try:
            registry.mark_ready(cluster, launched.endpoint, replaces=replaces)
        except StaleState:
            provider.terminate(cluster_id)
            raise
        lines.append(f"pool {pool}: launched cluster {cluster_id} at {launched.endpoint}")
    return lines
