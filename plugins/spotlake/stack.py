"""Where the local stack keeps its files, which ports it uses, and how clients reach it.

The stack itself (servers, the click generator, the demo) is the developer tools' package
``spotlake_dev``; this module is what the core's command-line tools need of it (``--local``)
and what the jar cache (:mod:`spotlake.maven`) and the tools share.

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

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


# --------------------------------------------------------------------------- addresses


def mysql_settings(layout: StackLayout) -> dict[str, str]:
    return {
        "host": "127.0.0.1",
        "port": str(layout.port("mysql")),
        "user": layout.setting("SPOTLAKE_MYSQL_USER", "spotlake"),
        "password": layout.setting("SPOTLAKE_MYSQL_PASSWORD", "spotlake-local"),
        "database": layout.setting("SPOTLAKE_MYSQL_DATABASE", "shop"),
    }


def moto_endpoint(layout: StackLayout) -> str:
    return f"http://127.0.0.1:{layout.port('moto')}"


def s3_endpoint(layout: StackLayout) -> str:
    """The local S3 (S3Proxy, see ``s3_server.s3_spec``): moto serves the other AWS APIs."""
    return f"http://127.0.0.1:{layout.port('s3')}"


def aws_region(layout: StackLayout) -> str:
    return layout.setting("SPOTLAKE_AWS_REGION", "us-east-1")


def aws_connection_extra(layout: StackLayout) -> dict[str, object]:
    """The extra of an Airflow AWS connection to the local stack: S3 on the local S3 server,
    every other service on moto."""
    return {
        "region_name": aws_region(layout),
        "endpoint_url": moto_endpoint(layout),
        "service_config": {"s3": {"endpoint_url": s3_endpoint(layout)}},
    }


def aws_env(layout: StackLayout) -> dict[str, str]:
    """Environment for AWS clients of the local stack (moto's fixed test keys): S3 on the local
    S3 server, every other service on moto. boto3 and the AWS SDK for Java 2 (Iceberg's
    S3FileIO) both read ``AWS_ENDPOINT_URL_S3`` before ``AWS_ENDPOINT_URL``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": aws_region(layout),
        "AWS_REGION": aws_region(layout),
        "AWS_ENDPOINT_URL": moto_endpoint(layout),
        "AWS_ENDPOINT_URL_S3": s3_endpoint(layout),
    }


def kafka_bootstrap(layout: StackLayout) -> str:
    return f"127.0.0.1:{layout.port('kafka')}"


def livy_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"
