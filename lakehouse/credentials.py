"""Credentials generated once per home directory and kept in a 0600 file.

A value supplied through settings (for example `LAKEHOUSE_MINIO_ROOT_PASSWORD`) wins
over the generated one, so platform teams can bring their own secrets.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lakehouse.catalog_tokens import generate_signing_key, public_key
from lakehouse.config import Settings
from lakehouse.errors import ConfigError
from lakehouse.private_files import write_private

CREDENTIALS_FILE = "credentials.json"
# A Secret's key holding the public half of the Nessie signing key (derived by as_keys).
NESSIE_PUBLIC_KEY = "nessie-public-key"
# PostgreSQL roles created at bootstrap, one per consumer of the database.
DATABASE_ROLES = ("nessie", "superset", "lakehouse")
# Trino's `pg` catalog: reads devices, sites, tenants and run records; never tokens
# or receipts, and writes nothing.
READER_ROLE = "trino_reader"
# The audit receiver: may add rows to audit.events, and nothing else.
AUDIT_WRITER_ROLE = "audit_writer"
LOGIN_ROLES = (*DATABASE_ROLES, READER_ROLE, AUDIT_WRITER_ROLE)
# Trino principals of the platform itself, by role (users add more with `lakehouse users`).
TRINO_PRINCIPALS = {
    "lakehouse": "engineer",
    "lakehouse-transform": "transform",
    "lakehouse-ingest": "ingest",
    "lakehouse-maintain": "maintain",
    "superset": "superset",
}
# Kafka (SASL/SCRAM) principals, one per job; what each may do is in lakehouse.stack.kafka_acl.
KAFKA_PRINCIPALS = ("admin", "gateway", "ingest", "simulate")
# MinIO access keys, one per service (policies in lakehouse.stack.minio_access); the
# access key is the name, the secret is generated.
MINIO_KEYS = ("nessie", "trino", "ingest", "reader", "maintain")


def _token() -> str:
    return secrets.token_urlsafe(24)


def _encryption_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Credentials:
    """Secrets the stack's services and clients share."""

    minio_root_user: str
    minio_root_password: str
    postgres_superuser_password: str
    database_passwords: dict[str, str]
    trino_passwords: dict[str, str] = field(default_factory=dict)
    # Trino's internal-communication secret (nodes authenticate each other with it).
    trino_shared_secret: str = ""
    # Tenants' PostgreSQL serving passwords are derived from it (lakehouse.serving.roles).
    serving_secret: str = ""
    # Superset: the key that signs its sessions and encrypts stored passwords, and the
    # password of its `admin` user.
    superset_secret_key: str = ""
    superset_admin_password: str = ""
    kafka_passwords: dict[str, str] = field(default_factory=dict)
    # MinIO's server-side encryption key (256 bits, base64): lose it and the objects
    # it encrypted cannot be read.
    minio_kms_key: str = ""
    minio_keys: dict[str, str] = field(default_factory=dict)
    # Trino's event listener presents it to the audit receiver.
    audit_token: str = ""
    # Signs the bearer tokens every Nessie client presents (lakehouse.catalog_tokens);
    # Nessie holds only its public half.
    nessie_signing_key: str = ""

    @classmethod
    def generate(cls, settings: Settings) -> Credentials:
        return cls(
            minio_root_user=settings.minio.root_user,
            minio_root_password=_token(),
            postgres_superuser_password=_token(),
            database_passwords={role: _token() for role in LOGIN_ROLES},
            trino_passwords={name: _token() for name in TRINO_PRINCIPALS},
            trino_shared_secret=secrets.token_urlsafe(48),
            serving_secret=secrets.token_urlsafe(48),
            superset_secret_key=secrets.token_urlsafe(48),
            superset_admin_password=_token(),
            kafka_passwords={name: _token() for name in KAFKA_PRINCIPALS},
            minio_kms_key=_encryption_key(),
            minio_keys={name: _token() for name in MINIO_KEYS},
            audit_token=secrets.token_urlsafe(32),
            nessie_signing_key=generate_signing_key(),
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
            trino_passwords=dict(self.trino_passwords),
            trino_shared_secret=self.trino_shared_secret,
            serving_secret=self.serving_secret,
            superset_secret_key=self.superset_secret_key,
            superset_admin_password=self.superset_admin_password,
            kafka_passwords=dict(self.kafka_passwords),
            minio_kms_key=self.minio_kms_key,
            minio_keys=dict(self.minio_keys),
            audit_token=self.audit_token,
            nessie_signing_key=self.nessie_signing_key,
        )


# The credentials kept per name (a password per role, a key per service).
_PER_NAME_FIELDS = {
    "database_passwords": LOGIN_ROLES,
    "trino_passwords": tuple(TRINO_PRINCIPALS),
    "kafka_passwords": KAFKA_PRINCIPALS,
    "minio_keys": MINIO_KEYS,
}


def as_keys(credentials: Credentials) -> dict[str, str]:
    """One entry per secret, as a Kubernetes Secret or a directory of files holds them:
    `postgres-superuser-password`, `database-passwords.nessie`, …"""
    keys: dict[str, str] = {}
    for item in fields(Credentials):
        value = getattr(credentials, item.name)
        base = item.name.replace("_", "-")
        if item.name in _PER_NAME_FIELDS:
            keys |= {f"{base}.{name}": value[name] for name in _PER_NAME_FIELDS[item.name]}
        else:
            keys[base] = value
    # Derived, not read back: the one key Nessie's own pod needs.
    keys[NESSIE_PUBLIC_KEY] = public_key(credentials.nessie_signing_key)
    return keys


def from_directory(directory: Path) -> Credentials:
    """The credentials from one file per key (a mounted Secret; see `as_keys`)."""
    values: dict[str, object] = {}
    missing: list[str] = []

    def read(key: str) -> str:
        path = directory / key
        if not path.is_file():
            missing.append(key)
            return ""
        return path.read_text().strip()

    for item in fields(Credentials):
        base = item.name.replace("_", "-")
        if item.name in _PER_NAME_FIELDS:
            values[item.name] = {n: read(f"{base}.{n}") for n in _PER_NAME_FIELDS[item.name]}
        else:
            values[item.name] = read(base)
    if missing:
        raise ConfigError(
            f"{directory} lacks the credentials {', '.join(missing)}",
            fix="give the Secret every key that `lakehouse deploy keys` lists",
        )
    return Credentials(**values)  # type: ignore[arg-type]


def credentials_path(settings: Settings) -> Path:
    return settings.home / CREDENTIALS_FILE


def load_or_create(settings: Settings) -> Credentials:
    """Return the stack's credentials, generating and storing them on first use."""
    if settings.credentials_dir is not None:
        return from_directory(settings.credentials_dir).with_overrides(settings)
    path = credentials_path(settings)
    if path.exists():
        try:
            stored = Credentials(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a valid credentials file: {exc}",
                fix=f"restore it from a backup, or delete it together with {settings.home}",
            ) from exc
        if _complete(stored):  # secrets added by a newer version: generated once
            _rewrite(path, stored)
        return stored.with_overrides(settings)
    created = Credentials.generate(settings).with_overrides(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start so the secrets are never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(created), handle, indent=2)
    return created


def _complete(stored: Credentials) -> bool:
    """Generate the secrets a file from an older version lacks; True if any was."""
    added = False
    for field_name, names in _PER_NAME_FIELDS.items():
        secrets_by_name: dict[str, str] = getattr(stored, field_name)
        for name in names:
            if name not in secrets_by_name:
                secrets_by_name[name] = _token()
                added = True
    if not stored.trino_shared_secret:
        object.__setattr__(stored, "trino_shared_secret", secrets.token_urlsafe(48))
        added = True
    generated: dict[str, Callable[[], str]] = {
        "serving_secret": lambda: secrets.token_urlsafe(48),
        "superset_secret_key": lambda: secrets.token_urlsafe(48),
        "superset_admin_password": _token,
        "minio_kms_key": _encryption_key,
        "audit_token": lambda: secrets.token_urlsafe(32),
        "nessie_signing_key": generate_signing_key,
    }
    for name, make in generated.items():
        if not getattr(stored, name):
            object.__setattr__(stored, name, make())
            added = True
    return added


def _rewrite(path: Path, credentials: Credentials) -> None:
    """Replace the file atomically, keeping its owner and mode 0600."""
    info = path.stat()
    write_private(path, json.dumps(asdict(credentials), indent=2))
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)


def load(settings: Settings) -> Credentials:
    """Return stored credentials; the stack must have been brought up once (or the
    deployment mounts them: LAKEHOUSE_CREDENTIALS_DIR)."""
    path = credentials_path(settings)
    if settings.credentials_dir is None and not path.exists():
        raise ConfigError(
            f"no credentials at {path}: the stack has not been set up in this home",
            fix="run `lakehouse stack up` (or `make up`) first, or set LAKEHOUSE_HOME",
        )
    return load_or_create(settings)
