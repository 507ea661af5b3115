"""Taking access away (and giving it back) for `lakehouse users`: one person's Trino
principal and Superset account, each change audited with the operator who made it.

Trino re-reads its password, group and rules files every 5 seconds, so a disabled or
removed principal can no longer log in or be impersonated within 5 seconds; its
queries still running are killed at once. Superset loads the user of every session
cookie and API token on each request and treats an inactive or deleted one as logged
out, so sessions already open end with the change.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any, Literal

from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.demo import ANALYST, LOGINS, TENANTS, demo_dir
from lakehouse.errors import ConfigError, LakehouseError
from lakehouse.private_files import write_private
from lakehouse.stack.superset import Superset

log = logging.getLogger(__name__)

Kind = Literal["trino", "superset"]
Action = Literal["disable", "enable", "remove", "reset"]
KINDS: tuple[Kind, ...] = ("trino", "superset")


def audit_change(
    settings: Settings, credentials: Credentials, action: str, name: str, detail: dict[str, Any]
) -> None:
    """One audit.events row: the operator (this OS user), the action and the user."""
    from lakehouse import audit, registry
    from lakehouse.clients import postgres_connection

    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        audit.record(conn, "users", action, name, detail=detail)


def superset_service(settings: Settings) -> Superset:
    from lakehouse.cli.common import err
    from lakehouse.stack.manager import Stack

    service = Stack(settings, err).service("superset")
    if not isinstance(service, Superset):
        raise ConfigError("the stack has no Superset service")
    return service


def kinds_of(settings: Settings, name: str, only: Kind | None) -> list[Kind]:
    """Where `name` exists (limited to `only` if given); refuses a name found nowhere."""
    from lakehouse.stack.superset import superset_users
    from lakehouse.trino_users import find_user

    found: list[Kind] = []
    if only in (None, "trino") and find_user(settings, name) is not None:
        found.append("trino")
    if only in (None, "superset"):
        try:
            if any(u["name"] == name for u in superset_users(superset_service(settings))):
                found.append("superset")
        except LakehouseError as exc:
            if only == "superset":
                raise
            log.info("Superset's users not read: %s", exc)
    if not found:
        where = {"trino": "Trino", "superset": "Superset"}.get(only or "", "Trino or Superset")
        raise ConfigError(f"no user {name!r} in {where}", fix="`lakehouse users list` shows them")
    return found


def change(settings: Settings, kind: Kind, action: Action, name: str) -> str | None:
    """Apply `action` to `name` in `kind`, audit it, and return the new password of a
    reset (None otherwise)."""
    credentials = load(settings)
    if kind == "trino":
        password = _change_trino(settings, credentials, action, name)
    else:
        password = _change_superset(settings, action, name)
    audit_change(settings, credentials, action, name, {"kind": kind})
    return password


def _change_trino(
    settings: Settings, credentials: Credentials, action: Action, name: str
) -> str | None:
    from lakehouse.stack.trino import apply_security
    from lakehouse.trino_users import remove_user, reset_password, set_disabled

    password = None
    if action == "reset":
        password = reset_password(settings, name)
    elif action == "remove":
        remove_user(settings, name)
    else:
        set_disabled(settings, name, disabled=action == "disable")
    apply_security(settings, credentials)
    if action in ("disable", "remove"):
        kill_queries(settings, credentials, name)
    return password


def _change_superset(settings: Settings, action: Action, name: str) -> str | None:
    import secrets

    from lakehouse.stack.superset import change_superset_user

    password = secrets.token_urlsafe(18) if action == "reset" else None
    result = change_superset_user(superset_service(settings), action, name, password)
    if result is None:
        raise ConfigError(f"no Superset user {name!r}", fix="`lakehouse users list` shows them")
    if action == "remove" and not result.get("removed"):
        log.warning("Superset kept %s (records refer to it); it is inactive and has no roles", name)
    return password


def kill_queries(settings: Settings, credentials: Credentials, name: str) -> int:
    """Kill `name`'s queries still running in Trino; how many (0 if Trino is down)."""
    from lakehouse.clients import trino_connection

    try:
        cursor = trino_connection(
            settings, catalog="system", credentials=credentials, request_timeout=30
        ).cursor()
        cursor.execute(
            "select query_id from system.runtime.queries "
            "where \"user\" = ? and state not in ('FINISHED', 'FAILED')",
            [name],
        )
        running = [row[0] for row in cursor.fetchall()]
        for query_id in running:
            cursor.execute(
                "call system.runtime.kill_query(query_id => ?, message => ?)",
                [query_id, "the user's access was withdrawn"],
            )
            cursor.fetchall()
    except Exception as exc:  # Trino down or refusing: the 5 s file refresh still holds
        log.warning("running queries of %s not killed: %s", name, exc)
        return 0
    return len(running)


def create_business_user(settings: Settings, name: str, tenant: str) -> tuple[str, str]:
    """A Superset user whose queries run as the tenant's PostgreSQL role; its new
    password and Superset's address."""
    from lakehouse import registry
    from lakehouse.clients import postgres_connection
    from lakehouse.names import checked
    from lakehouse.serving.publish import ServingPublisher
    from lakehouse.stack.superset import add_business_user

    checked("principal", name)
    credentials = load(settings)
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        registry.ensure_tenant(conn, tenant)
    ServingPublisher(settings, credentials).prepare()  # the tenant's login role
    superset = superset_service(settings)
    password = secrets.token_urlsafe(18)
    add_business_user(superset, name, tenant, password)
    audit_change(settings, credentials, "add", name, {"kind": "superset", "tenant": tenant})
    return password, superset.url


def ensure_logins(settings: Settings) -> dict[str, dict[str, str]]:
    """One Superset login per demo tenant and a Trino analyst, made once and kept 0600
    in the demo directory, for `stack up` to print."""
    path = demo_dir(settings) / LOGINS
    if path.exists():
        stored: dict[str, dict[str, str]] = json.loads(path.read_text())
        return stored
    from lakehouse.stack.trino import apply_security
    from lakehouse.trino_users import add_user

    logins: dict[str, dict[str, str]] = {"superset": {}, "trino": {}}
    for tenant in TENANTS:
        name = f"viewer-{tenant}"
        logins["superset"][name], _ = create_business_user(settings, name, tenant)
    logins["trino"][ANALYST] = add_user(settings, ANALYST, "analyst", None)
    apply_security(settings, load(settings))
    write_private(path, json.dumps(logins, indent=2))
    return logins
