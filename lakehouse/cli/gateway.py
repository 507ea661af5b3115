"""`lakehouse gateway`: serve the device upload API."""

from __future__ import annotations

from typing import Annotated

import typer

from lakehouse.cli.common import settings_of
from lakehouse.credentials import load


def gateway(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Serve POST /v1/readings for devices (bound to the stack's host)."""
    import uvicorn

    from ingest.gateway.app import create_app

    settings = settings_of(ctx)
    app = create_app(settings, load(settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=port or settings.gateway.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=True,
    )
