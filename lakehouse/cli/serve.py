"""`lakehouse serve …`: the PostgreSQL serving layer that dashboards read."""

from __future__ import annotations

from typing import Annotated

import typer

from lakehouse.cli.common import err, settings_of
from lakehouse.credentials import load

serve_app = typer.Typer(help="The PostgreSQL serving layer: publish marts, check its safety.")


@serve_app.command("publish")
def serve_publish(
    ctx: typer.Context,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Replace every serving table whole.")
    ] = False,
) -> None:
    """Publish every transform run not served yet (one transaction); safe to repeat."""
    from lakehouse.serving.publish import ServingPublisher, describe

    settings = settings_of(ctx)
    publisher = ServingPublisher(settings, load(settings))
    report = publisher.publish(full_refresh=full_refresh, progress=err.print)
    err.print(describe(report), highlight=False)


@serve_app.command("check")
def serve_check(ctx: typer.Context) -> None:
    """Refuse (exit 1, naming the role) if a dashboard role could see past row-level security."""
    from lakehouse.serving.publish import ServingPublisher

    settings = settings_of(ctx)
    tenants = ServingPublisher(settings, load(settings)).prepare()
    err.print(
        f"serving is safe: {len(tenants)} tenant role(s), forced row-level security on every "
        "table, no dashboard role is a superuser, bypasses RLS or owns a serving table"
    )
