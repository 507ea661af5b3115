"""Trino principals, their roles, and the files Trino authenticates and authorises with.

Roles (a principal has one; Trino sees it as a group):

| role | may |
|---|---|
| engineer | everything in `lake`, `pg` (read-only by its PostgreSQL role), run catalogs |
| transform | write silver and up, read bronze and `pg`, create/drop only `transform_*` catalogs |
| ingest | read and write `lake.bronze` only |
| maintain | compact every table of `lake` (table procedures), create or drop nothing |
| analyst | read silver, gold, platinum (coordinates to 0.1°), run records; a tenant's: its rows |
| superset | read like an analyst; may impersonate tenant analysts |

Passwords are stored as bcrypt hashes (`password.db`); Trino re-reads every file within
5 seconds, so `lakehouse users add` needs no restart. Users added by hand live in
`<home>/trino/users.json` (0600) with their hash, never their password.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lakehouse.config import Settings
from lakehouse.credentials import TRINO_PRINCIPALS, Credentials
from lakehouse.errors import ConfigError
from lakehouse.names import checked
from lakehouse.private_files import write_private

ROLES = ("engineer", "transform", "ingest", "maintain", "analyst", "superset")
READ_SCHEMAS = "silver|gold|platinum"
ALL_PRIVILEGES = ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP", "GRANT_SELECT"]
# Analysts see where a site is to about 10 km, never its exact position.
LOCATION_MASKS = [
    {"name": "lat", "mask": "round(lat, 1)"},
    {"name": "lon", "mask": "round(lon, 1)"},
]
# bcrypt as Trino wants it: the $2y$ prefix, cost at least 8.
BCRYPT_COST = 10


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    tenant: str | None
    password_hash: str


def users_file(settings: Settings) -> Path:
    return settings.home / "trino" / "users.json"


def hash_password(password: str) -> str:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    return "$2y$" + hashed[4:]


def _added_users(settings: Settings) -> list[Principal]:
    path = users_file(settings)
    if not path.exists():
        return []
    return [Principal(**row) for row in json.loads(path.read_text())]


def principals(settings: Settings, credentials: Credentials) -> list[Principal]:
    """The platform's own principals, then the users added with `lakehouse users add`."""
    own = [
        Principal(name, role, None, hash_password(credentials.trino_passwords[name]))
        for name, role in TRINO_PRINCIPALS.items()
    ]
    return own + _added_users(settings)


def add_user(settings: Settings, name: str, role: str, tenant: str | None) -> str:
    """Add (or reset) a principal; returns its generated password, shown only once."""
    checked("principal", name)
    if name in TRINO_PRINCIPALS:
        raise ConfigError(f"{name!r} is one of the platform's own principals")
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", fix=f"use one of: {', '.join(ROLES)}")
    if tenant is not None:
        checked("tenant", tenant)
        if role != "analyst":
            raise ConfigError("only analysts are limited to a tenant", fix="use --role analyst")
    password = secrets.token_urlsafe(18)
    users = [u for u in _added_users(settings) if u.name != name]
    users.append(Principal(name, role, tenant, hash_password(password)))
    write_private(users_file(settings), json.dumps([asdict(u) for u in users], indent=1))
    return password


def write_files(etc: Path, everyone: list[Principal]) -> list[Path]:
    """password.db, group.txt and rules.json for Trino; returns the paths written."""
    password_db = etc / "password.db"
    groups = etc / "group.txt"
    rules = etc / "rules.json"
    write_private(password_db, "".join(f"{p.name}:{p.password_hash}\n" for p in everyone))
    members: dict[str, list[str]] = {role: [] for role in ROLES}
    for principal in everyone:
        members[principal.role].append(principal.name)
    write_private(
        groups, "".join(f"{role}:{','.join(names)}\n" for role, names in members.items() if names)
    )
    write_private(rules, json.dumps(access_rules(everyone), indent=1))
    return [password_db, groups, rules]


def access_rules(everyone: list[Principal]) -> dict[str, Any]:
    """Trino file-based access control; the first rule that matches decides."""
    tenants = [p for p in everyone if p.tenant is not None]
    tenant_users = "|".join(p.name for p in tenants) or "(?!)"
    return {
        "catalogs": [
            {"group": "engineer", "catalog": "lake|pg|system|transform_.*", "allow": "all"},
            # "owner" is what CREATE and DROP CATALOG need: only for the run catalogs.
            {"group": "transform", "catalog": "transform_.*", "allow": "owner"},
            {"group": "transform", "catalog": "lake", "allow": "all"},
            {"group": "transform", "catalog": "pg|system", "allow": "read-only"},
            {"group": "ingest|maintain", "catalog": "lake", "allow": "all"},
            {"group": "analyst|superset", "catalog": "lake|pg|system", "allow": "read-only"},
            {"catalog": "system", "allow": "read-only"},
        ],
        "schemas": [
            {"group": "engineer", "owner": True},
            {
                "group": "transform",
                "catalog": "lake|transform_.*",
                "schema": f"(.*_)?({READ_SCHEMAS})",
                "owner": True,
            },
            {"group": "ingest", "catalog": "lake", "schema": "(.*_)?bronze", "owner": True},
            {"owner": False},
        ],
        "tables": [
            {"group": "engineer", "privileges": ALL_PRIVILEGES},
            {
                "group": "transform",
                "catalog": "lake|transform_.*",
                "schema": f"(.*_)?({READ_SCHEMAS})",
                "privileges": ALL_PRIVILEGES,
            },
            {"group": "transform", "privileges": ["SELECT"]},
            {
                "group": "ingest",
                "catalog": "lake",
                "schema": "(.*_)?bronze",
                "privileges": ["SELECT", "INSERT"],
            },
            # Table procedures (optimize) need catalog access only; compaction reads
            # and rewrites rows, and never owns a schema.
            {"group": "maintain", "catalog": "lake", "privileges": ["SELECT", "INSERT", "DELETE"]},
            *(
                {
                    "user": p.name,
                    "catalog": "lake",
                    "schema": READ_SCHEMAS,
                    "privileges": ["SELECT"],
                    "filter": f"tenant = '{p.tenant}'",
                    "columns": LOCATION_MASKS,
                }
                for p in tenants
            ),
            {"user": tenant_users, "privileges": []},
            {
                "group": "analyst",
                "catalog": "lake",
                "schema": READ_SCHEMAS,
                "privileges": ["SELECT"],
                "columns": LOCATION_MASKS,
            },
            {
                "group": "superset",
                "catalog": "lake",
                "schema": READ_SCHEMAS,
                "privileges": ["SELECT"],
            },
            {
                "group": "analyst|superset",
                "catalog": "pg",
                "schema": "transform",
                "privileges": ["SELECT"],
            },
            {"catalog": "system", "privileges": ["SELECT"]},
        ],
        "impersonation": [
            {"original_user": "superset", "new_user": tenant_users, "allow": True},
        ],
        "system_session_properties": [{"allow": True}],
        "catalog_session_properties": [{"allow": True}],
    }
