"""Stop the benchmarks' own stack (its data is kept in .lakehouse-bench/)."""

from __future__ import annotations

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.stack.manager import Stack

if __name__ == "__main__":
    Stack(Settings(), Console(stderr=True)).down()
