"""`lakehouse gateway`: serve the device upload API."""

from __future__ import annotations

import logging
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

    from ingest.gateway.app import create_app, with_upload_fast_path

    settings = settings_of(ctx)
    # A plain one-line access log (uvicorn's own costs as much CPU as a small upload).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
    access = logging.getLogger("ingest.gateway.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    app = with_upload_fast_path(create_app(settings, load(settings)))
    uvicorn.run(
        app,
        host=settings.host,
        port=port or settings.gateway.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        # Bound to the stack's host; there is no proxy whose headers to trust.
        proxy_headers=False,
    )
