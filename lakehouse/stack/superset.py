"""Superset, in a virtualenv of its own, with its metadata in PostgreSQL.

Obtained from PyPI into the cache (`superset-<version>/`): Superset pins SQLAlchemy < 2,
pandas < 2.2 and pyarrow < 19, which clash with the platform's own environment. Its CLI
needs `rich` beside it, and Flask-Caching 2.4 breaks app start, hence the extra pins.

Before each start: the serving roles, schema and safety check (a dashboard role that
could see past row-level security stops Superset from starting, naming the role); the
metadata migrations when the version changed; then the admin user, the Business role
and the assets in `superset/assets/` imported (overwriting, so they stay as reviewed).
Configuration is `superset/superset_config.py`; what it needs of this stack (secrets,
addresses) it reads from a 0600 runtime file written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from lakehouse.errors import ServiceStartError, StackError
from lakehouse.private_files import write_private
from lakehouse.serving import roles
from lakehouse.serving.publish import ServingPublisher
from lakehouse.stack.fetch import BESIDE_A_BUILD, count_lines, run_step
from lakehouse.stack.process import base_env
from lakehouse.stack.service import Service
from lakehouse.stack.users import check_traversable, ensure_os_user
from lakehouse.tls import ca_path

# Where the reviewed configuration and assets live (beside the `lakehouse` package).
SUPERSET_DIR = Path(__file__).resolve().parents[2] / "superset"
# 6.1.0 imports cachetools (db_engine_specs.aws_iam) without declaring it.
EXTRA_REQUIREMENTS = ("rich", "flask-caching<2.4", "cachetools")
# Roughly how many distributions a fresh install collects (drives the progress bar).
INSTALL_PACKAGES = 190
COMMAND_TIMEOUT = 900.0


class Superset(Service):
    name = "superset"
    depends_on = ("postgres",)

    @property
    def ports(self) -> list[int]:
        return [self.settings.superset.port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.superset.port}"

    @property
    def start_timeout(self) -> float:
        return 180.0

    # -- obtaining ----------------------------------------------------------------------
    @property
    def venv(self) -> Path:
        return self.settings.cache_dir / f"superset-{self.settings.superset.version}"

    @property
    def requirements(self) -> list[str]:
        return [
            f"apache-superset[postgres,trino]=={self.settings.superset.version}",
            *EXTRA_REQUIREMENTS,
        ]

    def _bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def obtain(self) -> None:
        marker = self.venv / ".installed"
        wanted = "\n".join(self.requirements)
        if marker.exists() and marker.read_text() == wanted:
            return
        base = Path(getattr(sys, "_base_executable", sys.executable))
        build_log = self.settings.cache_dir / "logs" / "superset-install.log"
        build_log.unlink(missing_ok=True)
        if not self._bin("python").exists():
            subprocess.run([str(base), "-m", "venv", str(self.venv)], check=True)
        run_step(
            [str(self._bin("python")), "-m", "pip", "install", "--progress-bar", "off",
             *self.requirements],
            description=f"installing Superset {self.settings.superset.version}",
            log_file=build_log,
            console=self.ctx.console,
            measure=lambda: count_lines(build_log, "Collecting "),
            total=INSTALL_PACKAGES,
            unit="packages",
            niceness=BESIDE_A_BUILD,
        )  # fmt: skip
        marker.write_text(wanted)

    # -- configuring --------------------------------------------------------------------
    @property
    def runtime_file(self) -> Path:
        return self.state_dir / "runtime.json"

    def runtime(self) -> dict[str, object]:
        """What superset_config.py needs of this stack."""
        settings, credentials = self.settings, self.ctx.credentials
        pg_host, pg = settings.server_host("postgres"), settings.postgres.port
        return {
            "secret_key": credentials.superset_secret_key,
            "metadata_uri": (
                f"postgresql+psycopg2://superset:{credentials.database_passwords['superset']}"
                f"@{pg_host}:{pg}/superset"
            ),
            "serving": {
                "host": pg_host,
                "port": pg,
                "database": "lakehouse",
                "schema": settings.serving.schema_name,
                "secret": credentials.serving_secret,
                "anonymous_role": roles.ANONYMOUS_ROLE,
                "all_tenants_role": roles.ALL_TENANTS_ROLE,
                "tenant_prefix": roles.TENANT_PREFIX,
            },
            "trino": {
                "host": settings.server_host("trino"),
                "port": settings.trino.port,
                "user": "superset",
                "password": credentials.trino_passwords["superset"],
                "ca": str(ca_path(settings.home)),
                "secure": settings.security,
            },
            "admin": {
                "username": settings.superset.admin_user,
                "password": credentials.superset_admin_password,
            },
            "assets": str(SUPERSET_DIR / "assets"),
            "data_dir": str(self.state_dir / "data"),
        }

    def env(self) -> dict[str, str]:
        return {
            "SUPERSET_CONFIG_PATH": str(SUPERSET_DIR / "superset_config.py"),
            "LAKEHOUSE_SUPERSET_RUNTIME": str(self.runtime_file),
            "FLASK_APP": "superset.app:create_app()",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def configure(self) -> None:
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        write_private(self.runtime_file, json.dumps(self.runtime(), indent=2))
        user = self.run_as()
        if user is not None:
            owner = ensure_os_user(user)
            check_traversable(self.venv, user)
            check_traversable(SUPERSET_DIR, user)
            for path in (self.state_dir, self.state_dir / "data", self.runtime_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        # Refuses (naming the role) when a dashboard role could see past RLS.
        ServingPublisher(self.settings, self.ctx.credentials).prepare()
        stamp = self.state_dir / "migrated"
        if not stamp.exists() or stamp.read_text() != self.settings.superset.version:
            self.superset("db", "upgrade")
            self.superset("init")
            stamp.write_text(self.settings.superset.version)
        self.manage("init")

    def _run(self, command: list[str], what: str, stdin: str | None = None) -> str:
        try:
            result = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                cwd=self.state_dir,
                env={**base_env(self.state_dir), **self.env()},
                user=self.run_as(),
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(
                f"`{what}` did not finish in {COMMAND_TIMEOUT:.0f} s", service=self.name
            ) from exc
        output = (result.stdout + result.stderr).strip()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as log:
            log.write(f"\n--- {what} (exit {result.returncode}) ---\n{output[-20000:]}\n")
        if result.returncode != 0:
            raise ServiceStartError(
                f"`{what}` failed (exit {result.returncode}): {output.splitlines()[-1:]}",
                service=self.name,
                log_tail=output[-2000:],
            )
        return result.stdout

    def superset(self, *args: str) -> str:
        """Run Superset's own CLI (migrations, init)."""
        return self._run([str(self._bin("superset")), *args], f"superset {' '.join(args)}")

    def manage(self, *args: str, stdin: str | None = None) -> str:
        """Run superset/manage.py (admin, roles, assets, users) inside Superset's app."""
        script = SUPERSET_DIR / "manage.py"
        return self._run(
            [str(self._bin("python")), str(script), *args], f"manage.py {args[0]}", stdin
        )

    def command(self) -> list[str]:
        superset = self.settings.superset
        return [
            str(self._bin("gunicorn")),
            "--bind", f"{self.settings.host}:{superset.port}",
            "--workers", str(superset.workers),
            "--threads", str(superset.threads),
            "--worker-class", "gthread",
            "--timeout", "120",
            "--limit-request-line", "0",
            "--limit-request-field_size", "0",
            "superset.app:create_app()",
        ]  # fmt: skip

    def ready(self) -> bool:
        response = httpx.get(f"{self.url}/health", timeout=3)
        return response.status_code == 200 and response.text.strip() == "OK"


def _configured(service: Superset) -> None:
    if not service.runtime_file.exists():
        raise StackError(
            "Superset has not been configured in this home yet",
            fix="run `lakehouse stack up` (or `make up`) first",
        )


def add_business_user(service: Superset, name: str, tenant: str, password: str) -> None:
    """Create or update a Superset user of one tenant (Business role, tenant role)."""
    _configured(service)
    service.manage("user", name, tenant, stdin=password)


def _last_json(output: str) -> Any:
    """The JSON line manage.py prints last (Superset may log before it)."""
    return json.loads(output.strip().splitlines()[-1])


def superset_users(service: Superset) -> list[dict[str, Any]]:
    """Every Superset user: name, tenant (or None), roles, active."""
    _configured(service)
    users: list[dict[str, Any]] = _last_json(service.manage("users"))
    return users


def change_superset_user(
    service: Superset, action: str, name: str, password: str | None = None
) -> dict[str, Any] | None:
    """Disable, enable, remove or reset (with `password`) a Superset user; what it is
    now, or None when Superset has no such user. Sessions already open end with it."""
    _configured(service)
    result: dict[str, Any] | None = _last_json(service.manage(action, name, stdin=password or ""))
    return result
