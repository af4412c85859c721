"""The project's requirement files and how their pins read (tests/unit/test_requirements.py, test_mwaa_bundle.py)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


REQUIREMENTS = ROOT / "requirements"


AIRFLOW_TXT = REQUIREMENTS / "airflow.txt"


AIRFLOW_CONSTRAINTS = REQUIREMENTS / "airflow-constraints.txt"


DEV_TXT = REQUIREMENTS / "dev.txt"


PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9._,-]+\])?==(?P<version>[A-Za-z0-9.+!_-]+)")


def entries(path: Path) -> list[str]:
    return [line for raw in path.read_text().splitlines() if (line := raw.split("#", 1)[0].strip())]


def pins(path: Path) -> dict[str, str]:
    """canonical name -> version of the file's pins (options such as -r are not pins)."""
    found = {}
    for line in entries(path):
        if not line.startswith("-"):
            match = PIN.fullmatch(line)
            assert match, f"{path.relative_to(ROOT)}: {line!r} is not an exact pin (name==version)"
            found[canonicalize_name(match["name"])] = match["version"]
    return found
