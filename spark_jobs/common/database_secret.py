"""Database credentials from an AWS Secrets Manager secret, read on the cluster.

The secret is a JSON object in one of the shapes AWS produces:

- the RDS secret format (``engine``, ``host``, ``port``, ``username``, ``password``, ``dbname``;
  what the console's "Credentials for Amazon RDS database" and the rotation functions write);
- an RDS-managed master secret (``ManageMasterUserPassword``): ``username`` and ``password``
  only; host, port and database then come from the configuration (:class:`Endpoint`);
- spotlake's own shape, ``database`` in place of ``dbname``.

Values in the secret win over the configured endpoint, which only fills what the secret lacks.
The Secrets Manager client takes its region from the job document, never from the cluster's
environment. Errors name the secret and the fix but never echo its values; the password is only
ever handed to the database driver.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HOST = re.compile(r"^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])$")
SHAPES = (
    "RDS format (host, port, dbname, username, password), an RDS-managed master secret (username, password, "
    "with host, port and database in the configuration) or host, port, database, username, password"
)


@dataclass(frozen=True)
class Endpoint:
    """Where the database is when its secret does not say (an RDS-managed master secret)."""

    host: str | None = None
    port: int | None = None
    database: str | None = None

    def to_job(self) -> dict[str, Any]:
        return {k: v for k, v in (("host", self.host), ("port", self.port), ("database", self.database)) if v}

    @classmethod
    def parse(cls, data: Any, field: str, fail: Callable[[str, str], Exception]) -> Endpoint:
        """An ``endpoint`` section of a job document (``{host, port, database}``, each optional)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise fail(field, f"must map host, port and database, got {data!r}")
        unknown = sorted(set(data) - {"host", "port", "database"})
        if unknown:
            raise fail(field, f"has unknown key(s) {', '.join(unknown)}; expected host, port, database")
        host, port, database = data.get("host"), data.get("port"), data.get("database")
        if host is not None and (not isinstance(host, str) or not HOST.match(host)):
            raise fail(f"{field}.host", f"must be a host name or IP address, got {host!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise fail(f"{field}.port", f"must be a TCP port number, got {port!r}")
        if database is not None and (not isinstance(database, str) or not database):
            raise fail(f"{field}.database", f"must be a database name, got {database!r}")
        return cls(host=host, port=port, database=database)


@dataclass(frozen=True)
class DatabaseSecret:
    host: str
    port: int
    database: str | None
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"DatabaseSecret(host={self.host!r}, port={self.port}, database={self.database!r})"


def parse_database_secret(
    text: str | None, where: str, error: type[Exception], database_required: bool, endpoint: Endpoint | None = None
) -> DatabaseSecret:
    """Check a secret's JSON text in any of :data:`SHAPES`, filling what it lacks from ``endpoint``."""
    try:
        secret = json.loads(text or "")
    except json.JSONDecodeError:
        secret = None
    if not isinstance(secret, dict):
        raise error(f"{where} is not a JSON object; it must be in the {SHAPES}")
    endpoint = endpoint or Endpoint()
    values: dict[str, Any] = {
        "host": secret.get("host") or endpoint.host,
        "port": secret.get("port") or endpoint.port,
        "database": secret.get("database") or secret.get("dbname") or endpoint.database,
        "username": secret.get("username"),
        "password": secret.get("password"),
    }
    required = (
        ("host", "port", "database", "username", "password") if database_required else ("host", "port", "username", "password")
    )
    missing = [k for k in required if not values[k]]
    if missing:
        from_config = [k for k in missing if k in ("host", "port", "database")]
        hint = (
            (
                f"; set {', '.join(from_config)} in the configuration beside the secret's name if the secret is "
                "RDS-managed (it holds only username and password)"
            )
            if from_config
            else ""
        )
        raise error(f"{where} lacks {', '.join(missing)}; it must be in the {SHAPES}{hint}")
    host, port = str(values["host"]), values["port"]
    if not HOST.match(host):
        raise error(f"{where}: host {host!r} is not a host name or IP address")
    if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(port) < 65536:
        raise error(f"{where}: port {port!r} is not a TCP port number")
    database = values["database"]
    return DatabaseSecret(host, int(port), str(database) if database else None, str(values["username"]), str(values["password"]))


def read_database_secret(
    secret_id: str,
    where: str,
    error: type[Exception],
    fix: str,
    database_required: bool,
    region: str | None = None,
    endpoint: Endpoint | None = None,
) -> DatabaseSecret:
    """Read and check the secret; ``where`` prefixes every message, ``fix`` says how to point
    at another secret, ``error`` is the job's own error type and ``region`` the Secrets Manager
    region (the job document's; None falls back to the environment's)."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise error(
            f"{where}: boto3 is not on the driver — the batch's Python archive did not reach it; publish it "
            "with `python -m spotlake.job_dependencies publish` (spark.archives)"
        ) from None
    try:
        response = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise error(
            f"{where} cannot be read from Secrets Manager ({code}) — create it, grant the cluster "
            f"role secretsmanager:GetSecretValue (and kms:Decrypt on its key), or {fix}"
        ) from None
    except BotoCoreError as exc:
        raise error(
            f"{where} cannot be read from Secrets Manager ({type(exc).__name__}: {exc}) — "
            "check the AWS region in the job (the registry's region), the cluster's credentials and its route to "
            "Secrets Manager (a VPC endpoint in private subnets)"
        ) from None
    return parse_database_secret(response.get("SecretString"), where, error, database_required, endpoint)


TLS_MODES = ("auto", "verify-identity", "verify-ca", "required", "disabled")
VERIFYING = ("verify-identity", "verify-ca")
TLS_KEYS = ("mode", "ca_file", "truststore")
# A PKCS12 truststore holds only public certificates: its password guards integrity, not secrecy
# (the JDK's cacerts uses the same well-known one). deploy/emr/install-db-ca.sh writes it so.
TRUSTSTORE_PASSWORD = "changeit"
MYSQL_SSL_MODES = {
    "verify-identity": "VERIFY_IDENTITY",
    "verify-ca": "VERIFY_CA",
    "required": "REQUIRED",
    "disabled": "DISABLED",
}
LIBPQ_SSL_MODES = {"verify-identity": "verify-full", "verify-ca": "verify-ca", "required": "require", "disabled": "disable"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (127.0.0.0/8, ::1, localhost): the local stack's databases."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DatabaseTls:
    """How a job connects to a database over TLS (a source's or sink's ``tls`` in the configuration).

    ``mode``: ``verify-identity`` (the server's certificate chains to ``ca_file`` / ``truststore`` and
    names the host: Connector/J's ``sslMode=VERIFY_IDENTITY``, libpq's ``sslmode=verify-full``),
    ``verify-ca``, ``required`` (encrypted, unverified), ``disabled``; ``auto`` (the default) is
    ``disabled`` for a loopback host (the local stack) and ``verify-identity`` for any other.
    ``ca_file``: the CA bundle (PEM) on the cluster nodes, e.g. RDS's global-bundle.pem, for libpq and
    PgJDBC; ``truststore``: the same certificates as a PKCS12 truststore there, for Connector/J (which
    reads no PEM); without it Connector/J verifies against the JVM's default trust store.
    """

    mode: str = "auto"
    ca_file: str | None = None
    truststore: str | None = None

    def to_job(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode}
        if self.ca_file:
            doc["ca_file"] = self.ca_file
        if self.truststore:
            doc["truststore"] = self.truststore
        return doc

    @classmethod
    def parse(cls, data: Any, field: str, fail: Callable[[str, str], Exception]) -> DatabaseTls:
        """A ``tls`` section (``{mode, ca_file, truststore}``, each optional; none: ``auto``)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise fail(field, f"must map mode, ca_file and truststore, got {data!r}")
        unknown = sorted(set(data) - set(TLS_KEYS))
        if unknown:
            raise fail(field, f"has unknown key(s) {', '.join(unknown)}; expected {', '.join(TLS_KEYS)}")
        mode = data.get("mode", "auto")
        if mode not in TLS_MODES:
            raise fail(f"{field}.mode", f"must be one of {', '.join(TLS_MODES)}, got {mode!r}")
        paths = {}
        for key in ("ca_file", "truststore"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not value.startswith("/")):
                raise fail(f"{field}.{key}", f"must be an absolute path on the cluster nodes, got {value!r}")
            paths[key] = value
        return cls(mode=mode, **paths)

    def effective(self, host: str) -> str:
        """The mode for ``host``: ``auto`` resolved (plain on loopback, verified elsewhere)."""
        if self.mode != "auto":
            return self.mode
        return "disabled" if is_loopback(host) else "verify-identity"

    def mysql_options(self, host: str) -> str:
        """Connector/J URL options (``&sslMode=...`` and the truststore when one is configured)."""
        mode = self.effective(host)
        options = f"&sslMode={MYSQL_SSL_MODES[mode]}"
        if mode in VERIFYING and self.truststore:
            options += (
                f"&trustCertificateKeyStoreUrl=file:{self.truststore}&trustCertificateKeyStoreType=PKCS12"
                f"&trustCertificateKeyStorePassword={TRUSTSTORE_PASSWORD}&fallbackToSystemTrustStore=false"
            )
        return options

    def libpq_params(self, host: str, where: str, error: type[Exception]) -> dict[str, str]:
        """psycopg2's ``sslmode`` (and ``sslrootcert``) for ``host``; a verifying mode without a
        CA bundle is ``error``, naming ``where`` and the fix (libpq has no default trust store)."""
        mode = self.effective(host)
        params = {"sslmode": LIBPQ_SSL_MODES[mode]}
        if mode in VERIFYING:
            if not self.ca_file:
                raise error(
                    f"{where}: TLS mode {mode} (the default for {host}, not a loopback host) verifies the server's "
                    "certificate but no tls.ca_file names the CA bundle; set tls.ca_file to it (RDS: "
                    "global-bundle.pem, installed on the nodes by deploy/emr/install-db-ca.sh), or tls.mode: required"
                )
            params["sslrootcert"] = self.ca_file
        return params
