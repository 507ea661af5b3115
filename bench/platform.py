"""A `make up` platform of a benchmark's own: its own home and ports, and every loop
and the demo fleet at the defaults `make up` runs with (plus the overrides a benchmark
compares), started from nothing and purged afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console

from lakehouse.config import Settings, isolated_environment

# What isolated_environment turns off for tests, left at make up's defaults here.
_LOOP_SETTINGS = (
    "LAKEHOUSE_SUPERVISOR_TRANSFORM_EVERY", "LAKEHOUSE_SUPERVISOR_TRANSFORM_WATCH",
    "LAKEHOUSE_SUPERVISOR_MAINTAIN_EVERY", "LAKEHOUSE_TRANSFORM_AUDIT_EVERY",
)  # fmt: skip


def lakehouse(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """The CLI, on the platform this process points at."""
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", *args], capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


class OwnPlatform:
    """`with OwnPlatform(home, first_port) as settings:` a running platform."""

    def __init__(
        self,
        home: Path,
        first_port: int,
        console: Console,
        overrides: dict[str, str] | None = None,
        *,
        keep: bool = False,
    ) -> None:
        self.home, self.first_port, self.console = home, first_port, console
        self.overrides = overrides or {}
        self.keep = keep

    def __enter__(self) -> Settings:
        os.environ.update(
            {**isolated_environment(self.home, self.first_port), "LAKEHOUSE_DEMO": "true"}
        )
        for key in _LOOP_SETTINGS:
            os.environ.pop(key, None)
        os.environ.update(self.overrides)
        lakehouse("stack", "down", "--purge")  # what an aborted run left
        started = time.perf_counter()
        up = lakehouse("stack", "up")
        if up.returncode != 0:
            raise SystemExit(f"the platform did not start:\n{up.stderr[-3000:]}")
        self.console.print(f"platform up in {time.perf_counter() - started:.0f} s")
        return Settings()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if not self.keep:
            lakehouse("stack", "down", "--purge")
        for key in self.overrides:
            os.environ.pop(key, None)
