"""Stop the benchmarks' own stacks (their data is kept in .lakehouse-bench*/)."""

from __future__ import annotations

import os

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.stack.manager import Stack

if __name__ == "__main__":
    from bench.security import OPEN_ENVIRONMENT, environment

    console = Console(stderr=True)
    Stack(Settings(), console).down()
    if os.path.isdir(OPEN_ENVIRONMENT["LAKEHOUSE_HOME"]):
        with environment(OPEN_ENVIRONMENT) as settings:
            Stack(settings, console).down()
