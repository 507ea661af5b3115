"""`lakehouse users …`: people — Trino principals (analysts, engineers) and business
users of a tenant in Superset."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import typer

from lakehouse.cli.common import err, out, settings_of
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.errors import ConfigError
from lakehouse.names import checked
from lakehouse.trino_access import ROLES, add_user

users_app = typer.Typer(help="Users: who may query what, in Trino and in Superset.")


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (lowercase letters, digits, . _ -).")],
    role: Annotated[
        str | None,
        typer.Option(help=f"A Trino user with one of: {', '.join(ROLES)}. Omit for Superset."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Without --role: a Superset business user of this tenant. With --role "
            "analyst: a Trino analyst who sees this tenant's rows only."
        ),
    ] = None,
) -> None:
    """Create a user (or reset its password) and print the password once."""
    settings = settings_of(ctx)
    if role is None:
        if tenant is None:
            raise ConfigError(
                "say which kind of user",
                fix="--tenant T for a Superset business user, --role R for a Trino user",
            )
        _add_business_user(settings, name, tenant)
        return
    from lakehouse.stack.trino import apply_security

    password = add_user(settings, name, role, tenant)
    credentials = load(settings)
    apply_security(settings, credentials)
    _audit(settings, credentials, name, {"kind": "trino", "role": role, "tenant": tenant})
    err.print(
        f"user {name} ({role}{', tenant ' + tenant if tenant else ''}) can log in to Trino "
        "within 5 seconds; the password is shown only now:"
    )
    out.print(password, markup=False, highlight=False)


def _audit(settings: Settings, credentials: Credentials, name: str, detail: dict[str, Any]) -> None:
    from lakehouse import audit, registry
    from lakehouse.clients import postgres_connection

    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        audit.record(conn, "users", "add", name, detail=detail)


def _add_business_user(settings: Settings, name: str, tenant: str) -> None:
    password, url = create_business_user(settings, name, tenant)
    err.print(
        f"user {name} (tenant {tenant}) can log in to Superset at {url} and sees "
        "that tenant's rows only; the password is shown only now:"
    )
    out.print(password, markup=False, highlight=False)


def create_business_user(settings: Settings, name: str, tenant: str) -> tuple[str, str]:
    """A Superset user whose queries run as the tenant's PostgreSQL role; its new
    password and Superset's address."""
    from lakehouse import registry
    from lakehouse.clients import postgres_connection
    from lakehouse.serving.publish import ServingPublisher
    from lakehouse.stack.manager import Stack
    from lakehouse.stack.superset import Superset, add_business_user

    checked("principal", name)
    credentials = load(settings)
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        registry.ensure_tenant(conn, tenant)
    ServingPublisher(settings, credentials).prepare()  # the tenant's login role
    superset = Stack(settings, err).service("superset")
    assert isinstance(superset, Superset)
    password = secrets.token_urlsafe(18)
    add_business_user(superset, name, tenant, password)
    _audit(settings, credentials, name, {"kind": "superset", "tenant": tenant})
    return password, superset.url
