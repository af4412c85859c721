"""The Spark jobs' dependencies, published beside the job code and named by every batch.

A cluster runs a job with what the batch names and nothing else the project installed: the jars
of ``jvm/jobs/pom.xml`` (MySQL Connector/J, the PostgreSQL driver, Spark's Kafka connector and
its client, Apache Iceberg) go to ``jars``, and the Python packages of
``spark_jobs/requirements.txt`` (boto3, psycopg2) go as one archive of binary wheels to
``spark.archives=<uri>#pydeps`` (``spark_jobs/common/runtime.py`` puts it on the driver's path). The
same path runs locally and on EMR: the local Livy's Spark has none of these of its own.

``publish`` copies each file to ``<root>/deps/<sha256[:16]>/<name>`` (content-addressed: a file
is never rewritten, so a running batch never sees its dependencies change) and then writes the
manifest ``<root>/job-dependencies.json`` naming them, the one object that changes when the pins
change. ``<root>`` is the artifacts root (``SPOTLAKE_ARTIFACTS``: ``s3://bucket/prefix`` on AWS,
a folder locally). The operators read the manifest when they build a batch (:func:`load`).

Build and publish (needs Maven and pip; the Airflow environment only reads the manifest)::

    python -m spotlake.job_dependencies publish --to s3://my-bucket/spotlake/artifacts
    python -m spotlake.job_dependencies publish --to s3://... --platform manylinux2014_aarch64  # Graviton
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spark_jobs.common.runtime import ARCHIVE_ALIAS
from spotlake import maven
from spotlake.errors import SpotlakeError
from spotlake.lake import split_s3

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PROJECT_ROOT / "spark_jobs" / "requirements.txt"
# The EMR bootstrap actions, published to stable names (<root>/bootstrap/<name>) that
# config/pools.yaml names: the Python the archive is built for, and the databases' CA bundle
# (for sources and sinks reached over verified TLS).
BOOTSTRAP_SCRIPT = PROJECT_ROOT / "deploy" / "emr" / "install-python.sh"
BOOTSTRAP_SCRIPTS = (BOOTSTRAP_SCRIPT, PROJECT_ROOT / "deploy" / "emr" / "install-db-ca.sh")
MANIFEST = "job-dependencies.json"
# The cluster's Python: EMR 7 pools install CPython 3.11 with a bootstrap action (docs/deploying-to-aws.md).
DEFAULT_PYTHON = "3.11"
DEFAULT_PLATFORM = "manylinux2014_x86_64"
# The AWS services whose botocore models the archive keeps: those the jobs' own boto3 clients call
# (tests/unit/test_job_dependencies.py checks the list against spark_jobs/), and those botocore's
# credential providers may call. The other ~430 models are 90% of botocore's size: without them a
# batch's driver unpacks a quarter of the bytes.
AWS_SERVICES = ("dynamodb", "s3", "secretsmanager", "sts", "sso", "sso-oidc")
_PIP_TIMEOUT = 900.0


class DependenciesMissing(SpotlakeError):
    """No published job dependencies where the artifacts go."""


@dataclass(frozen=True)
class Manifest:
    """What every batch names: jar URIs and the Python archive's URI (with the cluster it was built for)."""

    jars: list[str]
    python_archive: str
    python: str = DEFAULT_PYTHON
    platform: str = DEFAULT_PLATFORM
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    bootstrap: str | None = None  # the EMR bootstrap action installing that Python

    def spark_conf(self) -> dict[str, str]:
        return {"spark.archives": f"{self.python_archive}#{ARCHIVE_ALIAS}"}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            return cls(
                jars=list(data["jars"]),
                python_archive=str(data["python_archive"]),
                python=str(data.get("python", DEFAULT_PYTHON)),
                platform=str(data.get("platform", DEFAULT_PLATFORM)),
                files=dict(data.get("files", {})),
                bootstrap=data.get("bootstrap"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DependenciesMissing(
                f"{where} is not a job-dependencies manifest ({exc}); publish again with "
                "`python -m spotlake.job_dependencies publish --to <artifacts root>`"
            ) from None


# ------------------------------------------------------------------ reading
def load(root: str, s3: Any = None) -> Manifest:
    """The manifest under artifacts ``root``; a clear error naming the publish command if absent."""
    root = root.rstrip("/")
    where = f"{root}/{MANIFEST}"
    fix = (
        f"no job dependencies published at {where}: run `python -m spotlake.job_dependencies publish "
        f"--to {root}` (Maven and pip needed once per dependency change; `make up` does it locally)"
    )
    if root.startswith(("s3://", "s3a://")):
        if s3 is None:
            raise ValueError("reading the job-dependencies manifest from S3 needs an S3 client")
        bucket, prefix = split_s3(root)
        try:
            body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}".lstrip("/"))["Body"].read()
        except Exception as exc:
            if _is_not_found(exc):
                raise DependenciesMissing(fix) from None
            raise
        return Manifest.from_json(body.decode("utf-8"), where)
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DependenciesMissing(fix)
    return Manifest.from_json(path.read_text(encoding="utf-8"), where)


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound")


# ----------------------------------------------------------------- building
def python_archive_name(python: str, platform: str) -> str:
    compiled = "pyc-unchecked-hash" if _compiles_for(python) else "no-pyc"
    recipe = f"{python}|{platform}|{','.join(AWS_SERVICES)}|{compiled}|no-bin"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + recipe.encode()).hexdigest()[:16]
    return f"pydeps-cp{python.replace('.', '')}-{platform}-{digest}.tar.gz"


def build_python_archive(
    out_dir: Path, python: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM, pip: Sequence[str] | None = None
) -> Path:
    """The archive of ``spark_jobs/requirements.txt`` for CPython ``python`` on ``platform``: binary
    wheels only, no dependency resolution (every package is pinned), packed deterministically.
    Reused when its inputs did not change (the name carries their digest)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / python_archive_name(python, platform)
    if archive.exists():
        return archive
    pip = list(pip or [sys.executable, "-m", "pip"])
    with tempfile.TemporaryDirectory(prefix="spotlake-pydeps-") as tmp:
        target = Path(tmp) / "site"
        argv = [
            *pip,
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--no-compile",
            "--target",
            str(target),
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--platform",
            platform,
            "-r",
            str(REQUIREMENTS),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SpotlakeError(f"building the jobs' Python archive: pip did not finish in {_PIP_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
            raise SpotlakeError(
                f"building the jobs' Python archive for CPython {python} on {platform} failed (pip exit "
                f"{done.returncode}); every package in {REQUIREMENTS.name} needs a binary wheel for that "
                f"interpreter and platform:\n{tail}"
            )
        _keep_only_service_models(target)
        shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts whose #! names this machine's Python
        _precompile(target, python)
        partial = archive.with_suffix(".partial")
        partial.write_bytes(_deterministic_tar(target))
        partial.replace(archive)
    return archive


def _keep_only_service_models(site: Path) -> None:
    """Drop the botocore and boto3 models of the services the jobs never call (:data:`AWS_SERVICES`)."""
    for data in (site / "botocore" / "data", site / "boto3" / "data"):
        if not data.is_dir():
            continue
        for service in data.iterdir():
            if service.is_dir() and service.name not in AWS_SERVICES:
                shutil.rmtree(service)


def _compiles_for(python: str) -> bool:
    return f"{sys.version_info.major}.{sys.version_info.minor}" == python


def _precompile(site: Path, python: str) -> None:
    """Byte-compile the packages when this interpreter is the cluster's version: ``unchecked-hash``
    pycs stay valid whatever the files' times after unpacking, so the driver compiles nothing. The
    source paths recorded in them are relative to the archive (``pydeps/...``), not this machine's
    build folder, so equal inputs give equal bytes."""
    if not _compiles_for(python):
        return
    import compileall
    import py_compile

    compileall.compile_dir(
        str(site),
        quiet=1,
        workers=1,
        stripdir=str(site),
        prependdir=ARCHIVE_ALIAS,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _deterministic_tar(folder: Path) -> bytes:
    """A gzipped tar of ``folder``'s content: sorted, fixed owner and times, so equal input -> equal bytes."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            # modes independent of the builder's umask: directories and executables 0755, files 0644
            info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def job_jars(jars_dir: Path) -> list[Path]:
    jars = sorted(jars_dir.glob("*.jar"))
    if not jars:
        raise SpotlakeError(f"no jars in {jars_dir}: resolve jvm/jobs/pom.xml first (`python -m spotlake_dev.localstack jars`)")
    return jars


# --------------------------------------------------------------- publishing
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(
    root: str,
    jars: Sequence[Path],
    python_archive: Path,
    s3: Any = None,
    python: str = DEFAULT_PYTHON,
    platform: str = DEFAULT_PLATFORM,
) -> Manifest:
    """Copy ``jars`` and ``python_archive`` under ``<root>/deps/`` by content and write the manifest."""
    root = root.rstrip("/")
    files = [*jars, python_archive]
    sums = {path.name: _sha256(path) for path in files}
    names = {path.name: f"deps/{sums[path.name][:16]}/{path.name}" for path in files}
    if root.startswith(("s3://", "s3a://")):
        if s3 is None:
            raise ValueError("publishing job dependencies to S3 needs an S3 client")
        bucket, prefix = split_s3(root)
        for path in files:
            key = f"{prefix}/{names[path.name]}".lstrip("/")
            if not _s3_exists(s3, bucket, key):
                s3.upload_file(str(path), bucket, key)
        for script in BOOTSTRAP_SCRIPTS:
            s3.upload_file(str(script), bucket, f"{prefix}/bootstrap/{script.name}".lstrip("/"))
        base = f"s3://{bucket}/{prefix}".rstrip("/")
    else:
        folder = Path(root)
        for path in files:
            dest = folder / names[path.name]
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".partial")
                shutil.copyfile(path, tmp)
                tmp.replace(dest)
        (folder / "bootstrap").mkdir(parents=True, exist_ok=True)
        for script in BOOTSTRAP_SCRIPTS:
            shutil.copyfile(script, folder / "bootstrap" / script.name)
        base = str(folder.resolve())
    manifest = Manifest(
        jars=[f"{base}/{names[path.name]}" for path in jars],
        python_archive=f"{base}/{names[python_archive.name]}",
        python=python,
        platform=platform,
        files=sums,
        bootstrap=f"{base}/bootstrap/{BOOTSTRAP_SCRIPT.name}",
    )
    _write_manifest(root, manifest, s3)
    return manifest


def _s3_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _is_not_found(exc):
            return False
        raise
    return True


def _write_manifest(root: str, manifest: Manifest, s3: Any) -> None:
    body = manifest.to_json().encode("utf-8")
    if root.startswith(("s3://", "s3a://")):
        bucket, prefix = split_s3(root)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}".lstrip("/"), Body=body, ContentType="application/json")
        return
    path = Path(root) / MANIFEST
    if path.exists() and path.read_bytes() == body:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(MANIFEST + ".partial")
    tmp.write_bytes(body)
    tmp.replace(path)


def build_and_publish(
    root: str, s3: Any = None, python: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM, layout: Any = None
) -> Manifest:
    """Resolve the jobs' jars with Maven, build the Python archive with pip, publish both under ``root``."""
    from spotlake.stack import StackLayout

    layout = layout or StackLayout.default()
    jars = job_jars(maven.resolve_jars(layout, "jobs"))
    archive = build_python_archive(layout.root / "job-deps", python=python, platform=platform)
    return publish(root, jars, archive, s3=s3, python=python, platform=platform)


def main(argv: Sequence[str] | None = None) -> int:
    from spotlake.artifacts import artifacts_root

    parser = argparse.ArgumentParser(prog="python -m spotlake.job_dependencies", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="build the jobs' jars and Python archive and publish them")
    pub.add_argument("--to", default=None, help="artifacts root (default: $SPOTLAKE_ARTIFACTS or .stack/artifacts)")
    pub.add_argument("--python", default=DEFAULT_PYTHON, help=f"the cluster's CPython version (default {DEFAULT_PYTHON})")
    pub.add_argument("--platform", default=DEFAULT_PLATFORM, help=f"wheel platform tag (default {DEFAULT_PLATFORM})")
    show = sub.add_parser("show", help="print the manifest published under the artifacts root")
    show.add_argument("--to", default=None)
    args = parser.parse_args(argv)
    root = args.to or artifacts_root()
    s3 = None
    if root.startswith(("s3://", "s3a://")):
        import boto3

        s3 = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION"))
    try:
        if args.command == "show":
            print(load(root, s3).to_json(), end="")
            return 0
        manifest = build_and_publish(root, s3=s3, python=args.python, platform=args.platform)
    except SpotlakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"published {len(manifest.jars)} jars and {Path(manifest.python_archive).name} "
        f"(CPython {manifest.python}, {manifest.platform}) under {root}/deps; manifest {root}/{MANIFEST}"
    )
    print(f"EMR bootstrap action (pools.<name>.emr.bootstrap_actions): {manifest.bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
