"""Stack start-up time with a warm cache and peak RSS per service.

Targets: every service healthy within 90 s of `up` on 2 cores; the whole stack under
6 GiB RSS. The baseline, measured in the same run, is the floor any JVM stack pays:
starting and stopping a bare JVM (`java -version`) once for each of the three JVM
services, so the ratio says how many "bare JVM starts" the stack costs on this machine.

Usage: python -m bench.stack_start [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time

import pyarrow as pa
from rich.console import Console

from bench.targets import Targets
from lakehouse.clients import iceberg_catalog, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.stack.java import find_java
from lakehouse.stack.manager import Stack
from lakehouse.stack.process import tree_rss

TARGET_SECONDS = 90.0
TARGET_RSS = 6 * 1024**3
JVM_SERVICES = 3


class RssSampler(threading.Thread):
    """Samples each service's process-tree RSS and keeps the peak."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            total = 0
            for service in self.stack.services():
                pid = service.pid()
                rss = tree_rss(pid) if pid else 0
                total += rss
                self.peak[service.name] = max(self.peak.get(service.name, 0), rss)
            self.peak_total = max(self.peak_total, total)


def jvm_floor(settings: Settings, console: Console) -> float:
    java = find_java(settings.java_home, console)
    started = time.monotonic()
    for _ in range(JVM_SERVICES):
        subprocess.run([str(java), "-version"], capture_output=True, check=True)
    return time.monotonic() - started


def workload(settings: Settings) -> None:
    """A little real work so the RSS figures include a query and a commit."""
    catalog = iceberg_catalog(settings, load(settings), s3_key="ingest")
    name = "bronze.bench_stack_start"
    if catalog.table_exists(name):
        catalog.drop_table(name)
    rows = pa.table({"id": pa.array(range(100_000), pa.int64())})
    catalog.create_table(name, schema=rows.schema).append(rows)
    cursor = trino_connection(settings).cursor()
    cursor.execute(f"select count(*), sum(id) from lake.{name}")
    cursor.fetchall()
    catalog.drop_table(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    console = Console(stderr=True)
    settings = Settings()
    stack = Stack(settings, console)
    was_running = any(s.pid for s in stack.status())
    stack.up()  # warm the cache and initialise state before measuring

    durations: list[float] = []
    per_service: dict[str, list[float]] = {}
    sampler = RssSampler(stack)
    for run in range(args.runs):
        stack.down()
        if run == 0:
            sampler.start()
        started = time.monotonic()
        stack.up()
        durations.append(time.monotonic() - started)
        for name, seconds in stack.start_seconds.items():
            per_service.setdefault(name, []).append(seconds)
        workload(settings)
    time.sleep(1)
    sampler.halt.set()
    sampler.join()
    floor = jvm_floor(settings, console)

    median = statistics.median(durations)
    targets = Targets()
    print(
        f"stack start, warm cache ({args.runs} run(s)): median {median:.1f} s "
        f"(runs: {', '.join(f'{d:.1f}' for d in durations)})"
    )
    print(f"baseline, {JVM_SERVICES} bare JVM starts: {floor:.2f} s")
    print(f"ratio start / baseline: {median / floor:.1f}x")
    print(f"ratio start / 90 s target: {median / TARGET_SECONDS:.2f}")
    targets.check("every service healthy within 90 s of up", median <= TARGET_SECONDS,
                  f"median {median:.1f} s")  # fmt: skip
    print("per service (s to ready, peak RSS MiB):")
    for name, seconds in per_service.items():
        peak_mib = sampler.peak.get(name, 0) / 2**20
        print(f"  {name:<9} {statistics.median(seconds):6.1f} s {peak_mib:8.0f} MiB")
    total = sampler.peak_total
    print(
        f"peak RSS of the whole stack: {total / 2**30:.2f} GiB; ratio to 6 GiB budget: "
        f"{total / TARGET_RSS:.2f}"
    )
    targets.check("peak RSS of the whole stack ≤ 6 GiB", total <= TARGET_RSS,
                  f"{total / 2**30:.2f} GiB")  # fmt: skip
    if not was_running:
        stack.down()
    targets.exit()


if __name__ == "__main__":
    main()
