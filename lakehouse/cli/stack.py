"""`lakehouse stack …`: run the servers natively on this machine."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lakehouse import transform_runs as runs
from lakehouse.cli.common import err, out
from lakehouse.cli.common import settings_of as _settings
from lakehouse.cli.user_access import ensure_logins
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.demo import ANALYST
from lakehouse.errors import LakehouseError
from lakehouse.stack.manager import Stack
from lakehouse.stack.process import tail
from lakehouse.stack.service import ServiceStatus
from lakehouse.stack.top import Top
from lakehouse.tls import ca_path

stack_app = typer.Typer(help="Run the lakehouse servers natively on this machine.")


@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Obtain, configure and start every service, then bootstrap them (idempotent)."""
    settings = _settings(ctx)
    started = time.monotonic()
    statuses = Stack(settings, err).up()
    err.print(f"stack ready in {time.monotonic() - started:.1f} s")
    out.print(_endpoints_table(settings, statuses))
    if any(s.name == "demo" and s.healthy for s in statuses):
        # Made here, as the user who runs the stack (Superset's and Trino's files are
        # theirs), not by the fleet's unprivileged process.
        try:
            logins = ensure_logins(settings)
        except LakehouseError as exc:
            err.print(f"[yellow]the demo logins could not be made:[/] {escape(str(exc))}")
        else:
            out.print(_demo_table(settings, statuses, logins))


@stack_app.command("down")
def stack_down(
    ctx: typer.Context,
    purge: Annotated[bool, typer.Option(help="Also delete all state (data is lost).")] = False,
) -> None:
    """Stop every service gracefully; data is kept unless --purge."""
    stopped = Stack(_settings(ctx), err).down(purge=purge)
    if not stopped:
        err.print("nothing was running")


@stack_app.command("stop")
def stack_stop(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service to stop and keep stopped.")],
) -> None:
    """Stop one service and keep it stopped until `stack start` (the rest keeps running)."""
    Stack(_settings(ctx), err).hold(service)
    err.print(f"{service} stopped; `lakehouse stack start {service}` starts it again")


@stack_app.command("start")
def stack_start(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="A stopped or failed service.")],
) -> None:
    """Start a service stopped with `stack stop`, or one the supervisor gave up on."""
    Stack(_settings(ctx), err).release(service)
    err.print(f"{service} running")


@stack_app.command("status")
def stack_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Add each service's URL and last exit.")
    ] = False,
) -> None:
    """Each service's state, pid, port, uptime, restarts and health (--wide adds the URL
    and the last exit); exit 1 if any is not running healthy."""
    statuses = Stack(_settings(ctx), err).status()
    if as_json:
        out.print_json(json.dumps([asdict(s) for s in statuses]))
    else:
        out.print(status_table(statuses, wide=wide))
        for s in statuses:
            if s.state == "failed" and s.last_error:
                err.print(f"[red]{s.name}[/] failed: {s.last_exit}", highlight=False)
                err.print(s.last_error.rstrip(), markup=False, highlight=False)
        if any(s.name == "transform" for s in statuses):
            health = _transform_health(_settings(ctx))
            if health:
                out.print(health, markup=False, highlight=False)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@stack_app.command("top")
def stack_top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.5)] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one view (two samples apart) and exit.")
    ] = False,
) -> None:
    """A live view: each service's CPU, memory and restarts, and the pipeline's figures
    (ingest rate, lag, freshness per layer, runs, quarantine, files, disk)."""
    from rich.live import Live

    settings = _settings(ctx)
    top = Top(settings, Stack(settings, err))
    top.previous = top.frame()
    if once:
        time.sleep(interval)
        out.print(top.render(top.frame()))
        return
    with Live(top.render(top.previous), console=out, screen=True, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                frame = top.frame()
                live.update(top.render(frame), refresh=True)
                top.previous = frame
        except KeyboardInterrupt:
            pass


@stack_app.command("logs")
def stack_logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="A service name, or `supervisor`.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the end of a service's log."""
    settings = _settings(ctx)
    names = [*Stack(settings, err).names(), "supervisor"]
    if service not in names:
        raise LakehouseError(f"unknown service {service!r}", fix=f"use one of: {', '.join(names)}")
    path = settings.home / "logs" / f"{service}.log"
    if not path.exists():
        raise LakehouseError(f"no log for {service} at {path}", fix="start it: lakehouse stack up")
    sys.stdout.write(tail(path, lines))
    if follow:
        with path.open("r", errors="replace") as handle:
            handle.seek(0, os.SEEK_END)
            while True:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)


def _transform_health(settings: Settings) -> str | None:
    """The transform loop's last run and last failure, from its run records; nothing
    when PostgreSQL does not answer (the table above says so)."""

    try:
        with postgres_connection(settings, load(settings)) as conn:
            return runs.loop_health(runs.recent(conn, limit=200))
    except Exception:  # status must print whatever is down
        return None


def status_table(statuses: list[ServiceStatus], *, wide: bool = False) -> Table:
    """The status table: its narrow form fits 80 columns with every name whole (the URL
    and the last exit, the wide columns, only with `wide`)."""
    table = Table("service", "state", "pid", "port", "uptime", "restarts", "health")
    for column in table.columns:
        column.no_wrap = True
    table.columns[0].min_width = max((len(s.name) for s in statuses), default=0)
    if wide:
        table.add_column("url", no_wrap=True)
        table.add_column("last exit")
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        row = [
            s.name, s.state, str(s.pid or "-"), str(s.port or "-"), _duration(s.uptime_seconds),
            str(s.restarts), health,
        ]  # fmt: skip
        table.add_row(*row, *([s.url, s.last_exit or ""] if wide else []))
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _demo_table(
    settings: Settings, statuses: list[ServiceStatus], logins: dict[str, dict[str, str]]
) -> Table:
    """What to open on a platform with the demo fleet: a login per demo tenant, an
    analyst's Trino command, the live view."""

    by_name = {s.name: s for s in statuses}
    table = Table("open", "how", title="the demo fleet is sending: open these")
    for name, password in sorted(logins["superset"].items()):
        tenant = name.removeprefix("viewer-")
        superset = by_name["superset"].url
        table.add_row(f"Superset, tenant {tenant}", f"{superset}  {name} / {password}")
    table.add_row(
        "Trino, as an analyst",
        f"trino --server {by_name['trino'].url} --user {ANALYST} --password "
        f"--truststore-path {ca_path(settings.home)}  (password {logins['trino'][ANALYST]})",
    )
    table.add_row("live view of every service", "lakehouse stack top")
    table.add_row("readings, end to end", "lakehouse reconcile")
    return table


def _endpoints_table(settings: Settings, statuses: list[ServiceStatus]) -> Table:
    by_name = {s.name: s for s in statuses}
    host = settings.host
    table = Table("endpoint", "address", title="lakehouse is up")
    table.add_row(
        "Superset (dashboards)",
        f"{by_name['superset'].url}  (user {settings.superset.admin_user}, password: "
        "superset_admin_password in the credentials)",
    )
    table.add_row("Trino", by_name["trino"].url)
    table.add_row("Nessie", by_name["nessie"].url)
    table.add_row("Iceberg REST", f"{by_name['nessie'].url}/iceberg")
    table.add_row("MinIO (S3)", by_name["minio"].url)
    table.add_row("MinIO console", f"http://{host}:{settings.minio.console_port}")
    table.add_row("Kafka bootstrap", by_name["kafka"].url)
    table.add_row("PostgreSQL", by_name["postgres"].url)
    if "gateway" in by_name:
        table.add_row("upload gateway", by_name["gateway"].url)
    table.add_row("credentials", str(settings.home / "credentials.json"))
    return table
