"""`lakehouse demo`: the demo fleet, run by the supervisor when LAKEHOUSE_DEMO is on."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Annotated

import psycopg
import typer

from lakehouse.cli.common import err, settings_of
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.demo import TENANTS, DemoMetrics, demo_dir, enrol, fleet
from lakehouse.metrics import serve
from lakehouse.private_files import write_private
from lakehouse.retry import Backoff, Outage
from lakehouse.stack.apps import gateway_url

log = logging.getLogger(__name__)
LOGINS = "logins.json"
ANALYST = "analyst"


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


def ensure_logins(settings: Settings) -> dict[str, dict[str, str]]:
    """One Superset login per demo tenant and a Trino analyst, made once and kept 0600
    in the demo directory, for `stack up` to print."""
    path = demo_dir(settings) / LOGINS
    if path.exists():
        stored: dict[str, dict[str, str]] = json.loads(path.read_text())
        return stored
    from lakehouse.cli.users import create_business_user
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
