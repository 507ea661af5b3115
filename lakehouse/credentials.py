"""Credentials generated once per home directory and kept in a 0600 file.

A value supplied through settings (for example `LAKEHOUSE_MINIO_ROOT_PASSWORD`) wins
over the generated one, so platform teams can bring their own secrets.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from lakehouse.config import Settings
from lakehouse.errors import ConfigError

CREDENTIALS_FILE = "credentials.json"
# PostgreSQL roles created at bootstrap, one per consumer of the database.
DATABASE_ROLES = ("nessie", "superset", "lakehouse")


def _token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Credentials:
    """Secrets the stack's services and clients share."""

    minio_root_user: str
    minio_root_password: str
    postgres_superuser_password: str
    database_passwords: dict[str, str]

    @classmethod
    def generate(cls, settings: Settings) -> Credentials:
        return cls(
            minio_root_user=settings.minio.root_user,
            minio_root_password=_token(),
            postgres_superuser_password=_token(),
            database_passwords={role: _token() for role in DATABASE_ROLES},
        )

    def with_overrides(self, settings: Settings) -> Credentials:
        minio_password = settings.minio.root_password
        pg_password = settings.postgres.superuser_password
        return Credentials(
            minio_root_user=settings.minio.root_user,
            minio_root_password=(
                minio_password.get_secret_value() if minio_password else self.minio_root_password
            ),
            postgres_superuser_password=(
                pg_password.get_secret_value() if pg_password else self.postgres_superuser_password
            ),
            database_passwords=dict(self.database_passwords),
        )


def credentials_path(settings: Settings) -> Path:
    return settings.home / CREDENTIALS_FILE


def load_or_create(settings: Settings) -> Credentials:
    """Return the stack's credentials, generating and storing them on first use."""
    path = credentials_path(settings)
    if path.exists():
        try:
            stored = Credentials(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a valid credentials file: {exc}",
                fix=f"restore it from a backup, or delete it together with {settings.home}",
            ) from exc
        return stored.with_overrides(settings)
    created = Credentials.generate(settings).with_overrides(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start so the secrets are never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(created), handle, indent=2)
    return created


def load(settings: Settings) -> Credentials:
    """Return stored credentials; the stack must have been brought up once."""
    path = credentials_path(settings)
    if not path.exists():
        raise ConfigError(
            f"no credentials at {path}: the stack has not been set up in this home",
            fix="run `lakehouse stack up` (or `make up`) first, or set LAKEHOUSE_HOME",
        )
    return load_or_create(settings)
