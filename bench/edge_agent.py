"""Edge agent footprint at 10 readings/s over 60 s, against a bare Python process.

Targets: RSS ≤ 30 MB and ≤ 2 % of one core. The baseline, measured in the same run,
is an idle `python3 -c 'sleep'` process: the floor the interpreter itself costs.

Usage: python -m bench.edge_agent [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from lakehouse_testing.gateway_process import start_gateway
from rich.console import Console

from bench.targets import Targets
from lakehouse import registry
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.stack.manager import Stack


def footprint(proc: psutil.Process, seconds: float) -> tuple[float, float]:
    """(peak RSS in MB, CPU % of one core) over `seconds`."""
    start = proc.cpu_times()
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.5)
    end = proc.cpu_times()
    cpu = (end.user + end.system - start.user - start.system) / seconds * 100
    return peak / 1e6, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    settings = Settings()
    Stack(settings, Console(stderr=True)).up()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    with postgres_connection(settings, load(settings)) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        token = registry.register(conn, f"edge-bench-{uuid.uuid4().hex[:6]}", tenant="bench",
                                  site="bench-site", lat=0.0, lon=0.0)  # fmt: skip
    token_file = work / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = 19000 + os.getpid() % 500
    config = work / "config.toml"
    config.write_text(
        f'gateway = "http://127.0.0.1:{port}"\ntoken_file = "{token_file}"\n'
        f'state_dir = "{work / "state"}"\ninterval_seconds = 1.0\nbatch_size = 100\n\n'
        '[[sources]]\ntype = "simulator"\nmetrics = 10\n'
    )
    gateway = start_gateway(port, work / "gateway.log")
    agent = subprocess.Popen([sys.executable, "-m", "lakehouse_edge", "run", "--config",
                              str(config)], stderr=subprocess.DEVNULL)  # fmt: skip
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e6)"])
    try:
        time.sleep(3)  # start-up is not the steady state
        rss, cpu = footprint(psutil.Process(agent.pid), args.seconds)
        base_rss, base_cpu = footprint(psutil.Process(idle.pid), 5)
        status = subprocess.run([sys.executable, "-m", "lakehouse_edge", "status", "--config",
                                 str(config)], capture_output=True, text=True).stdout  # fmt: skip
    finally:
        for proc in (agent, idle, gateway):
            proc.terminate()
            proc.wait(30)
    print(
        f"agent at 10 readings/s for {args.seconds:.0f} s: peak RSS {rss:.1f} MB, "
        f"CPU {cpu:.2f} % of one core"
    )
    print(
        f"baseline idle interpreter: RSS {base_rss:.1f} MB, CPU {base_cpu:.2f} %; "
        f"ratio RSS {rss / base_rss:.2f}"
    )
    print(f"queue after the run: {status.strip()}")
    targets = Targets()
    targets.check("agent peak RSS ≤ 30 MB", rss <= 30, f"{rss:.1f} MB")
    targets.check("agent CPU ≤ 2 % of one core", cpu <= 2, f"{cpu:.2f} %")
    targets.exit()


if __name__ == "__main__":
    main()
