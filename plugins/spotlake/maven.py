"""The JVM jars of ``jvm/<group>/pom.xml``, resolved by Maven into the stack's jar cache.

The local stack's servers (Kafka, Livy, Spark, S3Proxy) and the jobs' own jars (published for
EMR by :mod:`spotlake.job_dependencies`) all come from here.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spotlake.errors import StackError
from spotlake.stack import StackLayout

JAR_GROUPS = ("kafka", "livy", "spark", "jobs", "s3")

_MVN_TIMEOUT = 1800.0  # a cold ~/.m2 downloads ~400 MB (aws-java-sdk-bundle alone is 280 MB)
STAMP = ".resolved"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MVN_NOISE = (
    "[ERROR] To see the full",
    "[ERROR] Re-run Maven",
    "[ERROR] For more information",
    "[ERROR] [Help",
)


def pom_path(layout: StackLayout, group: str) -> Path:
    return layout.project / "jvm" / group / "pom.xml"


def jars_fresh(layout: StackLayout, group: str) -> bool:
    """Whether ``.stack/jars/<group>`` holds a complete resolution of the current pom."""
    pom = pom_path(layout, group)
    stamp = layout.jars(group) / STAMP
    if not stamp.exists() or not pom.exists():
        return False
    if stamp.stat().st_mtime >= pom.stat().st_mtime:
        return True
    # The pom was touched (e.g. by a checkout) but its content may be unchanged.
    return stamp.read_text().strip() == _sha256(pom)


def resolve_jars(layout: StackLayout, group: str) -> Path:
    """Copy the runtime jars of ``jvm/<group>/pom.xml`` into ``.stack/jars/<group>``.

    Runs Maven only if the folder is missing or older than the pom. Maven writes into a
    fresh folder that replaces the old one only on success, so jars of an older pom never
    linger next to the new ones. Returns the folder.
    """
    if group not in JAR_GROUPS:
        raise ValueError(f"unknown jar group {group!r}; expected one of {', '.join(JAR_GROUPS)}")
    pom = pom_path(layout, group)
    out = layout.jars(group)
    step = f"maven resolve of jvm/{group}/pom.xml"
    if not pom.exists():
        raise StackError(f"{step} failed: {pom} does not exist")
    layout.jars_dir.mkdir(parents=True, exist_ok=True)
    with _lock(layout.jars_dir / f".{group}.lock"):
        if jars_fresh(layout, group):
            return out
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(f"{step} failed: `mvn` is not on PATH. Fix: apt-get install maven")
        partial = layout.jars_dir / f".{group}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_MVN_TIMEOUT, cwd=layout.project)
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(f"{step} failed: mvn did not finish within {_MVN_TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not any(partial.glob("*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(f"{step} failed: {_mvn_error(done.stdout + done.stderr)} (mvn exit {done.returncode})")
        (partial / STAMP).write_text(_sha256(pom) + "\n")
        old = layout.jars_dir / f".{group}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def jar_files(layout: StackLayout, group: str) -> list[Path]:
    return sorted(layout.jars(group).glob("*.jar"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mvn_error(output: str, lines: int = 12) -> str:
    text = [_ANSI.sub("", line).rstrip() for line in output.splitlines()]
    text = [line for line in text if line.strip() and line.strip() != "[ERROR]"]
    errors = [line for line in text if line.startswith("[ERROR]") and not line.startswith(_MVN_NOISE)]
    picked = (errors or text)[-lines:]
    return "\n".join(picked) if picked else "(mvn printed nothing)"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
