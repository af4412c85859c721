"""How the Kafka clients reach the brokers: plaintext locally, TLS and SASL on Amazon MSK.

One description, two clients: Spark's Kafka source in the stream job (Java client properties,
``kafka.``-prefixed options) and the supervisor's confluent-kafka admin client and consumer
(librdkafka settings). MSK encrypts client traffic by default, so a production stream sets at
least ``protocol: SSL``:

- ``PLAINTEXT``: no TLS, no authentication (the local stack);
- ``SSL``: TLS; the brokers' certificate is checked against the system's trust store, or the
  PEM bundle ``ca_file`` (a path that exists on the cluster nodes and the Airflow workers);
- ``SASL_SSL`` with ``mechanism: AWS_MSK_IAM``: MSK's IAM access control. Spark uses the
  ``aws-msk-iam-auth`` login module (jvm/jobs/pom.xml); confluent-kafka uses an OAUTHBEARER
  token from ``aws-msk-iam-sasl-signer-python`` for the job document's region; both sign with
  the role the process runs as (the cluster's instance profile, Airflow's execution role);
- ``SASL_SSL`` with ``mechanism: SCRAM-SHA-512``: a user name and password from the Secrets
  Manager secret ``secret_id`` (``{"username": ..., "password": ...}``, MSK's ``AmazonMSK_`` secrets).

Credentials never travel in the job document: only the secret's name does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("AWS_MSK_IAM", "SCRAM-SHA-512")
IAM_LOGIN_MODULE = "software.amazon.msk.auth.iam.IAMLoginModule"
IAM_CALLBACK_HANDLER = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
KEYS = frozenset({"protocol", "mechanism", "ca_file", "secret_id"})
_JAAS_SAFE = re.compile(r'^[^"\\;\n\r]*$')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r})"


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    ca_file: str | None = None
    secret_id: str | None = None

    @property
    def needs_secret(self) -> bool:
        return self.mechanism == "SCRAM-SHA-512"

    def to_job(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"protocol": self.protocol}
        for key in ("mechanism", "ca_file", "secret_id"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        return doc

    @classmethod
    def parse(cls, data: Any, field: str, fail: Callable[[str, str], Exception]) -> KafkaSecurity:
        """A ``security`` section (config or job document); ``fail(field, problem)`` builds the error."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise fail(field, f"must map {', '.join(sorted(KEYS))}, got {data!r}")
        unknown = sorted(set(data) - KEYS)
        if unknown:
            raise fail(f"{field}.{unknown[0]}", f"is not a Kafka security setting; known: {', '.join(sorted(KEYS))}")
        protocol = str(data.get("protocol", "PLAINTEXT")).upper()
        if protocol not in PROTOCOLS:
            raise fail(
                f"{field}.protocol",
                f"must be one of {', '.join(PROTOCOLS)}, got {data.get('protocol')!r} "
                "(Amazon MSK: SSL, or SASL_SSL with a mechanism)",
            )
        mechanism = data.get("mechanism")
        if protocol == "SASL_SSL":
            if mechanism not in MECHANISMS:
                raise fail(f"{field}.mechanism", f"must be one of {', '.join(MECHANISMS)} with SASL_SSL, got {mechanism!r}")
        elif mechanism is not None:
            raise fail(f"{field}.mechanism", f"needs protocol SASL_SSL (protocol is {protocol})")
        secret_id = data.get("secret_id")
        if mechanism == "SCRAM-SHA-512" and (not isinstance(secret_id, str) or not secret_id.strip()):
            raise fail(
                f"{field}.secret_id",
                "must name the Secrets Manager secret holding the SCRAM user name and "
                "password (MSK: a secret whose name starts with AmazonMSK_)",
            )
        if mechanism != "SCRAM-SHA-512" and secret_id is not None:
            raise fail(f"{field}.secret_id", "is only for mechanism SCRAM-SHA-512")
        ca_file = data.get("ca_file")
        if ca_file is not None and (protocol == "PLAINTEXT" or not isinstance(ca_file, str) or not ca_file.startswith("/")):
            raise fail(f"{field}.ca_file", "must be an absolute path of a PEM bundle, with protocol SSL or SASL_SSL")
        return cls(protocol=protocol, mechanism=mechanism, ca_file=ca_file, secret_id=secret_id)

    # ------------------------------------------------------------- Spark (Java client)
    def spark_options(self, credentials: Credentials | None = None) -> dict[str, str]:
        """Options of Spark's Kafka source (``kafka.`` + the Java client's property); none for plaintext."""
        if self.protocol == "PLAINTEXT":
            return {}
        props: dict[str, str] = {"security.protocol": self.protocol}
        if self.ca_file:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = self.ca_file
        if self.mechanism == "AWS_MSK_IAM":
            props["sasl.mechanism"] = "AWS_MSK_IAM"
            props["sasl.jaas.config"] = f"{IAM_LOGIN_MODULE} required;"
            props["sasl.client.callback.handler.class"] = IAM_CALLBACK_HANDLER
        elif self.mechanism == "SCRAM-SHA-512":
            user = self._credentials(credentials)
            props["sasl.mechanism"] = "SCRAM-SHA-512"
            props["sasl.jaas.config"] = f'{SCRAM_LOGIN_MODULE} required username="{user.username}" password="{user.password}";'
        return {f"kafka.{key}": value for key, value in props.items()}

    # ------------------------------------------------------- confluent-kafka (librdkafka)
    def librdkafka_settings(self, credentials: Credentials | None = None, region: str | None = None) -> dict[str, Any]:
        if self.protocol == "PLAINTEXT":
            return {}
        settings: dict[str, Any] = {"security.protocol": self.protocol}
        if self.ca_file:
            settings["ssl.ca.location"] = self.ca_file
        if self.mechanism == "AWS_MSK_IAM":
            settings["sasl.mechanism"] = "OAUTHBEARER"
            settings["oauth_cb"] = msk_iam_token_callback(region)
        elif self.mechanism == "SCRAM-SHA-512":
            user = self._credentials(credentials)
            settings.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user.username, "sasl.password": user.password})
        return settings

    def _credentials(self, credentials: Credentials | None) -> Credentials:
        if credentials is None:
            raise ValueError(f"Kafka SCRAM needs the credentials of secret {self.secret_id!r}")
        return credentials


def msk_iam_token_callback(region: str | None) -> Callable[[str], tuple[str, float]]:
    """confluent-kafka's ``oauth_cb``: an MSK IAM token signed for ``region``."""
    if not region:
        raise ValueError("Kafka IAM authentication needs the AWS region of the MSK cluster")

    def token(_config: str) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        value, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return value, expiry_ms / 1000.0

    return token


def parse_credentials(text: str | None, where: str, error: type[Exception]) -> Credentials:
    """A SCRAM secret's JSON text: ``username`` and ``password`` (values never echoed)."""
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not data.get("username") or not data.get("password"):
        raise error(f"{where} must be a JSON object with username and password (the SCRAM user of the MSK cluster)")
    username, password = str(data["username"]), str(data["password"])
    if not _JAAS_SAFE.match(username) or not _JAAS_SAFE.match(password):
        raise error(
            f"{where}: the user name or password holds a quote, backslash, semicolon or line break, which a "
            "JAAS configuration cannot carry; rotate it to one without"
        )
    return Credentials(username, password)


def read_credentials(secret_id: str, where: str, error: type[Exception], region: str | None) -> Credentials:
    """Read the SCRAM secret from Secrets Manager in ``region``."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code", "error") if isinstance(exc, ClientError) else type(exc).__name__
        raise error(
            f"{where} cannot be read from Secrets Manager ({code}) — create it, grant "
            "secretsmanager:GetSecretValue and kms:Decrypt on its key, or fix kafka_security.secret_id"
        ) from None
    return parse_credentials(response.get("SecretString"), where, error)
