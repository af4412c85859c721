"""Database credentials from an AWS Secrets Manager secret, read on the cluster.

The secret is a JSON object with ``host``, ``port``, ``database``, ``username`` and
``password`` (the shape of an RDS-managed secret). Errors name the secret and the fix but
never echo its values; the password is only ever handed to the database driver.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

HOST = re.compile(r"^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])$")


@dataclass(frozen=True)
class DatabaseSecret:
    host: str
    port: int
    database: str | None
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"DatabaseSecret(host={self.host!r}, port={self.port}, database={self.database!r})"


def read_database_secret(
    secret_id: str,
    where: str,
    error: type[Exception],
    fix: str,
    database_required: bool,
) -> DatabaseSecret:
    """Read and check the secret; ``where`` prefixes every message, ``fix`` says how to point
    at another secret, and ``error`` is the job's own error type."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise error(
            f"{where}: boto3 is not installed on the cluster — install it "
            "(EMR: a bootstrap action running `pip install boto3`)"
        ) from None
    try:
        response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise error(
            f"{where} cannot be read from Secrets Manager ({code}) — create it, grant the cluster "
            f"role secretsmanager:GetSecretValue, or {fix}"
        ) from None
    except BotoCoreError as exc:
        raise error(
            f"{where} cannot be read from Secrets Manager ({type(exc).__name__}: {exc}) — "
            "check the AWS region, credentials and endpoint of the cluster"
        ) from None
    try:
        secret = json.loads(response.get("SecretString") or "")
    except json.JSONDecodeError:
        secret = None
    if not isinstance(secret, dict):
        raise error(f"{where} is not a JSON object with host, port, database, username and password")
    required = ("host", "port", "database", "username", "password") if database_required else (
        "host", "port", "username", "password")
    missing = [k for k in required if not secret.get(k)]
    if missing:
        raise error(
            f"{where} lacks {', '.join(missing)}; it must hold host, port, database, username and password"
        )
    host, port = str(secret["host"]), secret["port"]
    if not HOST.match(host):
        raise error(f"{where}: host {host!r} is not a host name or IP address")
    if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(port) < 65536:
        raise error(f"{where}: port {port!r} is not a TCP port number")
    database = secret.get("database")
    return DatabaseSecret(host, int(port), str(database) if database else None, str(secret["username"]),
                          str(secret["password"]))
