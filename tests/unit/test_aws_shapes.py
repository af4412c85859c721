"""Secrets in the shapes AWS produces, the region from the job, Kafka clients that reach MSK."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spark_jobs.clickstream.job import StreamJob
from spark_jobs.clickstream.kafka_security import (
    IAM_CALLBACK_HANDLER,
    Credentials,
    KafkaSecurity,
    parse_credentials,
    read_credentials,
)
from spark_jobs.clickstream.sink import PostgresTarget
from spark_jobs.common.database_secret import DatabaseTls, Endpoint, parse_database_secret, read_database_secret
from spark_jobs.common.errors import ExtractionError, StreamingError
from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.extraction.mysql_source import MySqlSource
from spotlake import config, streaming
from spotlake.errors import ConfigError
from tests.support.stream_configs import parse as parse_streams

RDS_FORMAT = {
    "engine": "mysql",
    "host": "db.abc.eu-west-1.rds.amazonaws.com",
    "port": 3306,
    "username": "spotlake",
    "password": "p@ss",
    "dbname": "shop",
    "dbInstanceIdentifier": "db",
}
MANAGED_MASTER = {"username": "admin", "password": "generated"}


def parse(secret: dict, required: bool = True, endpoint: Endpoint | None = None):
    return parse_database_secret(json.dumps(secret), "secret 's'", ExtractionError, required, endpoint)


def test_the_rds_secret_format_is_read_with_dbname() -> None:
    secret = parse(RDS_FORMAT)
    assert (secret.host, secret.port, secret.database, secret.username) == (
        "db.abc.eu-west-1.rds.amazonaws.com",
        3306,
        "shop",
        "spotlake",
    )


def test_a_managed_master_secret_takes_host_port_and_database_from_the_configuration() -> None:
    with pytest.raises(ExtractionError, match=r"lacks host, port, database.*RDS-managed") as caught:
        parse(MANAGED_MASTER)
    assert "generated" not in str(caught.value)
    secret = parse(MANAGED_MASTER, endpoint=Endpoint("db.internal", 5432, "lake"))
    assert (secret.host, secret.port, secret.database, secret.username, secret.password) == (
        "db.internal",
        5432,
        "lake",
        "admin",
        "generated",
    )
    # what the secret says wins over the configuration (only the gaps are filled)
    assert parse(RDS_FORMAT, endpoint=Endpoint("other", 1, "x")).host == RDS_FORMAT["host"]


def test_a_secret_that_is_not_json_names_the_shapes_without_echoing() -> None:
    with pytest.raises(ExtractionError, match="RDS format") as caught:
        parse_database_secret("hunter2", "secret 's'", ExtractionError, True)
    assert "hunter2" not in str(caught.value)


@mock_aws
def test_the_secrets_manager_region_comes_from_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("secretsmanager", region_name="eu-west-1").create_secret(Name="src", SecretString=json.dumps(RDS_FORMAT))
    with pytest.raises(ExtractionError, match=r"ResourceNotFoundException"):
        read_database_secret("src", "secret 'src'", ExtractionError, "fix it", True)
    assert read_database_secret("src", "secret 'src'", ExtractionError, "fix it", True, region="eu-west-1").database == "shop"


def test_endpoints_travel_from_the_configuration_to_the_job(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text("""
sources:
  shop: {secret_id: rds!db-123, host: db.internal, port: 3306, database: shop}
lake: {type: jdbc, secret_id: rds!db-456, host: catalog.internal, port: 5432, database: lake}
pipelines:
  - {name: orders, source: shop, database: shop, table: orders, primary_key: [id], cursor: updated_at}
""")
    cfg = config.load(path)
    pipeline = cfg.get("orders")
    assert pipeline.source.to_job() == {
        "secret_id": "rds!db-123",
        "endpoint": {"host": "db.internal", "port": 3306, "database": "shop"},
        "tls": {"mode": "auto"},
    }
    assert cfg.lake.to_job(pipeline)["endpoint"] == {"host": "catalog.internal", "port": 5432, "database": "lake"}
    path.write_text(path.read_text().replace("port: 3306", "port: http"))
    with pytest.raises(ConfigError, match=r"sources.shop.port: must be a TCP port number"):
        config.load(path)


def test_the_job_contract_accepts_endpoints() -> None:
    import copy

    from tests.support.job_documents import BASE_JOB  # the contract's reference document

    doc = copy.deepcopy(BASE_JOB)
    doc["source"]["endpoint"] = {"host": "db.internal", "port": 3306}
    assert ExtractJob.from_dict(doc).source_endpoint == Endpoint("db.internal", 3306, None)
    doc["source"]["endpoint"] = {"host": "db.internal", "user": "x"}
    with pytest.raises(ExtractionError, match="source.endpoint"):
        ExtractJob.from_dict(doc)


# --------------------------------------------------------------------- database TLS
RDS_CA = "/etc/pki/spotlake/db-ca.pem"
TRUSTSTORE = "/etc/pki/spotlake/db-truststore.p12"


def test_database_tls_travels_from_the_configuration_to_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(f"""
sources:
  shop: {{secret_id: rds!db-123, tls: {{mode: verify-identity, truststore: {TRUSTSTORE}}}}}
pipelines:
  - {{name: orders, source: shop, database: shop, table: orders, primary_key: [id], cursor: updated_at}}
""")
    pipeline = config.load(path).get("orders")
    tls = {"mode": "verify-identity", "truststore": TRUSTSTORE}
    assert pipeline.source.to_job()["tls"] == tls
    import copy

    from tests.support.job_documents import BASE_JOB

    doc = copy.deepcopy(BASE_JOB)
    doc["source"]["tls"] = tls
    assert ExtractJob.from_dict(doc).source_tls == DatabaseTls("verify-identity", truststore=TRUSTSTORE)
    for bad, said in (
        ("{mode: verify-full}", "sources.shop.tls.mode: must be one of auto, verify-identity, verify-ca, required, disabled"),
        ("{mode: required, truststore: rds.p12}", "sources.shop.tls.truststore: must be an absolute path on the cluster nodes"),
        (f"{{ca_file: {RDS_CA}}}", "sources.shop.tls.ca_file: the MySQL driver (Connector/J) reads no PEM file"),
        ("{sslmode: require}", "sources.shop.tls: has unknown key(s) sslmode"),
    ):
        pipelines = "pipelines:\n  - {name: orders, source: shop, database: shop, table: orders, primary_key: [id], "
        path.write_text(f"sources:\n  shop: {{secret_id: s, tls: {bad}}}\n{pipelines}cursor: updated_at}}\n")
        with pytest.raises(ConfigError, match=re.escape(said)):
            config.load(path)


@pytest.mark.parametrize(
    ("tls", "host", "options"),
    [
        (DatabaseTls(), "127.0.0.1", "&sslMode=DISABLED"),  # the local stack stays plain
        (DatabaseTls(), "localhost", "&sslMode=DISABLED"),
        (DatabaseTls(), "[::1]", "&sslMode=DISABLED"),
        (DatabaseTls(), "shop.abc.eu-west-1.rds.amazonaws.com", "&sslMode=VERIFY_IDENTITY"),  # JVM default trust
        (
            DatabaseTls(truststore=TRUSTSTORE),
            "10.0.3.7",
            f"&sslMode=VERIFY_IDENTITY&trustCertificateKeyStoreUrl=file:{TRUSTSTORE}&trustCertificateKeyStoreType=PKCS12"
            "&trustCertificateKeyStorePassword=changeit&fallbackToSystemTrustStore=false",
        ),
        (DatabaseTls("required", truststore=TRUSTSTORE), "db.internal", "&sslMode=REQUIRED"),
        (DatabaseTls("verify-ca"), "127.0.0.1", "&sslMode=VERIFY_CA"),  # an explicit mode wins on loopback too
    ],
)
def test_the_mysql_url_asks_for_verified_tls_except_on_loopback(tls: DatabaseTls, host: str, options: str) -> None:
    source = MySqlSource(host, 3306, "shop", "u", "s3cr3t-pw", tls)
    assert source.url.endswith("&tcpKeepAlive=true" + options)
    assert "s3cr3t-pw" not in source.url and "password=" not in source.url.replace("KeyStorePassword=", "")


def test_the_sink_connects_with_verify_full_and_the_ca_bundle_except_on_loopback() -> None:
    remote = PostgresTarget("sink.abc.eu-west-1.rds.amazonaws.com", 5432, "clicks", "u", "p", DatabaseTls(ca_file=RDS_CA))
    assert remote.ssl_params("clicks") == {"sslmode": "verify-full", "sslrootcert": RDS_CA}
    assert PostgresTarget("127.0.0.1", 5432, "clicks", "u", "p").ssl_params("clicks") == {"sslmode": "disable"}
    required = PostgresTarget("10.0.0.5", 5432, "clicks", "u", "p", DatabaseTls("required"))
    assert required.ssl_params("clicks") == {"sslmode": "require"}
    with pytest.raises(StreamingError) as missing:
        PostgresTarget("10.0.0.5", 5432, "clicks", "u", "p").ssl_params("clicks")
    assert str(missing.value).startswith(
        "stream clicks: sink PostgreSQL at 10.0.0.5:5432/clicks: TLS mode verify-identity (the default for 10.0.0.5, "
        "not a loopback host) verifies the server's certificate but no tls.ca_file names the CA bundle"
    )


def test_the_sink_tls_travels_to_the_stream_job_and_a_truststore_is_refused() -> None:
    sink = {"secret_id": "s", "schema": "clickstream", "tls": {"ca_file": RDS_CA}}
    stream = parse_streams(sink=sink).get("clicks")
    assert StreamJob.from_dict(stream.job_document("r", 1, "b:9092")).sink.tls == DatabaseTls(ca_file=RDS_CA)
    with pytest.raises(ConfigError, match=r"sink.tls.truststore: the sink's driver \(libpq\) reads a PEM CA bundle"):
        parse_streams(sink={**sink, "tls": {"truststore": TRUSTSTORE}})


# --------------------------------------------------------------------- Kafka
def fail(field: str, problem: str) -> ValueError:
    return ValueError(f"{field}: {problem}")


def test_plaintext_adds_nothing() -> None:
    security = KafkaSecurity.parse(None, "s", fail)
    assert security.spark_options() == {} and security.librdkafka_settings() == {}


def test_tls_with_a_ca_bundle_reaches_both_clients() -> None:
    security = KafkaSecurity.parse({"protocol": "SSL", "ca_file": "/etc/pki/msk.pem"}, "s", fail)
    assert security.spark_options() == {
        "kafka.security.protocol": "SSL",
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": "/etc/pki/msk.pem",
    }
    assert security.librdkafka_settings() == {"security.protocol": "SSL", "ssl.ca.location": "/etc/pki/msk.pem"}


def test_msk_iam_uses_the_login_module_and_a_signed_token(monkeypatch: pytest.MonkeyPatch) -> None:
    security = KafkaSecurity.parse({"protocol": "SASL_SSL", "mechanism": "AWS_MSK_IAM"}, "s", fail)
    options = security.spark_options()
    assert options["kafka.sasl.mechanism"] == "AWS_MSK_IAM"
    assert options["kafka.sasl.client.callback.handler.class"] == IAM_CALLBACK_HANDLER
    settings = security.librdkafka_settings(region="eu-west-1")
    assert settings["sasl.mechanism"] == "OAUTHBEARER" and settings["security.protocol"] == "SASL_SSL"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    token, expiry = settings["oauth_cb"]("")
    assert token and expiry > 0  # signed locally by aws-msk-iam-sasl-signer, as librdkafka will call it
    with pytest.raises(ValueError, match="region"):
        security.librdkafka_settings()


def test_scram_reads_its_secret_and_never_puts_it_in_the_document() -> None:
    security = KafkaSecurity.parse(
        {"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "secret_id": "AmazonMSK_spotlake"}, "s", fail
    )
    assert security.to_job() == {"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "secret_id": "AmazonMSK_spotlake"}
    user = Credentials("spotlake", "pw")
    assert 'username="spotlake" password="pw";' in security.spark_options(user)["kafka.sasl.jaas.config"]
    assert security.librdkafka_settings(user)["sasl.password"] == "pw"
    with pytest.raises(StreamingError, match="quote"):
        parse_credentials(json.dumps({"username": "u", "password": 'a"b'}), "secret", StreamingError)


@mock_aws
def test_scram_credentials_come_from_secrets_manager_in_the_jobs_region() -> None:
    boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
        Name="AmazonMSK_x", SecretString=json.dumps({"username": "u", "password": "p"})
    )
    assert read_credentials("AmazonMSK_x", "secret", StreamingError, "eu-west-1") == Credentials("u", "p")


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"protocol": "TLS"}, "protocol: must be one of"),
        ({"protocol": "SASL_SSL"}, "mechanism: must be one of"),
        ({"protocol": "SSL", "mechanism": "AWS_MSK_IAM"}, "needs protocol SASL_SSL"),
        ({"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512"}, "secret_id: must name"),
        ({"protocol": "SSL", "ca_file": "relative.pem"}, "ca_file: must be an absolute path"),
        ({"protocol": "SSL", "keystore": "/x"}, "keystore: is not a Kafka security setting"),
    ],
)
def test_bad_kafka_security_is_refused(section: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        KafkaSecurity.parse(section, "s", fail)


def test_stream_config_carries_security_region_and_sink_endpoint_to_the_job() -> None:
    stream = parse_streams(kafka_security={"protocol": "SASL_SSL", "mechanism": "AWS_MSK_IAM"}).get("clicks")
    document = stream.job_document("r1", 1, "b-1.msk:9098", region="eu-west-1")
    job = StreamJob.from_dict(document)
    assert job.region == "eu-west-1"
    assert job.source.options()["kafka.sasl.mechanism"] == "AWS_MSK_IAM"
    with pytest.raises(ConfigError, match="kafka_security.mechanism"):
        parse_streams(kafka_security={"protocol": "SASL_SSL"})


def test_stream_sink_endpoint_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "streaming.yaml"
    path.write_text("""
streams:
  clicks:
    topics: [clicks]
    sink: {secret_id: rds!cluster-1, schema: clickstream, host: pg.internal, port: 5432, database: reports}
    checkpoint: s3://b/checkpoints/clicks
""")
    stream = streaming.load(path).get("clicks")
    job = StreamJob.from_dict(stream.job_document("r", 1, "b:9092"))
    assert job.sink.endpoint == Endpoint("pg.internal", 5432, "reports")
