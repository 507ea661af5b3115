"""The `lakehouse` command line, the top layer: the only part that imports every other.

Commands import the services they run (FastAPI apps, the consumers, the publisher…)
inside the command: imported at the top of their modules, they would add about 0.6 s
to every `lakehouse` start-up (python -X importtime: 1.5 s to 2.1 s for `lakehouse.cli`).
The layers themselves are pyproject.toml's [tool.importlinter] contracts.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.logging import RichHandler
from rich.markup import escape

from lakehouse.cli.audit import audit_app
from lakehouse.cli.backup import backup, restore
from lakehouse.cli.common import err
from lakehouse.cli.demo import demo
from lakehouse.cli.deploy import deploy_app
from lakehouse.cli.devices import devices_app
from lakehouse.cli.gateway import gateway
from lakehouse.cli.ingest import ingest_app
from lakehouse.cli.maintain import maintain_app
from lakehouse.cli.reconcile import reconcile
from lakehouse.cli.serve import serve_app
from lakehouse.cli.simulate import simulate
from lakehouse.cli.stack import stack_app
from lakehouse.cli.transform import transform_app
from lakehouse.cli.users import users_app
from lakehouse.config import Settings
from lakehouse.errors import LakehouseError, ServiceStartError

app = typer.Typer(help="A self-hosted Apache Iceberg lakehouse.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(ingest_app, name="ingest")
app.add_typer(devices_app, name="devices")
app.add_typer(transform_app, name="transform")
app.add_typer(users_app, name="users")
app.add_typer(serve_app, name="serve")
app.add_typer(audit_app, name="audit")
app.add_typer(maintain_app, name="maintain")
app.add_typer(deploy_app, name="deploy")
app.command("gateway")(gateway)
app.command("simulate")(simulate)
app.command("reconcile")(reconcile)
app.command("backup")(backup)
app.command("restore")(restore)
app.command("demo")(demo)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    level = logging.DEBUG if verbose else os.environ.get("LAKEHOUSE_LOG_LEVEL", "WARNING")
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)]
    )
    if not verbose:
        # One line per HTTP request to Nessie or the gateway's probes is noise, not news.
        for chatty in ("httpx", "httpcore"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    if ctx.obj is None:
        ctx.obj = Settings()


def _report(exc: LakehouseError) -> None:
    err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
    if isinstance(exc, ServiceStartError) and exc.log_tail:
        err.print(f"[dim]last lines of the {exc.service} log:[/]")
        err.print(exc.log_tail.rstrip(), markup=False, highlight=False)
    if exc.fix:
        err.print(f"[bold]fix:[/] {escape(exc.fix)}", highlight=False)


def main() -> None:
    """Entry point of the `lakehouse` console script."""
    try:
        settings = Settings()
        # Without standalone mode click returns the exit code instead of exiting.
        code = app(obj=settings, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except LakehouseError as exc:
        _report(exc)
        sys.exit(1)
    except ValidationError as exc:
        err.print(
            f"[bold red]error:[/] invalid LAKEHOUSE_* setting:\n{escape(str(exc))}", highlight=False
        )
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors surface as ClickException
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
