"""`lakehouse backup` and `lakehouse restore`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lakehouse.backup.runner import Backup, Restore
from lakehouse.cli.common import err, out, settings_of
from lakehouse.credentials import load


def _progress(line: str) -> None:
    err.print(f"[dim]{line}[/]", highlight=False)


def backup(
    ctx: typer.Context,
    to: Annotated[
        Path,
        typer.Option(
            "--to",
            help="Directory of backups; each backup goes in DIR/<UTC time>, and objects "
            "already in DIR from an earlier backup are not copied again.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest.")] = False,
) -> None:
    """Back up the whole lakehouse while it runs: catalog, tables, registry, dashboards,
    and the readings still waiting in Kafka."""
    settings = settings_of(ctx)
    path, manifest = Backup(settings, load(settings), _progress).run(to.resolve())
    if as_json:
        out.print_json(manifest.model_dump_json(exclude={"objects"}))
        return
    out.print(
        f"backup {path}: main at {manifest.main_hash or 'an unnamed commit'}, "
        f"{len(manifest.objects):,} objects ({manifest.object_bytes / 2**20:,.1f} MiB), "
        f"{len(manifest.databases)} databases, {manifest.messages:,} unconsumed Kafka messages",
        highlight=False,
    )


def restore(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Option("--from", help="A backup, DIR/<name>, or DIR for the newest in it."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest.")] = False,
) -> None:
    """Build a new lakehouse in LAKEHOUSE_HOME (which must hold none) from a backup, and
    start it: ingestion resumes where the backup left it."""
    settings = settings_of(ctx)
    manifest = Restore(settings, err, _progress).run(source.resolve())
    if as_json:
        out.print_json(json.dumps({"restored": manifest.name, "main_hash": manifest.main_hash}))
        return
    out.print(
        f"restored {manifest.name} into {settings.home}: main at "
        f"{manifest.main_hash or 'the backup commit'}, {len(manifest.objects):,} objects, "
        f"{manifest.messages:,} Kafka messages; the stack is running",
        highlight=False,
    )
