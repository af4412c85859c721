"""Verified TLS to the databases, against the stack's MariaDB and PostgreSQL, which present a
certificate for ``localhost`` signed by the stack's own CA (spotlake_dev.localstack.tls):

- the extraction job's Connector/J with ``sslMode=VERIFY_IDENTITY`` and the PKCS12 truststore
  that the EMR bootstrap action (deploy/emr/install-db-ca.sh) makes from the CA bundle;
- the stream sink's libpq with ``sslmode=verify-full`` and the CA bundle as ``sslrootcert``.

A host the certificate does not name (127.0.0.1) and a CA that did not sign it are refused with
errors that name the TLS setting to fix, and a refused window lands nothing.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from pyspark.sql import SparkSession

from spark_jobs.clickstream.sink import PostgresSinkWriter, SinkUnreachable, resolve_target
from spark_jobs.common.database_secret import DatabaseTls
from spark_jobs.common.errors import ExtractionError
from spotlake.stack import StackLayout
from spotlake_dev.localstack.tls import new_ca, stack_tls
from tests.support.job_harness import Lake, naive, next_window, seed

pytestmark = pytest.mark.integration

INSTALL_DB_CA = Path(__file__).resolve().parents[2] / "deploy" / "emr" / "install-db-ca.sh"


def installed_ca(bundle: Path, dest: Path) -> tuple[Path, Path]:
    """The CA bundle as the EMR bootstrap action installs it: (PEM, PKCS12 truststore)."""
    done = subprocess.run(["bash", str(INSTALL_DB_CA), str(bundle), str(dest)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dest / "db-ca.pem", dest / "db-truststore.p12"


def foreign_bundle(tmp_path: Path) -> Path:
    """A CA bundle that does not hold the CA that signed the stack's certificate."""
    _, cert = new_ca("a CA the databases do not use")
    path = tmp_path / "foreign-bundle.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def database_secret(name: str, settings: dict[str, str], host: str) -> str:
    """A Secrets Manager secret of the database in ``settings``, reached at ``host``."""
    secret_id = f"spotlake/test/tls-{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(
        Name=secret_id,
        SecretString=json.dumps(
            {
                "host": host,
                "port": int(settings["port"]),
                "database": settings["database"],
                "username": settings["user"],
                "password": settings["password"],
            }
        ),
    )
    return secret_id


def tls_accepts(pipe: Lake) -> int:
    """MariaDB's count of completed TLS handshakes (plain connections do not count)."""
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'")
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return int(row[1])


def source(secret_id: str, truststore: Path) -> dict[str, Any]:
    return {"secret_id": secret_id, "tls": {"mode": "verify-identity", "truststore": str(truststore)}}


def test_the_extraction_reads_mysql_over_verified_tls_and_refuses_a_misnamed_host_or_a_foreign_ca(
    pipe: Lake, spark: SparkSession, layout: StackLayout, tmp_path: Path
) -> None:
    _, truststore = installed_ca(stack_tls(layout).ca, tmp_path / "pki")
    _, foreign_truststore = installed_ca(foreign_bundle(tmp_path), tmp_path / "foreign-pki")
    at_localhost = database_secret("mysql", pipe.mysql, "localhost")
    seed(pipe, 30, datetime.now(UTC) - timedelta(days=1))

    before = tls_accepts(pipe)
    result = pipe.snapshot(spark, source=source(at_localhost, truststore))
    assert result["rows"] == 30
    assert pipe.current() == pipe.source()
    assert tls_accepts(pipe) > before  # the job's connections were TLS, not plain

    w = next_window(pipe)
    pipe.sql(f"UPDATE {pipe.table} SET email = 'tls@x.io', updated_at = %s WHERE id <= 3", naive(w + timedelta(minutes=1)))
    watermark = pipe.watermark()
    lake_before = pipe.current()
    # The harness's own secret names 127.0.0.1, which the certificate does not name.
    with pytest.raises(ExtractionError) as misnamed:
        pipe.window(spark, w, source=source(pipe.secret_id, truststore))
    message = str(misnamed.value)
    assert f"cannot connect to MySQL at 127.0.0.1:{pipe.mysql['port']}" in message
    assert "Server identity verification failed" in message and "'127.0.0.1'" in message  # Connector/J's own reason
    assert "TLS verify-identity" in message and "name the host" in message and "the source's tls" in message
    with pytest.raises(ExtractionError, match=f"must chain to a CA in {foreign_truststore}"):
        pipe.window(spark, w, source=source(at_localhost, foreign_truststore))
    assert pipe.watermark() == watermark and pipe.current() == lake_before  # refused windows land nothing

    pipe.window(spark, w, source=source(at_localhost, truststore))
    assert pipe.current() == pipe.source() and pipe.watermark() > watermark


def test_the_stream_sink_connects_with_verify_full_and_refuses_a_misnamed_host_or_a_foreign_ca(
    postgres: dict[str, str], moto_endpoint: str, layout: StackLayout, tmp_path: Path
) -> None:
    ca_file, _ = installed_ca(stack_tls(layout).ca, tmp_path / "pki")
    foreign_ca, _ = installed_ca(foreign_bundle(tmp_path), tmp_path / "foreign-pki")

    def connect(host: str, ca: Path) -> Any:
        secret_id = database_secret("sink", postgres, host)
        target = resolve_target(secret_id, "clicks", tls=DatabaseTls(mode="verify-identity", ca_file=str(ca)))
        writer = PostgresSinkWriter.for_target(
            target, "clicks", schema="public", query_name="tls", run_id="tls", window_s=60, watermark_delay_s=10
        )
        return writer.connection

    conn = connect("localhost", ca_file)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl_on, version = cur.fetchone()
    finally:
        conn.close()
    assert ssl_on is True and version in ("TLSv1.2", "TLSv1.3")

    with pytest.raises(SinkUnreachable) as misnamed:
        connect("127.0.0.1", ca_file)
    message = str(misnamed.value)
    assert f"cannot connect to the sink PostgreSQL at 127.0.0.1:{postgres['port']}" in message
    assert "does not match host name" in message and "sslmode verify-full" in message
    with pytest.raises(SinkUnreachable, match="certificate verify failed"):
        connect("localhost", foreign_ca)
