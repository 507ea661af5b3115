"""What every CLI command shares: consoles and the settings built in main()."""

from __future__ import annotations

import typer
from rich.console import Console

from lakehouse.config import Settings

out = Console()
err = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise RuntimeError("settings were not built in main()")
    return settings
