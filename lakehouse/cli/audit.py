"""`lakehouse audit …`: the audit log — receive Trino's query events, and read the log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lakehouse.cli.common import out, settings_of
from lakehouse.credentials import load

audit_app = typer.Typer(help="The audit log: who changed or queried what.")


@audit_app.command("serve")
def audit_serve(ctx: typer.Context) -> None:
    """Receive Trino's query events into audit.events (loopback only; the stack runs it)."""
    import uvicorn

    from lakehouse.audit_receiver import create_app

    settings = settings_of(ctx)
    uvicorn.run(
        create_app(settings, load(settings)),
        host=settings.host,
        port=settings.audit.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many of the latest events.", min=1)] = 20,
    source: Annotated[
        str | None, typer.Option(help="Only this source: registry, users, transform, trino.")
    ] = None,
    principal: Annotated[
        str | None,
        typer.Option(help="Only events of this principal (for Trino: who logged in)."),
    ] = None,
    outcome: Annotated[
        str | None, typer.Option(help="Only this outcome: ok, refused, failed.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only events since then: 15m, 2h, 7d, or 2026-12-02T10:00:00Z."),
    ] = None,
) -> None:
    """The latest events, newest first, with each Trino query's statement."""
    from lakehouse.audit import EventFilter, latest, since_instant
    from lakehouse.clients import postgres_connection

    settings = settings_of(ctx)
    only = EventFilter(
        source=source,
        principal=principal,
        outcome=outcome,
        since=since_instant(since) if since is not None else None,
    )
    with postgres_connection(settings, load(settings)) as conn:
        rows = latest(conn, only, limit)
    table = Table("at", "source", "principal", "action", "target", "outcome", "statement")
    for at, *rest in rows:
        table.add_row(f"{at:%Y-%m-%d %H:%M:%S}", *map(str, rest))
    out.print(table, markup=False, highlight=False)
