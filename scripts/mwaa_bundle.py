"""Build what an Amazon MWAA environment is given: its DAGs folder, requirements file and startup script.

    python scripts/mwaa_bundle.py build/mwaa --artifacts s3://my-bucket/spotlake/artifacts

writes into the new (or empty) folder ``build/mwaa``:

``dags/``
    The environment's DAGs folder (upload its content to the bucket's DAGs path; MWAA syncs it to
    ``/usr/local/airflow/dags`` on every container). It is the project as the code expects it,
    like the repository and the Docker image: ``dags/`` (the DAG files), ``plugins/`` (the
    ``spotlake`` library, ``operators``, ``sensors``; the local-stack modules left out),
    ``spark_jobs/`` (the job code, which the operators zip and publish to ``SPOTLAKE_ARTIFACTS``
    at run time), ``config/`` (pipelines, pools, streams), ``sql/`` (the stream sink's
    migrations), ``airflow-constraints.txt`` and an ``.airflowignore`` that leaves only ``dags/``
    to the DAG processor.
``requirements.txt``
    The environment's requirements file: ``requirements/airflow.txt`` behind a ``--constraint``
    line naming ``airflow-constraints.txt`` in the DAGs folder. It names no apache-airflow: the
    environment's image provides it.
``startup.sh``
    The environment's startup script: ``PYTHONPATH`` (the DAGs folder's ``plugins/`` and the
    folder itself, as ``plugins:.`` locally), ``SPOTLAKE_PROVIDER=emr``, ``SPOTLAKE_ARTIFACTS``.
``plugins.zip``
    The environment's plugins file: ``spotlake_plugin.py`` alone, the Airflow plugin that mounts
    the operations page and registers the tasks' extra links and the cluster pools' priority rule
    (``operators.priority.PoolTaskPriority``). It imports them from the DAGs
    folder's ``plugins/`` (on ``PYTHONPATH`` by the startup script).

Why not the whole of ``plugins/`` in ``plugins.zip``: MWAA unpacks it to
``/usr/local/airflow/plugins``, apart from the DAGs folder, while the code finds ``config/``,
``spark_jobs/`` and ``sql/`` next to ``plugins/`` (two levels above ``plugins/spotlake/*.py``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where MWAA puts the DAGs folder on its containers.
MWAA_DAGS = "/usr/local/airflow/dags"
CONSTRAINTS_NAME = "airflow-constraints.txt"
# The plugin packages Airflow imports. The developer tools (spotlake_dev/: the local stack and its
# cluster provider, the demo, the click generator, the AWS smoke run) are not among them.
PLUGIN_PACKAGES = ("spotlake", "operators", "sensors", "triggers", "hooks", "dag_factories", "ui")
# The one Airflow plugin module (the operations page, the tasks' extra links, the pools' priority rule): in plugins.zip.
PLUGIN_MODULE = "spotlake_plugin.py"
# Project folders copied whole (besides plugins/), and the DAG processor's view: only dags/.
PROJECT_FOLDERS = ("dags", "spark_jobs", "config", "sql")
AIRFLOWIGNORE = """\
# The DAGs folder holds the whole project (scripts/mwaa_bundle.py); DAG files are under dags/ only.
/plugins/
/spark_jobs/
/config/
/sql/
"""


class BundleError(Exception):
    """The bundle cannot be built; the message says why."""


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def deployed_plugin_files(root: Path = ROOT) -> list[Path]:
    """The files of plugins/ that go to Airflow, relative to plugins/."""
    plugins = root / "plugins"
    found = []
    for package in PLUGIN_PACKAGES:
        found.extend(path.relative_to(plugins) for path in _files(plugins / package))
    return found


def requirements_txt(root: Path = ROOT) -> str:
    """requirements/airflow.txt's pins behind the --constraint line MWAA wants."""
    lines = [f'--constraint "{MWAA_DAGS}/{CONSTRAINTS_NAME}"']
    for line in (root / "requirements" / "airflow.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return "\n".join(lines) + "\n"


def startup_sh(artifacts: str, registry_prefix: str | None = None) -> str:
    lines = [
        "#!/bin/sh",
        "# Amazon MWAA startup script of spotlake (scripts/mwaa_bundle.py): runs on every Airflow",
        "# component before Airflow starts. The DAGs folder holds the project; spotlake, operators",
        "# and sensors are imported from its plugins/, spark_jobs from the folder itself.",
        f'export PYTHONPATH="{MWAA_DAGS}/plugins:{MWAA_DAGS}${{PYTHONPATH:+:$PYTHONPATH}}"',
        "export SPOTLAKE_PROVIDER=emr",
        f"export SPOTLAKE_ARTIFACTS={artifacts}",
    ]
    if registry_prefix:
        lines.append(f"export SPOTLAKE_REGISTRY_PREFIX={registry_prefix}")
    return "\n".join(lines) + "\n"


def build(out: Path, artifacts: str, registry_prefix: str | None = None, root: Path = ROOT) -> Path:
    """Write the bundle into ``out`` (new or empty); return ``out``."""
    if not artifacts.startswith("s3://") or len(artifacts) <= len("s3://"):
        raise BundleError(f"--artifacts must be an s3://bucket/prefix URI, not {artifacts!r}")
    if any(c.isspace() or c in "'\"$`\\" for c in artifacts + (registry_prefix or "")):
        raise BundleError("--artifacts and --registry-prefix may not hold spaces, quotes, $, ` or \\")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not an empty folder; choose a new one")
    dags = out / "dags"
    for folder in PROJECT_FOLDERS:
        for path in _files(root / folder):
            _copy(path, dags / path.relative_to(root))
    for relative in deployed_plugin_files(root):
        _copy(root / "plugins" / relative, dags / "plugins" / relative)
    _copy(root / "requirements" / CONSTRAINTS_NAME, dags / CONSTRAINTS_NAME)
    (dags / ".airflowignore").write_text(AIRFLOWIGNORE)
    (out / "requirements.txt").write_text(requirements_txt(root))
    script = out / "startup.sh"
    script.write_text(startup_sh(artifacts, registry_prefix))
    script.chmod(0o755)
    with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as plugins_zip:
        plugins_zip.write(root / "plugins" / PLUGIN_MODULE, PLUGIN_MODULE)
    return out


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/mwaa_bundle.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new or empty folder to write the bundle into")
    parser.add_argument("--artifacts", required=True, help="SPOTLAKE_ARTIFACTS: s3://bucket/prefix of the job code")
    parser.add_argument("--registry-prefix", help="SPOTLAKE_REGISTRY_PREFIX, if not spotlake")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.artifacts, args.registry_prefix)
    except BundleError as exc:
        print(f"mwaa_bundle: {exc}", file=sys.stderr)
        return 2
    print(
        f"{out}/dags/ -> the DAGs folder; {out}/requirements.txt -> requirements file; {out}/startup.sh -> startup "
        f"script; {out}/plugins.zip -> plugins file"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
