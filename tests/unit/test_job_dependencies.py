"""The jobs' dependencies: published by content, named by every batch, never from the cluster."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spark_jobs.common import runtime
from spotlake import artifacts, job_dependencies
from spotlake.job_dependencies import DependenciesMissing, Manifest
from spotlake.stack import PROJECT_ROOT, StackLayout
from spotlake_dev.localstack import livy_server


def fake_files(tmp_path: Path) -> tuple[list[Path], Path]:
    jars = []
    for name in ("mysql-connector-j-9.5.0.jar", "postgresql-42.7.8.jar"):
        path = tmp_path / "jars" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 10)
        jars.append(path)
    archive = tmp_path / "pydeps-cp311-manylinux2014_x86_64-0123.tar.gz"
    archive.write_bytes(b"archive")
    return jars, archive


def test_publish_to_a_folder_is_content_addressed_and_the_batch_names_it(tmp_path: Path) -> None:
    jars, archive = fake_files(tmp_path)
    root = tmp_path / "artifacts"
    manifest = job_dependencies.publish(str(root), jars, archive)
    assert len(manifest.jars) == 2
    for uri in [*manifest.jars, manifest.python_archive]:
        assert re.search(r"/deps/[0-9a-f]{16}/[^/]+$", uri), uri
        assert Path(uri).exists()
    assert manifest.spark_conf() == {"spark.archives": f"{manifest.python_archive}#pydeps"}
    assert job_dependencies.load(str(root)) == manifest

    published = artifacts.publish("extraction", root=str(root))
    request = published.request("p#w", "small", name="x", conf={"spark.archives": "other", "spark.x": "1"})
    body = request.body()
    assert body["jars"] == manifest.jars
    assert body["conf"] == {
        "spark.x": "1",
        "spark.archives": f"{manifest.python_archive}#pydeps",
        "spark.yarn.maxAppAttempts": "1",
    }  # spotlake re-submits; YARN must not rerun
    assert body["py_files"][0].endswith("/spark_jobs.zip")

    # A changed jar lands beside the old one (a running batch keeps its file); the manifest moves.
    jars[0].write_bytes(b"newer")
    again = job_dependencies.publish(str(root), jars, archive)
    assert again.jars[0] != manifest.jars[0] and Path(manifest.jars[0]).exists()
    assert job_dependencies.load(str(root)) == again


def test_no_published_dependencies_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DependenciesMissing, match=r"python -m spotlake.job_dependencies publish --to .*"):
        artifacts.publish("extraction", root=str(tmp_path))
    (tmp_path / job_dependencies.MANIFEST).write_text("{}")
    with pytest.raises(DependenciesMissing, match="not a job-dependencies manifest"):
        job_dependencies.load(str(tmp_path))


@mock_aws
def test_publish_to_s3_uploads_each_file_once(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="deploy")
    jars, archive = fake_files(tmp_path)
    with pytest.raises(DependenciesMissing):
        job_dependencies.load("s3://deploy/spotlake", s3)
    manifest = job_dependencies.publish("s3://deploy/spotlake", jars, archive, s3=s3)
    assert all(uri.startswith("s3://deploy/spotlake/deps/") for uri in manifest.jars)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="deploy")["Contents"])
    assert len(keys) == 6 and "spotlake/job-dependencies.json" in keys and "spotlake/bootstrap/install-python.sh" in keys
    assert "spotlake/bootstrap/install-db-ca.sh" in keys
    assert job_dependencies.load("s3://deploy/spotlake", s3) == manifest
    published = artifacts.publish("extraction", s3=s3, root="s3://deploy/spotlake")
    assert published.jars == manifest.jars and published.entry.startswith("s3://deploy/spotlake/")


def test_the_python_archive_is_deterministic(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("X = 1\n")
    first = job_dependencies._deterministic_tar(folder)
    (folder / "pkg" / "__init__.py").touch()
    assert job_dependencies._deterministic_tar(folder) == first
    out = tmp_path / "out.tar.gz"
    out.write_bytes(first)
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["pkg", "pkg/__init__.py"]
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_the_job_requirements_are_exact_and_match_the_project_pins() -> None:
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (PROJECT_ROOT / "constraints.txt").read_text(), re.M))
    lines = [ln.strip() for ln in job_dependencies.REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines
    for line in lines:
        name, _, version = line.partition("==")
        assert version, f"{line}: pin an exact version (the archive is built with --no-deps)"
        assert pins.get(name) == version, f"{name}: {version} here, {pins.get(name)} in constraints.txt"


def test_the_archive_name_changes_with_its_inputs() -> None:
    a = job_dependencies.python_archive_name("3.11", "manylinux2014_x86_64")
    assert a.startswith("pydeps-cp311-manylinux2014_x86_64-")
    assert job_dependencies.python_archive_name("3.11", "manylinux2014_aarch64") != a
    assert job_dependencies.python_archive_name("3.12", "manylinux2014_x86_64") != a


# ------------------------------------------------------------ on the cluster
def test_use_job_packages_puts_the_unpacked_archive_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pydeps").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert runtime.use_job_packages() == str(tmp_path / "pydeps")
    assert sys.path[0] == str(tmp_path / "pydeps")


def test_no_archive_and_no_packages_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(runtime.MissingPackagesError, match="spotlake.job_dependencies publish"):
        runtime.use_job_packages(required=("no_such_module_here",))


@pytest.mark.tools
def test_the_entry_scripts_import_without_the_jobs_packages(tmp_path: Path) -> None:
    """A cluster's bare Python loads each entry script before the archive is on the path: they may
    import boto3 and psycopg2 only once use_job_packages ran."""
    spark_home = StackLayout.default().spark_home
    zips = [str(p) for p in sorted((spark_home / "python" / "lib").glob("*.zip"))]
    blocker = tmp_path / "block"
    blocker.mkdir()
    for name in ("boto3", "botocore", "psycopg2"):
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not on a bare cluster')\n")
    for entry in ("extraction.main", "maintenance.main", "clickstream.main"):
        done = subprocess.run(
            [sys.executable, "-S", "-c", f"import spark_jobs.{entry}"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": ":".join([str(blocker), str(PROJECT_ROOT), *zips])},
        )
        assert done.returncode == 0, f"{entry}: {done.stderr[-800:]}"


# ---------------------------------------------------------------- local stack
@pytest.mark.tools
def test_the_local_clusters_spark_has_none_of_the_jobs_dependencies(tmp_path: Path) -> None:
    """The local Livy's Spark has only what EMR has: s3a on the class path, no spark.jars, no JDBC
    or Kafka jar, and a Python without packages."""
    layout = StackLayout(root=tmp_path / ".stack", project=PROJECT_ROOT, settings=StackLayout.default().settings)
    defaults = livy_server.livy_spark_defaults(layout, "c1", "local[2]")
    assert "spark.jars" not in defaults and "spark.jars.packages" not in defaults
    spark_pom = (PROJECT_ROOT / "jvm" / "spark" / "pom.xml").read_text()
    artifacts_ = set(re.findall(r"<artifactId>([^<]+)</artifactId>", spark_pom)) - {
        "spotlake-jars-spark",
        "*",
        "maven-dependency-plugin",
    }
    assert artifacts_ == {"hadoop-aws", "aws-java-sdk-bundle"}
    jobs_pom = (PROJECT_ROOT / "jvm" / "jobs" / "pom.xml").read_text()
    for needed in ("mysql-connector-j", "postgresql", "spark-sql-kafka-0-10_2.12", "iceberg-spark-runtime-3.5_2.12"):
        assert f"<artifactId>{needed}</artifactId>" in jobs_pom
    bundled = {p.name for p in (layout.spark_home / "jars").glob("*.jar")}
    assert not [n for n in bundled if re.match(r"(mysql|postgresql|spark-sql-kafka|kafka-clients|iceberg)", n)]
    python = defaults["spark.pyspark.python"]
    assert python == defaults["spark.pyspark.driver.python"] != sys.executable
    for module in ("boto3", "psycopg2", "pymysql", "yaml"):
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, f"the local clusters' Python has {module} of its own"


def test_manifest_round_trip() -> None:
    manifest = Manifest(jars=["s3://b/deps/1/a.jar"], python_archive="s3://b/deps/2/p.tar.gz", files={"a.jar": "x"})
    assert Manifest.from_json(manifest.to_json(), "here") == manifest
    assert json.loads(manifest.to_json())["python"] == "3.11"


def test_the_publish_command_builds_and_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m spotlake.job_dependencies publish --to <root>` and `show`, with the Maven and pip
    steps stood in by files (the integration tier runs the real ones through build_and_publish)."""
    jars, archive = fake_files(tmp_path)

    def build(root: str, s3: object = None, python: str = "3.11", platform: str = "x") -> Manifest:
        return job_dependencies.publish(root, jars, archive, s3=s3, python=python, platform=platform)

    monkeypatch.setattr(job_dependencies, "build_and_publish", build)
    root = tmp_path / "artifacts"
    assert job_dependencies.main(["publish", "--to", str(root), "--platform", "manylinux2014_aarch64"]) == 0
    out = capsys.readouterr().out
    assert "published 2 jars" in out and f"{root}/bootstrap/install-python.sh" in out
    assert job_dependencies.main(["show", "--to", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["platform"] == "manylinux2014_aarch64"
    assert job_dependencies.main(["show", "--to", str(tmp_path / "none")]) == 1
    assert "no job dependencies published" in capsys.readouterr().err


def test_the_archive_keeps_the_model_of_every_service_the_jobs_call() -> None:
    """The archive drops botocore's other service models: a job calling a new service needs it listed."""
    called = set()
    for path in (PROJECT_ROOT / "spark_jobs").rglob("*.py"):
        called |= set(re.findall(r'boto3\.(?:client|resource)\(\s*"([a-z0-9-]+)"', path.read_text()))
    assert called and called <= set(job_dependencies.AWS_SERVICES), called - set(job_dependencies.AWS_SERVICES)


def test_pruning_keeps_the_listed_models_and_the_shared_files(tmp_path: Path) -> None:
    data = tmp_path / "botocore" / "data"
    for service in ("dynamodb", "ec2", "s3"):
        (data / service).mkdir(parents=True)
    (data / "endpoints.json").write_text("{}")
    job_dependencies._keep_only_service_models(tmp_path)
    assert sorted(p.name for p in data.iterdir()) == ["dynamodb", "endpoints.json", "s3"]
