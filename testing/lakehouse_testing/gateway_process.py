"""The gateway as a real process, for the tests and the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_gateway(port: int, log_path: Path, **env_overrides: str) -> subprocess.Popen[bytes]:
    """A gateway process on `port`, returned once /readyz answers 200."""
    with Path(log_path).open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", "gateway", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env_overrides},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {Path(log_path).read_text()[-2000:]}")
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the gateway did not become ready; see {log_path}")
