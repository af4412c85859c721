"""Airflow connections of the local stack, given to every Airflow process as
``AIRFLOW_CONN_*`` environment variables (nothing is written to the metadata
database, and no credential appears in DAG code).

In production the same connection ids are created in Airflow (or a secrets
backend) pointing at RDS, MSK and real AWS; see docs/deploying-to-aws.md.
"""

from __future__ import annotations

import json

from spotlake.stack import StackLayout


def airflow_connection_env(layout: StackLayout) -> dict[str, str]:
    from spotlake.stack import aws_connection_extra
    from spotlake_dev.localstack.services import postgres_settings

    pg = postgres_settings(layout)
    aws = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": aws_connection_extra(layout)}
    postgres = {
        "conn_type": "postgres",
        "host": pg["host"],
        "port": int(pg["port"]),
        "login": pg["user"],
        "password": pg["password"],
        "schema": pg["database"],
    }
    kafka = {
        "conn_type": "generic",
        "extra": {"bootstrap.servers": f"127.0.0.1:{layout.port('kafka')}"},
    }
    return {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_SPOTLAKE_POSTGRES": json.dumps(postgres),
        "AIRFLOW_CONN_SPOTLAKE_KAFKA": json.dumps(kafka),
    }
