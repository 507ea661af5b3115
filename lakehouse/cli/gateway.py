"""`lakehouse gateway`: serve the device upload API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lakehouse.cli.common import settings_of
from lakehouse.credentials import load
from lakehouse.errors import ConfigError


def gateway(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Bind address, e.g. 0.0.0.0 for devices on the LAN (default: "
            "LAKEHOUSE_GATEWAY_HOST, 127.0.0.1). Other servers stay where they are."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve HTTPS.", exists=True)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --tls-cert.", exists=True)
    ] = None,
) -> None:
    """Serve POST /v1/readings for devices (on its own bind address, HTTPS if given)."""
    import uvicorn

    from ingest.gateway.app import Gateway

    settings = settings_of(ctx)
    config = settings.gateway
    cert = tls_cert or config.tls_cert
    key = tls_key or config.tls_key
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together", fix="give both, or neither")
    # A plain one-line access log (uvicorn's own costs as much CPU as a small upload).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
    access = logging.getLogger("ingest.gateway.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    app = Gateway(settings, load(settings))
    uvicorn.run(
        app,
        host=host or config.host,
        port=port or config.port,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        # Bound to the stack's host; there is no proxy whose headers to trust.
        proxy_headers=False,
    )
