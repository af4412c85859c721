"""The registry and the cluster provider on an Airflow AWS connection (credentials, region, endpoint).

The core library takes its AWS clients from its caller; this is where the Airflow side makes them,
with the Amazon provider's hooks: DynamoDB for the registry, :class:`EmrHook` for EMR clusters,
:class:`EC2Hook` for the pools' Livy security groups.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.hooks.emr import EmrHook

from hooks.livy import probe_livy
from spotlake.providers.base import ClusterProvider, provider_for
from spotlake.registry import Registry


def registry(aws_conn_id: str | None = "aws_default", prefix: str | None = None) -> Registry:
    """The registry's tables through the connection (``prefix``: the tables' names, default spotlake)."""
    return Registry(AwsBaseHook(aws_conn_id=aws_conn_id, client_type="dynamodb").get_conn(), prefix)


def emr_hook(aws_conn_id: str | None = "aws_default") -> EmrHook:
    # emr_conn_id=None: the whole request comes from config/pools.yaml, not from a connection.
    return EmrHook(aws_conn_id=aws_conn_id, emr_conn_id=None)


def cluster_provider(name: str, aws_conn_id: str | None = "aws_default") -> ClusterProvider:
    """The pools' provider (``local`` or ``emr``), probing Livy with :func:`hooks.livy.probe_livy`."""
    return provider_for(
        name,
        probe=probe_livy,
        emr_hook=lambda: emr_hook(aws_conn_id),
        ec2_client=lambda: EC2Hook(aws_conn_id=aws_conn_id, api_type="client_type").conn,
    )
