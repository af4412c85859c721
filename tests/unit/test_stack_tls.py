"""The local stack's database certificates (spotlake_dev.localstack.tls): a real TLS handshake
in-process with Python's ssl module, verifying as libpq's verify-full and Connector/J's
VERIFY_IDENTITY do (chain to the CA, name the host)."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spotlake.stack import StackLayout
from spotlake_dev.localstack.tls import StackTls, new_ca, stack_tls

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path: Path) -> StackTls:
    return stack_tls(StackLayout(root=tmp_path / "stack", project=PROJECT_ROOT, settings={}))


def handshake(files: StackTls, server_name: str, ca: Path) -> str:
    """One TLS handshake on loopback, the server presenting the stack's certificate; the client
    trusts ``ca`` only and checks ``server_name``. Returns the negotiated protocol."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.cert, files.key)
    client_context = ssl.create_default_context(cafile=str(ca))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_context.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                version = str(tls.version())
                tls.sendall(b".")
                return version
        finally:
            thread.join(timeout=10)


def test_the_certificate_verifies_for_localhost_against_the_stack_ca(files: StackTls) -> None:
    assert handshake(files, "localhost", files.ca) in ("TLSv1.2", "TLSv1.3")


def test_the_same_certificate_is_refused_for_another_name_and_by_another_ca(files: StackTls, tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(files, "127.0.0.1", files.ca)
    _, other = new_ca("another CA")
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(files, "localhost", foreign)


def test_the_files_are_made_once_and_the_key_is_private(tmp_path: Path) -> None:
    layout = StackLayout(root=tmp_path / "stack", project=PROJECT_ROOT, settings={})
    first = stack_tls(layout)
    contents = [p.read_bytes() for p in (first.ca, first.cert, first.key)]
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    again = stack_tls(layout)
    assert again == first and [p.read_bytes() for p in (again.ca, again.cert, again.key)] == contents
    # a half-written set (no CA) is made again, whole
    first.ca.unlink()
    remade = stack_tls(layout)
    assert remade.ca.exists() and remade.cert.read_bytes() != contents[1]


def test_a_copy_for_the_server_user_keeps_the_key_private_and_hands_every_file_over(files: StackTls, tmp_path: Path) -> None:
    handed: list[Path] = []
    copy = files.copy_for(tmp_path / "pg" / "tls", handed.append)
    assert handed == [tmp_path / "pg" / "tls", copy.ca, copy.cert, copy.key]
    assert stat.S_IMODE(copy.key.stat().st_mode) == 0o600 and stat.S_IMODE(copy.cert.stat().st_mode) == 0o644
    assert copy.key.read_bytes() == files.key.read_bytes()
    assert handshake(copy, "localhost", copy.ca)
