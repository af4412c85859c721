"""The servers of the local stack other than the JVM ones (``kafka_server``, ``livy_server``, ``s3_server``).

- MariaDB: the MySQL source (Debian ``mariadb-server``), its own data directory;
- PostgreSQL: the stream sink and Airflow's metadata database (Debian ``postgresql``);
- moto server: S3, DynamoDB, EMR and Secrets Manager;
- Airflow 3: API server, scheduler, DAG processor and triggerer.

Each runs from its own data directory under ``.stack/data`` and binds 127.0.0.1.
Credentials are local-only values from ``stack.env``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from spotlake.errors import StackError
from spotlake.stack import StackLayout, aws_env, aws_region, moto_endpoint, mysql_settings
from spotlake_dev.localstack.process import ServiceSpec, tcp_open
from spotlake_dev.localstack.tls import stack_tls

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
POSTGRES_OWNER = "stack-root"  # in a PostgreSQL home outside the stack: the stack folder it belongs to
POSTGRES_MARK = "postgres-home"  # in the stack's data folder: the PostgreSQL home it created

log = logging.getLogger(__name__)


def _require(binary: str, package: str, candidates: list[Path] | None = None) -> str:
    for candidate in candidates or []:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(binary)
    if found:
        return found
    raise StackError(
        f"{binary} was not found. Fix: install the Debian package `{package}` "
        f"(`apt-get install {package}`; `make up` does this when run as root)."
    )


def _run(step: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise StackError(
            f"{step} failed (exit {result.returncode}): {' '.join(argv)}\n{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


# --------------------------------------------------------------------------- MariaDB


def mariadb_spec(layout: StackLayout) -> ServiceSpec:
    datadir = layout.data_dir / "mariadb"
    socket_path = layout.run_dir / "mariadb.sock"
    port = layout.port("mysql")
    server = _require("mariadbd", "mariadb-server", [Path("/usr/sbin/mariadbd")])
    tls = stack_tls(layout)

    def prepare() -> None:
        if (datadir / "mysql").is_dir():
            return
        datadir.mkdir(parents=True, exist_ok=True)
        install = _require("mariadb-install-db", "mariadb-server")
        _run(
            "mariadb-install-db",
            [
                install,
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
        )

    def ready() -> bool:
        import pymysql

        conn = pymysql.connect(unix_socket=str(socket_path), user="root", connect_timeout=2)
        conn.close()
        return True

    return ServiceSpec(
        name="mariadb",
        argv=[
            server,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={socket_path}",
            f"--pid-file={layout.run_dir / 'mariadbd.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--user=root",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--innodb-log-file-size=64M",
            "--max-connections=100",
            "--performance-schema=OFF",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--default-time-zone=+00:00",
            "--skip-log-bin",
            # TLS for the clients that ask (spotlake_dev.localstack.tls); plain connections stay allowed
            f"--ssl-ca={tls.ca}",
            f"--ssl-cert={tls.cert}",
            f"--ssl-key={tls.key}",
        ],
        ports=[port],
        ready=ready,
        prepare=prepare,
        ready_timeout=60,
    )


def bootstrap_mariadb(layout: StackLayout) -> None:
    """Create the source database and the application user (idempotent)."""
    import pymysql

    cfg = mysql_settings(layout)
    conn = pymysql.connect(unix_socket=str(layout.run_dir / "mariadb.sock"), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg['database']}`")
            for host in ("127.0.0.1", "localhost"):
                cur.execute(
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                    (cfg["user"], host, cfg["password"]),
                )
                cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (cfg["user"], host, cfg["password"]))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s", (cfg["user"], host))
    finally:
        conn.close()


# --------------------------------------------------------------------------- PostgreSQL


def postgres_settings(layout: StackLayout) -> dict[str, str]:
    return {
        "host": "127.0.0.1",
        "port": str(layout.port("postgres")),
        "user": layout.setting("SPOTLAKE_POSTGRES_USER", "spotlake"),
        "password": layout.setting("SPOTLAKE_POSTGRES_PASSWORD", "spotlake-local"),
        "database": layout.setting("SPOTLAKE_POSTGRES_DATABASE", "spotlake"),
        # the lake's Iceberg catalog (JdbcCatalog creates its tables there on first use)
        "catalog_database": layout.setting("SPOTLAKE_CATALOG_DATABASE", "lake_catalog"),
        "superuser_password": layout.setting("SPOTLAKE_POSTGRES_SUPERUSER_PASSWORD", "postgres-local"),
    }


def _postgres_bin(name: str) -> str:
    return _require(name, "postgresql", [d / name for d in POSTGRES_BIN_DIRS])


def postgres_home(layout: StackLayout) -> Path:
    """Where PostgreSQL's data and socket directories live.

    PostgreSQL will not run as root, so as root it runs as the ``postgres`` user, which must
    be able to reach its data directory: the stack's folder may sit under a directory only
    root can enter (e.g. a temporary folder), so as root the data goes under the Debian
    package's own /var/lib/postgresql, one folder per stack.
    """
    if os.geteuid() != 0:
        return layout.data_dir
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:12]
    return Path(layout.setting("SPOTLAKE_POSTGRES_HOME", f"/var/lib/postgresql/spotlake-{digest}"))


def claim_postgres_home(layout: StackLayout, home: Path) -> None:
    """Make ``home`` this stack's own PostgreSQL home before PostgreSQL starts.

    A home outside the stack folder (as root) outlives the folder: deleting ``.stack`` (or a
    folder under /tmp) to start afresh would otherwise bring back the old Airflow database and a
    lake catalog whose files went with the folder. So the stack folder records the home it
    created (``data/postgres-home``) and the home records its stack folder (``stack-root``). A home
    with data that this stack folder never created, in a stack without lake files yet, belongs to
    a deleted folder at the same path: its data is removed. Homes of stack folders that no longer
    exist are removed too (they would only fill the disk).
    """
    mark = layout.data_dir / POSTGRES_MARK
    datadir = home / "postgres"
    if home != layout.data_dir:
        if not mark.exists() and (datadir / "PG_VERSION").exists() and not (layout.data_dir / "s3").exists():
            log.warning(
                "removing PostgreSQL data %s left by an earlier stack at %s (its folder was deleted)", datadir, layout.root
            )
            shutil.rmtree(datadir)
        (home / POSTGRES_OWNER).write_text(str(layout.root))
        sweep_postgres_homes(home.parent, keep=home)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    mark.write_text(str(home))


def sweep_postgres_homes(parent: Path, keep: Path) -> list[Path]:
    """Remove the spotlake PostgreSQL homes under ``parent`` whose stack folder is gone (and whose
    server is not running); homes that do not name their stack folder are left alone."""
    removed = []
    for home in sorted(parent.glob("spotlake-*")):
        owner = home / POSTGRES_OWNER
        if home == keep or not owner.exists():
            continue
        stack_root = Path(owner.read_text().strip())
        mark = stack_root / "data" / POSTGRES_MARK
        if mark.exists() and mark.read_text().strip() == str(home):
            continue
        if (home / "postgres" / "postmaster.pid").exists():
            continue  # a server still runs from it: not ours to judge
        log.info("removing PostgreSQL home %s of the deleted stack folder %s", home, stack_root)
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home)
    return removed


def postgres_socket_dir(layout: StackLayout) -> Path:
    return postgres_home(layout) / "postgres-sock"


def postgres_spec(layout: StackLayout) -> ServiceSpec:
    home = postgres_home(layout)
    datadir = home / "postgres"
    sockdir = postgres_socket_dir(layout)
    port = layout.port("postgres")
    cfg = postgres_settings(layout)
    user = "postgres" if os.geteuid() == 0 else None
    tls_dir = home / "tls"

    def chown(path: Path) -> None:
        if user:
            record = pwd.getpwnam(user)
            os.chown(path, record.pw_uid, record.pw_gid)

    def prepare() -> None:
        home.mkdir(parents=True, exist_ok=True)
        chown(home)
        claim_postgres_home(layout, home)
        sockdir.mkdir(parents=True, exist_ok=True)
        chown(sockdir)
        stack_tls(layout).copy_for(tls_dir, chown)
        if (datadir / "PG_VERSION").exists():
            return
        datadir.mkdir(parents=True, exist_ok=True)
        datadir.chmod(0o700)
        chown(datadir)
        pwfile = home / "postgres-initpw"
        pwfile.write_text(cfg["superuser_password"] + "\n")
        chown(pwfile)
        argv = [
            _postgres_bin("initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        try:
            _run("initdb", argv)
        finally:
            pwfile.unlink(missing_ok=True)

    def ready() -> bool:
        import psycopg2

        conn = psycopg2.connect(host=str(sockdir), port=port, user="postgres", dbname="postgres", connect_timeout=2)
        conn.close()
        return True

    return ServiceSpec(
        name="postgres",
        argv=[
            _postgres_bin("postgres"),
            "-D",
            str(datadir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            f"unix_socket_directories={sockdir}",
            "-c",
            "shared_buffers=64MB",
            "-c",
            "max_connections=100",
            "-c",
            "fsync=on",
            "-c",
            "logging_collector=off",
            # TLS for the clients that ask (spotlake_dev.localstack.tls); plain connections stay allowed
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={tls_dir / 'server.pem'}",
            "-c",
            f"ssl_key_file={tls_dir / 'server-key.pem'}",
        ],
        ports=[port],
        ready=ready,
        prepare=prepare,
        user=user,
        ready_timeout=60,
    )


def bootstrap_postgres(layout: StackLayout) -> None:
    """Create the sink database, Airflow's metadata database, the lake catalog's database and
    their roles (idempotent)."""
    import psycopg2

    cfg = postgres_settings(layout)
    airflow_password = layout.setting("SPOTLAKE_AIRFLOW_DB_PASSWORD", "airflow-local")
    conn = psycopg2.connect(
        host=str(postgres_socket_dir(layout)),
        port=layout.port("postgres"),
        user="postgres",
        dbname="postgres",
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role, password in ((cfg["user"], cfg["password"]), ("airflow", airflow_password)):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(f'{verb} ROLE "{role}" LOGIN PASSWORD %s', (password,))
            for database, owner in (
                (cfg["database"], cfg["user"]),
                ("airflow", "airflow"),
                (cfg["catalog_database"], cfg["user"]),
            ):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if not cur.fetchone():
                    cur.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
    finally:
        conn.close()


# --------------------------------------------------------------------------- moto


def moto_spec(layout: StackLayout) -> ServiceSpec:
    port = layout.port("moto")

    def ready() -> bool:
        with urllib.request.urlopen(f"{moto_endpoint(layout)}/moto-api/", timeout=2) as resp:  # noqa: S310
            return resp.status == 200

    return ServiceSpec(
        name="moto",
        argv=[layout.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        ports=[port],
        ready=ready,
        env={"AWS_DEFAULT_REGION": aws_region(layout)},
        ready_timeout=60,
    )


# --------------------------------------------------------------------------- Airflow


def airflow_home(layout: StackLayout) -> Path:
    return layout.data_dir / "airflow"


def airflow_env(layout: StackLayout) -> dict[str, str]:
    """Configuration of every Airflow process of the local stack, as environment."""
    from spotlake_dev.localstack.connections import airflow_connection_env

    pg = postgres_settings(layout)
    airflow_password = layout.setting("SPOTLAKE_AIRFLOW_DB_PASSWORD", "airflow-local")
    home = airflow_home(layout)
    port = layout.port("airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(layout.project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(layout.project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": layout.setting("SPOTLAKE_AIRFLOW_PARALLELISM", "4"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://airflow:{airflow_password}@127.0.0.1:{pg['port']}/airflow"
        ),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__API_AUTH__JWT_SECRET": layout.setting("SPOTLAKE_AIRFLOW_JWT_SECRET", "spotlake-local-jwt"),
        "AIRFLOW__API__SECRET_KEY": layout.setting("SPOTLAKE_AIRFLOW_JWT_SECRET", "spotlake-local-jwt"),
        "PYTHONPATH": os.pathsep.join([str(layout.project / "plugins"), str(layout.project)]),
        "SPOTLAKE_STACK_DIR": str(layout.root),
        "NO_PROXY": "*",
        **aws_env(layout),
        **airflow_connection_env(layout),
    }
    return env


def airflow_binary(layout: StackLayout) -> str:
    return str(Path(layout.python).parent / "airflow")


def migrate_airflow_db(layout: StackLayout) -> None:
    home = airflow_home(layout)
    home.mkdir(parents=True, exist_ok=True)
    _run(
        "airflow db migrate",
        [airflow_binary(layout), "db", "migrate"],
        env={**os.environ, **airflow_env(layout)},
        timeout=600,
    )


def create_airflow_pools(layout: StackLayout) -> None:
    """One Airflow pool per cluster pool, counting deferred tasks, sized by ``max_batches``."""
    from spotlake import pools

    for pool in pools.load().pools:
        _run(
            f"airflow pools set {pool.airflow_pool}",
            [
                airflow_binary(layout),
                "pools",
                "set",
                pool.airflow_pool,
                str(pool.max_batches),
                f"batches on cluster pool {pool.name}",
                "--include-deferred",
            ],
            env={**os.environ, **airflow_env(layout)},
            timeout=300,
        )


def airflow_specs(layout: StackLayout) -> list[ServiceSpec]:
    env = airflow_env(layout)
    port = layout.port("airflow")
    airflow = airflow_binary(layout)

    def api_ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as resp:
            return resp.status == 200

    def alive_for(seconds: float) -> Callable[[], bool]:
        """Ready once the process has stayed up for ``seconds`` (it has no probe of its own)."""
        started: list[float] = []

        def check() -> bool:
            if not started:
                started.append(time.monotonic())
            return time.monotonic() - started[0] >= seconds

        return check

    return [
        ServiceSpec(
            name="airflow-api-server",
            argv=[airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            ports=[port],
            ready=api_ready,
            env=env,
            ready_timeout=180,
        ),
        ServiceSpec(
            name="airflow-scheduler",
            argv=[airflow, "scheduler", "--skip-serve-logs"],
            ports=[],
            ready=alive_for(3),
            env=env,
        ),
        ServiceSpec(
            name="airflow-dag-processor",
            argv=[airflow, "dag-processor"],
            ports=[],
            ready=alive_for(3),
            env=env,
        ),
        ServiceSpec(
            name="airflow-triggerer",
            argv=[airflow, "triggerer", "--skip-serve-logs"],
            ports=[],
            ready=alive_for(3),
            env=env,
        ),
    ]


def airflow_ready(layout: StackLayout) -> bool:
    return tcp_open(layout.port("airflow"))
