"""deploy/emr/install-db-ca.sh, the bootstrap action that puts the databases' CA bundle on every
node: run here on a bundle of two generated CAs, its truststore read back with the JDK's keytool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spark_jobs.common.database_secret import TRUSTSTORE_PASSWORD
from spotlake_dev.localstack.tls import new_ca

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "emr" / "install-db-ca.sh"


def ca(name: str) -> bytes:
    _, cert = new_ca(name)
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.tools
def test_the_bundle_lands_as_pem_and_as_a_truststore_of_every_certificate(tmp_path: Path) -> None:
    bundle = tmp_path / "global-bundle.pem"
    bundle.write_bytes(ca("Test RDS eu-west-1 Root CA") + ca("Test RDS us-east-1 Root CA"))
    dest = tmp_path / "pki"
    done = subprocess.run(["bash", str(SCRIPT), str(bundle), str(dest)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"install-db-ca: 2 certificate(s) in {dest}/db-ca.pem and {dest}/db-truststore.p12"
    assert (dest / "db-ca.pem").read_bytes() == bundle.read_bytes()
    listed = subprocess.run(
        [
            "keytool",
            "-list",
            "-v",
            "-keystore",
            str(dest / "db-truststore.p12"),
            "-storetype",
            "PKCS12",
            "-storepass",
            TRUSTSTORE_PASSWORD,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("Entry type: trustedCertEntry") == 2  # trusted entries: what a truststore needs
    assert "CN=Test RDS eu-west-1 Root CA" in listed.stdout and "CN=Test RDS us-east-1 Root CA" in listed.stdout


@pytest.mark.tools
def test_a_file_without_certificates_is_refused_naming_the_bundle_to_give(tmp_path: Path) -> None:
    wrong = tmp_path / "bundle.pem"
    wrong.write_text("<html>not found</html>\n")
    done = subprocess.run(["bash", str(SCRIPT), str(wrong), str(tmp_path / "pki")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not (tmp_path / "pki").exists()
    assert f"install-db-ca: {wrong} holds no PEM certificate" in done.stderr and "global-bundle.pem" in done.stderr
