"""Where the local stack keeps its files, and which ports it uses.

Everything the stack writes lives under one ignored folder, ``.stack/`` at the
project root (override with ``SPOTLAKE_STACK_DIR``):

- ``.stack/run/<service>.pid``: PID of each running server;
- ``.stack/logs/<service>.log``: its output;
- ``.stack/data/<service>/``: its data directory;
- ``.stack/jars/<group>/``: JVM jars resolved by Maven from ``jvm/``.

Ports come from ``stack.env`` and may be overridden by environment variables of
the same names.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def read_stack_env(path: Path | None = None) -> dict[str, str]:
    """Values of ``stack.env``, overridden by the process environment."""
    path = path or PROJECT_ROOT / "stack.env"
    values: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k.startswith("SPOTLAKE_")})
    return values


@dataclass(frozen=True)
class StackLayout:
    root: Path
    project: Path
    settings: dict[str, str]

    @classmethod
    def default(cls) -> StackLayout:
        root = Path(os.environ.get("SPOTLAKE_STACK_DIR", PROJECT_ROOT / ".stack")).resolve()
        return cls(root=root, project=PROJECT_ROOT, settings=read_stack_env())

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def jars_dir(self) -> Path:
        return self.root / "jars"

    def jars(self, group: str) -> Path:
        return self.jars_dir / group

    def port(self, name: str) -> int:
        key = f"SPOTLAKE_{name.upper()}_PORT"
        try:
            return int(self.settings[key])
        except KeyError:
            raise KeyError(f"{key} is not set in stack.env") from None

    def setting(self, key: str, default: str = "") -> str:
        return self.settings.get(key, default)

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def spark_home(self) -> Path:
        import pyspark

        return Path(pyspark.__file__).resolve().parent

    def ensure(self) -> None:
        for path in (self.run_dir, self.log_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
