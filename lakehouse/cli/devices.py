"""`lakehouse devices …`: the device registry and per-device tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from lakehouse import registry
from lakehouse.cli.common import err, out, settings_of
from lakehouse.clients import postgres_connection
from lakehouse.credentials import load

devices_app = typer.Typer(help="Register devices and manage their tokens.")


def _connect(ctx: typer.Context) -> psycopg.Connection[Any]:
    settings = settings_of(ctx)
    conn = postgres_connection(settings, load(settings))
    conn.autocommit = True
    registry.ensure_schema(conn)
    return conn


def _show_token(token: str) -> None:
    err.print("[bold]token (shown once; store it in the device's token file, mode 0600):[/]")
    out.print(token, markup=False, highlight=False, soft_wrap=True)


@devices_app.command("register")
def register(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id, unique across tenants.")],
    tenant: Annotated[str, typer.Option(help="Tenant the device belongs to.")],
    site: Annotated[str, typer.Option(help="Site of the device.")],
    lat: Annotated[float | None, typer.Option(help="Site latitude (new sites).")] = None,
    lon: Annotated[float | None, typer.Option(help="Site longitude (new sites).")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Token lifetime in days (default: no expiry).")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="When the device came into service (UTC; default now). Readings stamped "
            "earlier are quarantined by silver, so back-date devices whose history you load."
        ),
    ] = None,
) -> None:
    """Register a device and print its token once."""
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _connect(ctx) as conn:
        token = registry.register(
            conn,
            device_id,
            tenant=tenant,
            site=site,
            lat=lat,
            lon=lon,
            expires_in=expires,
            since=since,
        )
    _show_token(token)


@devices_app.command("rotate")
def rotate(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument()],
    grace_hours: Annotated[
        float, typer.Option(help="How long the old token keeps working.")
    ] = 24.0,
    expires_in_days: Annotated[float | None, typer.Option(help="New token lifetime.")] = None,
) -> None:
    """Issue a new token; the old one stays valid for the grace period."""
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    with _connect(ctx) as conn:
        token = registry.rotate(
            conn, device_id, grace=timedelta(hours=grace_hours), expires_in=expires
        )
    _show_token(token)


@devices_app.command("revoke")
def revoke(ctx: typer.Context, device_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a device and all its tokens (effective at the gateway within seconds)."""
    with _connect(ctx) as conn:
        registry.revoke(conn, device_id)
    err.print(f"revoked {device_id}")


@devices_app.command("list")
def list_devices(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """List devices with their site and number of valid tokens."""
    with _connect(ctx) as conn:
        rows = registry.list_devices(conn, tenant)
    table = Table("device", "tenant", "site", "registered", "revoked", "valid tokens")
    for row in rows:
        table.add_row(
            row.device_id, row.tenant, row.site, f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
            str(row.active_tokens),
        )  # fmt: skip
    out.print(table)
