"""What the jobs say about a JVM error: the first line of its message, and its root cause's when
the outer message says nothing specific (Connector/J's refused TLS handshake)."""

from __future__ import annotations

from typing import Any

from py4j.protocol import Py4JJavaError

from spark_jobs.common.entry import describe_failure
from spark_jobs.extraction.mysql_source import java_message


class JavaClass:
    def __init__(self, name: str) -> None:
        self.name = name

    def getName(self) -> str:
        return self.name


class JavaException:
    """Stands in for a Py4J JavaObject of a Throwable: message, class, cause."""

    _target_id = "o42"  # the JVM object's id, as Py4J names it

    def __init__(self, cls: str, message: str | None, cause: Any = None) -> None:
        self.cls, self.message, self.cause = cls, message, cause

    def getMessage(self) -> str | None:
        return self.message

    def getClass(self) -> JavaClass:
        return JavaClass(self.cls)

    def getCause(self) -> Any:
        return self.cause


def error(java: JavaException) -> Py4JJavaError:
    return Py4JJavaError("An error occurred while calling o42.connect.\n", java)


TLS_REFUSED = JavaException(
    "com.mysql.cj.jdbc.exceptions.CommunicationsException",
    "Communications link failure\n\nThe last packet sent successfully to the server was 0 milliseconds ago.",
    JavaException(
        "javax.net.ssl.SSLHandshakeException",
        "Server identity verification failed.",
        JavaException(
            "java.security.cert.CertificateException",
            "Server identity verification failed. None of the DNS or IP Subject Alternative Name entries matched "
            "the server hostname/IP '127.0.0.1'.",
        ),
    ),
)


def test_a_refused_tls_handshake_names_the_failed_check_not_only_the_link_failure() -> None:
    assert java_message(error(TLS_REFUSED)) == (
        "Communications link failure: Server identity verification failed. None of the DNS or IP Subject "
        "Alternative Name entries matched the server hostname/IP '127.0.0.1'."
    )


def test_an_error_without_a_cause_or_message_is_its_first_line_or_its_class() -> None:
    assert java_message(error(JavaException("java.sql.SQLException", "Access denied for user 'x'\nmore"))) == (
        "Access denied for user 'x'"
    )
    assert java_message(error(JavaException("java.lang.NullPointerException", None))) == "java.lang.NullPointerException"
    assert java_message(error(JavaException("java.lang.IllegalStateException", "  "))) == "java.lang.IllegalStateException"
    same = JavaException("java.sql.SQLException", "Timeout", JavaException("java.net.SocketTimeoutException", "Timeout"))
    assert java_message(error(same)) == "Timeout"


def test_an_unexpected_failure_names_the_root_cause_too() -> None:
    assert describe_failure(error(TLS_REFUSED)) == (
        "com.mysql.cj.jdbc.exceptions.CommunicationsException: Communications link failure\n\nThe last packet sent "
        "successfully to the server was 0 milliseconds ago. (root cause java.security.cert.CertificateException: "
        "Server identity verification failed. None of the DNS or IP Subject Alternative Name entries matched the "
        "server hostname/IP '127.0.0.1'.)"
    )
