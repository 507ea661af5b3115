"""`lakehouse users …`: people — Trino principals (analysts, engineers) and business
users of a tenant in Superset — added, listed, disabled, enabled, removed, reset."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from lakehouse.cli.common import err, out, settings_of
from lakehouse.cli.user_access import (
    KINDS,
    Action,
    Kind,
    audit_change,
    change,
    create_business_user,
    kinds_of,
    superset_service,
)
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.errors import ConfigError, LakehouseError
from lakehouse.trino_users import ROLES, add_user

users_app = typer.Typer(
    help="Users: who may query what, in Trino and in Superset. Changes take effect in "
    "Trino within 5 seconds and in Superset at once (open sessions included); each is "
    "written to the audit log with the operator who made it."
)

NAME_HELP = (
    "User name: lowercase letters and digits, single . _ - between them; one that "
    "differs from an existing user only in those separators is refused."
)
KindOption = Annotated[
    str | None,
    typer.Option("--kind", help="Only the Trino principal or only the Superset user."),
]


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
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
    """Create a user (or replace it, enabled, with a new password) and print the password once."""
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
    audit_change(
        settings, credentials, "add", name, {"kind": "trino", "role": role, "tenant": tenant}
    )
    err.print(
        f"user {name} ({role}{', tenant ' + tenant if tenant else ''}) can log in to Trino "
        "within 5 seconds; the password is shown only now:"
    )
    out.print(password, markup=False, highlight=False)


@users_app.command("list")
def users_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Every Trino principal and Superset user, with role, tenant and state."""
    from lakehouse.stack.superset import superset_users
    from lakehouse.trino_users import principals

    settings = settings_of(ctx)
    rows: list[dict[str, Any]] = [
        {"name": p.name, "kind": "trino", "role": p.role, "tenant": p.tenant,
         "state": "disabled" if p.disabled else "active"}
        for p in principals(settings, load(settings))
    ]  # fmt: skip
    try:
        rows += [
            {"name": u["name"], "kind": "superset", "role": ",".join(u["roles"]),
             "tenant": u["tenant"], "state": "active" if u["active"] else "disabled"}
            for u in superset_users(superset_service(settings))
        ]  # fmt: skip
    except LakehouseError as exc:
        err.print(f"Superset's users are not listed: {exc.message}", markup=False)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "role", "tenant", "state")
    for row in rows:
        table.add_row(row["name"], row["kind"], row["role"], row["tenant"] or "", row["state"])
    out.print(table)


def _act(ctx: typer.Context, action: Action, name: str, kind: str | None) -> None:
    settings = settings_of(ctx)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}", fix="use --kind trino or --kind superset")
    only: Kind | None = "trino" if kind == "trino" else "superset" if kind else None
    found = kinds_of(settings, name, only)
    if action == "reset" and len(found) > 1:
        raise ConfigError(
            f"{name!r} is both a Trino and a Superset user",
            fix="say which password to reset: --kind trino or --kind superset",
        )
    for where in found:
        password = change(settings, where, action, name)
        when = "within 5 seconds" if where == "trino" else "now, open sessions included"
        done = {"disable": "disabled", "enable": "enabled", "remove": "removed"}
        if password is None:
            err.print(f"{where} user {name} {done[action]}; effective {when}")
        else:
            err.print(f"{where} user {name} has a new password, effective {when}; shown only now:")
            out.print(password, markup=False, highlight=False)


@users_app.command("disable")
def users_disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user to lock out.")],
    kind: KindOption = None,
) -> None:
    """Lock a user out: no login, no impersonation by Superset, running queries killed,
    open Superset sessions ended. `users enable` undoes it."""
    _act(ctx, "disable", name, kind)


@users_app.command("enable")
def users_enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A disabled user.")],
    kind: KindOption = None,
) -> None:
    """Let a disabled user log in again, with the password it had."""
    _act(ctx, "enable", name, kind)


@users_app.command("remove")
def users_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user to delete.")],
    kind: KindOption = None,
) -> None:
    """Delete a user (what `disable` does, and the account is gone)."""
    _act(ctx, "remove", name, kind)


@users_app.command("reset")
def users_reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user whose password to replace.")],
    kind: KindOption = None,
) -> None:
    """Replace a user's password with a new one, printed once; the old one stops working."""
    _act(ctx, "reset", name, kind)


def _add_business_user(settings: Settings, name: str, tenant: str) -> None:
    password, url = create_business_user(settings, name, tenant)
    err.print(
        f"user {name} (tenant {tenant}) can log in to Superset at {url} and sees "
        "that tenant's rows only; the password is shown only now:"
    )
    out.print(password, markup=False, highlight=False)
