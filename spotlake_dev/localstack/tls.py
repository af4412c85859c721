"""The local stack's database TLS: a CA of its own and one server certificate for ``localhost``.

MariaDB and PostgreSQL present this certificate to clients that ask for TLS and still accept
plain connections, so the stack's defaults (``tls.mode: auto``, plain on loopback) are unchanged
while the verifying modes can be tried on one machine: a source or sink secret with
``host: localhost``, ``tls.mode: verify-identity``, and the CA (``ca.pem`` for libpq; for
Connector/J the truststore that ``deploy/emr/install-db-ca.sh`` makes from it). The certificate
names ``localhost`` and nothing else, so the same connection to ``127.0.0.1`` fails the identity
check, as a misnamed endpoint would in AWS.

The files live in ``.stack/data/tls`` and are made once; delete the folder to make new ones.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotlake.stack import StackLayout

SERVER_NAME = "localhost"
VALID_FOR = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class StackTls:
    ca: Path  # the CA certificate (PEM): what a verifying client trusts
    cert: Path  # the server certificate (PEM), for localhost
    key: Path  # its private key (PEM, unencrypted, mode 0600)

    def copy_for(self, folder: Path, chown: Callable[[Path], None]) -> StackTls:
        """The three files copied into ``folder``, each given to the server's user by ``chown``:
        PostgreSQL reads its key only when its own user owns it with no group or other access."""
        folder.mkdir(parents=True, exist_ok=True)
        chown(folder)
        copies = []
        for source in (self.ca, self.cert, self.key):
            target = folder / source.name
            shutil.copyfile(source, target)
            target.chmod(0o600 if source == self.key else 0o644)
            chown(target)
            copies.append(target)
        return StackTls(*copies)


def stack_tls(layout: StackLayout) -> StackTls:
    """The stack's CA and server certificate, made on first use (idempotent)."""
    from cryptography.hazmat.primitives import serialization

    folder = layout.data_dir / "tls"
    files = StackTls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    ca_key, ca_cert = new_ca(f"spotlake local stack CA ({layout.root})"[:64])
    server_key, server_cert = new_server_certificate(ca_key, ca_cert, SERVER_NAME)
    folder.mkdir(parents=True, exist_ok=True)
    files.key.write_bytes(
        server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def new_ca(name: str) -> tuple[Any, Any]:
    """A self-signed CA (EC P-256): its private key and certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_server_certificate(ca_key: Any, ca_cert: Any, name: str) -> tuple[Any, Any]:
    """A server certificate for the DNS name ``name`` (and no other), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert
