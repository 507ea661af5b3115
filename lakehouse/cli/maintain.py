"""`lakehouse maintain …`: compaction, garbage collection and retention."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lakehouse.cli.common import err, out, settings_of
from lakehouse.clients import postgres_connection
from lakehouse.credentials import load
from lakehouse.errors import LakehouseError, MaintenanceLockedError
from lakehouse.maintain import records
from lakehouse.maintain.metrics import MaintenanceMetrics
from lakehouse.maintain.runner import Maintainer, describe, release_memory
from lakehouse.metrics import serve
from lakehouse.retry import Backoff

maintain_app = typer.Typer(
    help="Compact small files, delete what no live Nessie reference reaches, apply retention.",
    invoke_without_command=True,
)


@maintain_app.callback()
def maintain(
    ctx: typer.Context,
    every: Annotated[
        float | None,
        typer.Option(help="Run a pass every SECONDS until interrupted (SIGTERM/Ctrl-C).", min=1),
    ] = None,
    gc: Annotated[
        bool | None,
        typer.Option(
            "--gc/--no-gc",
            help="Collect garbage now / never (default: when the last collection is "
            "LAKEHOUSE_MAINTAIN_GC_EVERY_SECONDS old; always for a single pass).",
        ),
    ] = None,
    compact: Annotated[bool, typer.Option("--compact/--no-compact", help="Compact.")] = True,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Compact nothing, delete nothing: report what would go."),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="With --every: serve Prometheus metrics on this port (0: none)."),
    ] = None,
) -> None:
    """One pass (or one every SECONDS): compaction, garbage collection, retention."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_of(ctx)
    # An isolated environment (a schema prefix) maintains its own namespaces.
    maintainer = Maintainer(
        settings, load(settings), schema_prefix=settings.transform.schema_prefix
    )
    if every is None:
        report = maintainer.run(
            compact=compact and not dry_run,
            gc=True if gc is None else gc,
            retention=not dry_run,
            dry_run=dry_run,
        )
        err.print(describe(report), highlight=False)
        raise typer.Exit(0 if report.outcome == "done" else 1)
    metrics = MaintenanceMetrics()
    if metrics_port:
        serve(metrics.registry, settings.host, metrics_port)
    _loop(maintainer, every, metrics, gc=gc, compact=compact)


def _loop(
    maintainer: Maintainer,
    every: float,
    metrics: MaintenanceMetrics,
    *,
    gc: bool | None,
    compact: bool,
) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = maintainer.run(compact=compact, gc=gc)
            err.print(describe(report), highlight=False)
            metrics.record(report)
            failures = 0
        except MaintenanceLockedError as exc:
            err.print(f"[yellow]skipped:[/] {escape(exc.message)}", highlight=False)
        except LakehouseError as exc:
            failures += 1
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        except Exception as exc:  # a server away (PostgreSQL, Trino, Nessie): try again
            failures += 1
            err.print(
                f"[bold red]pass failed:[/] {type(exc).__name__}: {escape(str(exc)[:300])}"
                + (f" ({failures} in a row)" if failures > 1 else ""),
                highlight=False,
            )
        release_memory()
        wait = every if not failures else Backoff(5.0, every, jitter=0.0).delay(failures)
        stop.wait(max(wait - (time.monotonic() - started), 0))
    err.print("stopped")


@maintain_app.command("history")
def history(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many passes, newest first.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The latest maintenance passes and what each did."""
    settings = settings_of(ctx)
    conn = postgres_connection(settings, load(settings))
    try:
        records.ensure_schema(conn)
        rows = records.recent(conn, limit)
    finally:
        conn.close()
    if as_json:
        out.print_json(records.as_json(rows))
        return
    table = Table("pass", "outcome", "seconds", "compacted", "gc deleted", "receipts", "notes")
    for row in rows:
        notes = "; ".join([*(row["warnings"] or []), row["error"] or ""]).strip("; ")
        table.add_row(
            row["run_id"], row["outcome"], f"{row['seconds']:.1f}", str(row["tables_compacted"]),
            "" if row["gc_deleted_files"] is None else
            f"{row['gc_deleted_files']} ({row['gc_deleted_bytes']} B)",
            str(row["receipts_deleted"] or 0), notes,
        )  # fmt: skip
    out.print(table)
