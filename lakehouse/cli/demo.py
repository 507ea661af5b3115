"""`lakehouse demo`: the demo fleet, run by the supervisor when LAKEHOUSE_DEMO is on."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import psycopg
import typer

from lakehouse.cli.common import err, settings_of
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.demo import TENANTS, DemoMetrics, enrol, fleet
from lakehouse.metrics import serve
from lakehouse.retry import Backoff, Outage
from lakehouse.stack.apps import gateway_url

log = logging.getLogger(__name__)


def demo(
    ctx: typer.Context,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="The gateway's URL (default: this stack's).")
    ] = None,
) -> None:
    """Run the demo fleet until interrupted (SIGTERM/Ctrl-C): register it once, then
    every device samples and uploads through the gateway with the agent's own code."""
    settings = settings_of(ctx)
    credentials = load(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tokens = _until_registered(settings, credentials, stop)
    if tokens is None:
        return
    url = gateway or gateway_url(settings)
    devices = fleet(settings, tokens, interval=settings.demo_interval_seconds, gateway=url)
    metrics = DemoMetrics(devices)
    server = serve(metrics.registry, settings.host, metrics_port) if metrics_port else None
    for device in devices:
        device.start(stop)
    err.print(
        f"demo fleet: {len(devices)} devices of tenants {', '.join(TENANTS)} sending to "
        f"{url} every {settings.demo_interval_seconds:g} s"
    )
    while not stop.wait(5.0):
        metrics.refresh()
    if server is not None:
        server.shutdown()
    for device in devices:
        device.queue.close()


def _until_registered(
    settings: Settings, credentials: Credentials, stop: threading.Event
) -> dict[str, str] | None:
    """The fleet's tokens; PostgreSQL being away is waited out (one line each way)."""
    delays = Backoff(initial=1.0, cap=30.0).delays()
    outage = Outage("PostgreSQL (registering the demo fleet)", log)
    while not stop.is_set():
        try:
            tokens = enrol(settings, credentials)
        except psycopg.OperationalError as exc:
            outage.failed(exc)
            stop.wait(next(delays))
            continue
        outage.recovered()
        return tokens
    return None
