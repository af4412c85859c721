"""What the local stack's JVM servers share: the ``java`` to run, heap settings, config files."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

from spotlake.errors import StackError
from spotlake.stack import StackLayout

# What the upstream bin/livy-server passes to the JVM "for Java 17 support".
LIVY_JAVA17_FLAGS = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.base/sun.security.x509=ALL-UNNAMED",
    "--add-exports=java.base/sun.security.util=ALL-UNNAMED",
)


def java_bin() -> str:
    """The ``java`` to run the servers with: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError("no `java` found (JAVA_HOME unset and none on PATH). Fix: apt-get install openjdk-17-jre-headless")
    return found


def heap_args(layout: StackLayout, key: str, default: str) -> list[str]:
    return shlex.split(layout.setting(key, default) or default)


def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def properties_text(values: Mapping[str, object]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())
