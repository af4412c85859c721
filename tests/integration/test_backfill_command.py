"""The backfill command of docs/operations.md, as written there, against a real Airflow
metadata database (a SQLite file of its own, so a running `make up` stack is not touched).

No scheduler runs here: the test checks that the documented command is accepted and creates
one backfill run per five-minute window of its period; what a run then does is what the
extraction tests check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from spotlake.stack import PROJECT_ROOT, StackLayout
from spotlake_dev.localstack import services

pytestmark = pytest.mark.integration

DOC = PROJECT_ROOT / "docs" / "operations.md"
AIRFLOW = Path(os.environ.get("VIRTUAL_ENV", PROJECT_ROOT / ".venv")) / "bin" / "airflow"


def documented_backfill() -> list[str]:
    """The `airflow backfill create` command of docs/operations.md, continuations joined."""
    text = DOC.read_text()
    block = re.search(r"```sh\n(\s*airflow backfill create.*?)```", text, re.S)
    assert block, f"no `airflow backfill create` block in {DOC}"
    return shlex.split(block.group(1).replace("\\\n", " "))


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_documented_backfill_creates_one_run_per_window(tmp_path: Path) -> None:
    command = documented_backfill()
    assert command[:3] == ["airflow", "backfill", "create"]
    env = {
        **os.environ,
        **services.airflow_env(StackLayout.default()),
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp_path / "logs"),
        "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}",
    }
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    airflow(env, *command[1:])
    listing = airflow(env, "dags", "list-runs", command[command.index("--dag-id") + 1], "-o", "json")
    # Airflow may print warnings before the JSON document, which is the last line.
    runs = json.loads(next(line for line in reversed(listing.splitlines()) if line.startswith("[")))
    start = datetime.fromisoformat(command[command.index("--from-date") + 1])
    end = datetime.fromisoformat(command[command.index("--to-date") + 1])
    logical = sorted(datetime.fromisoformat(r["logical_date"]) for r in runs if r["run_id"].startswith("backfill__"))
    windows = [start + timedelta(minutes=5 * i) for i in range(int((end - start) / timedelta(minutes=5)))]
    # One run per window of the period (the window that starts at the end date too, if Airflow counts it).
    assert logical[: len(windows)] == windows, logical
    assert len(logical) in (len(windows), len(windows) + 1) and len(set(logical)) == len(logical)
