"""scripts/mwaa_bundle.py: the DAGs folder, requirements file and startup script an Amazon MWAA
environment is given, and the DAGs parse from that folder with only the Airflow set installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from scripts import mwaa_bundle
from tests.support.requirements_files import AIRFLOW_CONSTRAINTS, AIRFLOW_TXT, entries, pins

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = "s3://my-bucket/spotlake/artifacts"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "mwaa"
    assert mwaa_bundle.main([str(out), "--artifacts", ARTIFACTS]) == 0
    return out


def files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_dags_folder_is_the_project_without_the_local_stack(bundle: Path) -> None:
    dags = files(bundle / "dags")
    for folder in ("dags", "spark_jobs", "config", "sql"):
        assert {f"{folder}/{f}" for f in files(ROOT / folder)} <= dags, f"{folder}/ is not whole in the bundle"
    plugins = {f.removeprefix("plugins/") for f in dags if f.startswith("plugins/")}
    assert {
        "spotlake/config.py",
        "spotlake/triggers.py",
        "triggers/livy.py",
        "triggers/fleet.py",
        "hooks/livy.py",
        "operators/extraction.py",
        "sensors/cluster_health.py",
        "dag_factories/extraction.py",
        "spotlake/providers/emr.py",
    } <= plugins
    assert not [f for f in dags if "spotlake_dev" in f or "localstack" in f or "clickgen" in f]
    assert ".airflowignore" not in plugins
    assert plugins == {f.as_posix() for f in mwaa_bundle.deployed_plugin_files()}
    assert (bundle / "dags" / "airflow-constraints.txt").read_text() == AIRFLOW_CONSTRAINTS.read_text()
    assert files(bundle) == {f"dags/{f}" for f in dags} | {"requirements.txt", "startup.sh", "plugins.zip"}


def test_the_requirements_file_is_the_airflow_set_under_its_constraints(bundle: Path) -> None:
    lines = (bundle / "requirements.txt").read_text().splitlines()
    assert lines[0] == '--constraint "/usr/local/airflow/dags/airflow-constraints.txt"'
    assert lines[1:] == entries(AIRFLOW_TXT)
    assert not any(line.lower().startswith("apache-airflow==") for line in lines), "MWAA's image provides Airflow"


def test_only_dags_holds_dag_files(bundle: Path) -> None:
    from airflow.utils.file import list_py_file_paths

    found = {Path(p).relative_to(bundle / "dags").as_posix() for p in list_py_file_paths(bundle / "dags", safe_mode=False)}
    assert found == {f"dags/{f}" for f in files(ROOT / "dags") if f.endswith(".py")}


@pytest.mark.tools
def test_the_startup_script_sets_the_path_and_the_provider(bundle: Path) -> None:
    script = bundle / "startup.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    show = f'. "{script}" && printf "%s\\n" "$PYTHONPATH" "$SPOTLAKE_PROVIDER" "$SPOTLAKE_ARTIFACTS"'
    for before, expected in [(None, ""), ("/opt/extra", ":/opt/extra")]:
        env = {"PATH": os.environ["PATH"], **({"PYTHONPATH": before} if before else {})}
        out = subprocess.run(["sh", "-c", show], env=env, capture_output=True, text=True, check=True).stdout.split()
        assert out == [f"/usr/local/airflow/dags/plugins:/usr/local/airflow/dags{expected}", "emr", ARTIFACTS]


def test_the_bundle_refuses_a_used_folder_and_a_local_artifacts_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    assert mwaa_bundle.main([str(tmp_path / "used"), "--artifacts", ARTIFACTS]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert mwaa_bundle.main([str(tmp_path / "new"), "--artifacts", ".stack/artifacts"]) == 2
    assert "must be an s3://bucket/prefix URI" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# Runs in a fresh interpreter with the bundle's paths as MWAA sets them, every module of the
# development set that the Airflow set does not install made unimportable.
IN_THE_BUNDLE = r"""
import importlib, json, sys
blocked = set(json.loads(sys.argv[2]))

class NotInTheAirflowSet:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements/airflow-constraints.txt)",
                                      name=name)
        return None

sys.meta_path.insert(0, NotInTheAirflowSet())
from pathlib import Path
folder = Path(sys.argv[1])
modules = []
for path in sorted((folder / "plugins").rglob("*.py")):
    rel = path.relative_to(folder / "plugins").with_suffix("")
    modules.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
for name in modules:
    importlib.import_module(name)
from airflow.dag_processing.dagbag import DagBag
from spotlake import artifacts, config, sink_schema
bag = DagBag(dag_folder=str(folder))
print("@@" + json.dumps({
    "modules": modules, "dags": sorted(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "paths": [str(artifacts.JOBS_DIR), str(sink_schema.MIGRATIONS_DIR), str(config.config_path())],
    "functions": config.registered_functions(),
}))
"""


@pytest.mark.tools
def test_the_dags_parse_from_the_bundle_with_only_the_airflow_set(bundle: Path, tmp_path: Path) -> None:
    allowed = set(pins(AIRFLOW_CONSTRAINTS)) | {"pip", "setuptools", "wheel"}
    blocked = sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if module not in sys.stdlib_module_names and not {canonicalize_name(d) for d in dists} & allowed
    )
    assert {"pyspark", "pytest", "moto", "duckdb", "pyiceberg"} <= set(blocked)
    folder = bundle / "dags"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTLAKE_", "AIRFLOW", "AWS_", "PYTHON"))}
    env |= {
        "PYTHONPATH": f"{folder}/plugins:{folder}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "SPOTLAKE_PROVIDER": "emr",
        "SPOTLAKE_ARTIFACTS": ARTIFACTS,
    }
    done = subprocess.run(
        [sys.executable, "-c", IN_THE_BUNDLE, str(folder), json.dumps(blocked)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "@@" in done.stdout, f"the bundle's code does not load:\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.rsplit("@@", 1)[1])
    assert result["errors"] == {}
    assert any(d.startswith("extract_") for d in result["dags"]) and "stream_clicks" in result["dags"]
    assert "operators.extraction" in result["modules"] and "sensors.cluster_health" in result["modules"]
    assert result["paths"] == [
        str(folder / "spark_jobs"),
        str(folder / "sql" / "streaming"),
        str(folder / "config" / "pipelines.yaml"),
    ]
    assert result["functions"] is None, "without pyspark, function names are left to the cluster"


def test_the_plugins_file_holds_the_airflow_plugin_alone(bundle: Path) -> None:
    import zipfile

    with zipfile.ZipFile(bundle / "plugins.zip") as plugins_zip:
        assert plugins_zip.namelist() == ["spotlake_plugin.py"]
        assert plugins_zip.read("spotlake_plugin.py") == (ROOT / "plugins" / "spotlake_plugin.py").read_bytes()
    assert "ui/app.py" in {f.removeprefix("dags/plugins/") for f in files(bundle) if f.startswith("dags/plugins/")}
