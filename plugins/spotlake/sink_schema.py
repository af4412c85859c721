"""The click-stream sink's PostgreSQL schema, owned by the project: numbered SQL
migrations under ``sql/streaming/`` applied in order, idempotently.

Each file ``NNNN_<name>.sql`` is one migration. :func:`apply` runs, in ONE
transaction holding a per-schema advisory lock (so two supervisors cannot race):
``CREATE SCHEMA IF NOT EXISTS``, ``SET LOCAL search_path`` to it, the
``schema_migrations`` table, then every migration not recorded there, each
recorded with the SHA-256 of its text. A recorded migration whose file changed
since is an error: migrations are never edited, a new one is added.

Works with any PostgreSQL DB-API connection (psycopg 3 from Airflow's
``PostgresHook``, or psycopg2); files are executed without parameters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotlake.errors import ConfigError, SpotlakeError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql" / "streaming"
MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(SpotlakeError):
    """The sink's schema cannot be brought up to date; the message says why and the fix."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def quote_schema(schema: str) -> str:
    """The schema name double-quoted, after checking it is a plain lower-case identifier."""
    if not SCHEMA_NAME.match(schema or ""):
        raise ConfigError(
            f"sink schema {schema!r} is not a lower-case PostgreSQL identifier (letters, digits and _, "
            "not starting with a digit, at most 63 characters); fix sink.schema in config/streaming.yaml"
        )
    return f'"{schema}"'


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, in version order; numbering must be unique."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_<lower_case_name>.sql; rename it")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version:04d} is also used by {found[version].path.name}; renumber one")
        found[version] = Migration(version, match.group(2), path)
    if not found:
        raise MigrationError(f"{directory}: no migration files (NNNN_<name>.sql) found")
    return [found[v] for v in sorted(found)]


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for the schema's migrations."""
    digest = hashlib.sha256(f"spotlake-sink-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def apply(connection: Any, schema: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring ``schema`` up to date; return the names of the migrations applied now ([] if none).

    Commits on success; rolls back everything on any failure.
    """
    quoted = quote_schema(schema)
    pending = migrations(directory)
    applied_now: list[str] = []
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        cursor.execute(f"SET LOCAL search_path TO {quoted}")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor.execute("SELECT version, name, checksum FROM schema_migrations")
        recorded = {int(row[0]): (row[1], row[2]) for row in cursor.fetchall()}
        for migration in pending:
            if migration.version in recorded:
                name, checksum = recorded[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"schema {schema}: migration {migration.path.name} was applied as {name} with "
                        "different text; applied migrations are never edited — restore the file and add "
                        "the change as a new numbered migration"
                    )
                continue
            cursor.execute(migration.sql)
            cursor.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.path.name)
        connection.commit()
    except Exception:
        connection.rollback()
        raise
    finally:
        cursor.close()
    return applied_now


def applied_versions(connection: Any, schema: str) -> list[int]:
    """Versions recorded in ``schema``'s ``schema_migrations`` ([] if it has none yet)."""
    quoted = quote_schema(schema)
    cursor = connection.cursor()
    try:
        cursor.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_migrations'",
            (schema,),
        )
        if cursor.fetchone() is None:
            return []
        cursor.execute(f"SELECT version FROM {quoted}.schema_migrations ORDER BY version")
        return [int(row[0]) for row in cursor.fetchall()]
    finally:
        cursor.close()
        connection.rollback()
