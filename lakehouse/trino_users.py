"""Trino principals: the platform's own, and the people added with `lakehouse users`.

People live in `<home>/trino/users.json` (0600) with their bcrypt hash, never their
password. A disabled person stays there (so `users enable` can bring them back) but is
left out of Trino's password and group files and refused by every access rule; a
removed one is gone. What each role may do is in `lakehouse.trino_access`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lakehouse.config import Settings
from lakehouse.credentials import TRINO_PRINCIPALS, Credentials
from lakehouse.errors import ConfigError
from lakehouse.names import checked, principal_key
from lakehouse.private_files import write_private

ROLES = ("engineer", "transform", "ingest", "maintain", "analyst", "superset")
# bcrypt as Trino wants it: the $2y$ prefix, cost at least 8.
BCRYPT_COST = 10


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    tenant: str | None
    password_hash: str
    disabled: bool = False


def users_file(settings: Settings) -> Path:
    return settings.home / "trino" / "users.json"


def hash_password(password: str) -> str:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    return "$2y$" + hashed[4:]


def added_users(settings: Settings) -> list[Principal]:
    """The people added with `lakehouse users add`, disabled ones included."""
    path = users_file(settings)
    if not path.exists():
        return []
    return [Principal(**row) for row in json.loads(path.read_text())]


def _save(settings: Settings, users: list[Principal]) -> None:
    write_private(users_file(settings), json.dumps([asdict(u) for u in users], indent=1))


def principals(settings: Settings, credentials: Credentials) -> list[Principal]:
    """The platform's own principals, then the users added with `lakehouse users add`."""
    own = [
        Principal(name, role, None, hash_password(credentials.trino_passwords[name]))
        for name, role in TRINO_PRINCIPALS.items()
    ]
    return own + added_users(settings)


def check_new_name(name: str, taken: list[str]) -> None:
    """Refuse a name outside the pattern, or one that reads like a name already taken
    (`ptx.g` beside `ptx-g`); `taken` may hold `name` itself (a re-add)."""
    checked("principal", name)
    if name in TRINO_PRINCIPALS:
        raise ConfigError(f"{name!r} is one of the platform's own principals")
    for other in [*TRINO_PRINCIPALS, *taken]:
        if other != name and principal_key(other) == principal_key(name):
            raise ConfigError(
                f"{name!r} differs from the existing user {other!r} only in its separators",
                fix="choose a name that differs in a letter or digit",
            )


def add_user(settings: Settings, name: str, role: str, tenant: str | None) -> str:
    """Add (or replace) a principal; returns its generated password, shown only once."""
    users = added_users(settings)
    check_new_name(name, [u.name for u in users])
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", fix=f"use one of: {', '.join(ROLES)}")
    if tenant is not None:
        checked("tenant", tenant)
        if role != "analyst":
            raise ConfigError("only analysts are limited to a tenant", fix="use --role analyst")
    password = secrets.token_urlsafe(18)
    users = [u for u in users if u.name != name]
    users.append(Principal(name, role, tenant, hash_password(password)))
    _save(settings, users)
    return password


def find_user(settings: Settings, name: str) -> Principal | None:
    return next((u for u in added_users(settings) if u.name == name), None)


def _update(
    settings: Settings, name: str, change: Callable[[Principal], Principal | None]
) -> Principal:
    """Replace the added user `name` by `change(it)` (None drops it); returns it as it was."""
    if name in TRINO_PRINCIPALS:
        raise ConfigError(
            f"{name!r} is one of the platform's own principals",
            fix="its password is in the stack's credentials, not in the users file",
        )
    users = added_users(settings)
    before = next((u for u in users if u.name == name), None)
    if before is None:
        raise ConfigError(f"no Trino user {name!r}", fix="`lakehouse users list` shows them")
    after = change(before)
    _save(settings, [u for u in (after if u is before else u for u in users) if u is not None])
    return before


def set_disabled(settings: Settings, name: str, disabled: bool) -> Principal:
    """Disable or enable an added user; returns it as it was."""
    return _update(settings, name, lambda user: replace(user, disabled=disabled))


def remove_user(settings: Settings, name: str) -> Principal:
    """Forget an added user; returns it as it was."""
    return _update(settings, name, lambda user: None)


def reset_password(settings: Settings, name: str) -> str:
    """A new password for an added user (shown only once); role, tenant and state stay."""
    password = secrets.token_urlsafe(18)
    hashed = hash_password(password)
    _update(settings, name, lambda user: replace(user, password_hash=hashed))
    return password
