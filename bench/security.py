"""What security costs: ingest, gateway and transform with security on and off, in one run.

Two benchmark stacks run side by side: the usual one (home `.lakehouse-bench/`,
security on) and one with `LAKEHOUSE_SECURITY=false` (home `.lakehouse-bench-open/`,
ports from 22100): Kafka without SASL and ACLs, Trino over HTTP without passwords,
access rules or audit events, MinIO without encryption at rest.
Each workload runs on the two in turn, round after round, so both see the same
machine; the figure of each side is its median.

- ingest: the bronze consumer end to end (Kafka → Parquet → Iceberg commit), readings/s;
- gateway: one gateway process saturated by agent-like uploads, readings/s;
- transform: the incremental run that publishes one new hour (1.44 M readings), seconds.

Target: security on at most 10 % slower than off for each.

Usage: python -m bench.security [--rounds N] [--transform-rounds N] [--readings N]
       [--seconds S] [--skip WORKLOAD ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse_testing.bronze_writer import create_environment, drop_environment
from lakehouse_testing.gateway_process import start_gateway
from lakehouse_testing.lake import free_port
from rich.console import Console

from bench import BENCH_ENVIRONMENT
from bench.gateway import batch_bodies, register_devices, saturate, settle
from bench.ingest import drop_topic, end_to_end, make_topic, produce
from bench.targets import Targets
from bench.transform import DEVICES, METRICS, PER_HOUR, load_seconds, register_fleet, timed_run
from lakehouse.clients import iceberg_catalog
from lakehouse.config import Settings, environment_variables, isolated_environment
from lakehouse.credentials import load
from lakehouse.stack.manager import Stack
from lakehouse.transform.runner import TransformRunner

console = Console(stderr=True)
OPEN_ENVIRONMENT = {
    **isolated_environment(
        Path(__file__).resolve().parent.parent / ".lakehouse-bench-open", first_port=22_100
    ),
    "LAKEHOUSE_SECURITY": "false",
}
TARGET = 0.10
PREFIX = "benchsec_"


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[Settings]:
    """Settings (and child processes) of one stack while the block runs."""
    with environment_variables(variables):
        yield Settings()


@dataclass
class Side:
    name: str
    variables: dict[str, str]
    figures: dict[str, list[float]] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    runner: TransformRunner | None = None
    transform_table: object = None
    devices: list[tuple[str, str, str]] = field(default_factory=list)
    hours_loaded: int = 0

    def record(self, workload: str, value: float) -> None:
        self.figures.setdefault(workload, []).append(value)


def ingest_rate(settings: Settings, readings: int) -> float:
    topic = make_topic(settings, "bench-security")
    try:
        sent = produce(settings, topic, readings, batch=100)
        return sent / end_to_end(settings, topic, sent)
    finally:
        drop_topic(settings, topic)


def gateway_rate(
    settings: Settings, side: Side, seconds: float, bodies: list[list[bytes]]
) -> float:
    if not side.tokens:
        side.tokens = register_devices(settings)
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="security-bench-")) / "gateway.log"
    gateway = start_gateway(port, log_path, LAKEHOUSE_GATEWAY_REQUESTS_PER_SECOND="1000",
                            LAKEHOUSE_GATEWAY_BURST="1000")  # fmt: skip
    try:
        os.sync()
        return asyncio.run(saturate(port, side.tokens, bodies, seconds, concurrency=32))
    finally:
        gateway.terminate()
        gateway.wait(30)


def prepare_transform(settings: Settings, side: Side) -> None:
    """Namespaces of their own with one hour of bronze, published by a full refresh."""
    credentials = load(settings)
    env_settings = settings.model_copy(deep=True)
    env_settings.transform.schema_prefix = PREFIX
    catalog = iceberg_catalog(env_settings, credentials, s3_key="ingest")
    drop_environment(catalog, PREFIX)
    side.transform_table = create_environment(catalog, PREFIX)
    side.devices = register_fleet(env_settings, credentials, PREFIX)
    load_seconds(side.transform_table, side.devices, 0, 3600)
    side.hours_loaded = 1
    side.runner = TransformRunner(env_settings, credentials, quiet=True)
    timed_run(side.runner, full_refresh=True)


def transform_seconds(settings: Settings, side: Side) -> float:
    if side.runner is None:
        prepare_transform(settings, side)
    assert side.runner is not None
    load_seconds(side.transform_table, side.devices, side.hours_loaded * 3600, 3600)
    side.hours_loaded += 1
    return timed_run(side.runner)


def cleanup(settings: Settings) -> None:
    # The catalog is the same for every prefix; the prefix picks the namespaces.
    drop_environment(iceberg_catalog(settings, load(settings), s3_key="ingest"), PREFIX)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One round of ingest or gateway takes seconds and varies by ±20 % on 2 shared
    # cores; a transform round takes minutes and varies less.
    # Even, so that each side goes first in as many rounds as the other.
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--transform-rounds", type=int, default=2)
    parser.add_argument("--readings", type=int, default=1_000_000, help="per ingest round")
    parser.add_argument("--seconds", type=float, default=10.0, help="per gateway round")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ingest", "gateway", "transform"])
    args = parser.parse_args()
    sides = [Side("on", dict(BENCH_ENVIRONMENT)), Side("off", OPEN_ENVIRONMENT)]
    for side in sides:
        with environment(side.variables) as settings:
            console.print(f"starting the benchmark stack with security {side.name}")
            Stack(settings, console).up()
    bodies = batch_bodies(int(args.seconds) + 2)
    gc.collect()
    gc.freeze()

    workloads: dict[str, tuple[str, Callable[[Settings, Side], float]]] = {
        "ingest": ("readings/s", lambda s, side: ingest_rate(s, args.readings)),
        "gateway": ("readings/s", lambda s, side: gateway_rate(s, side, args.seconds, bodies)),
        "transform": ("s", transform_seconds),
    }
    for round_number in range(1, args.rounds + 1):
        # Alternate which side goes first, so neither always follows the other's writes.
        order = sides if round_number % 2 else sides[::-1]
        for workload, (unit, measure) in workloads.items():
            if workload in args.skip or (
                workload == "transform" and round_number > args.transform_rounds
            ):
                continue
            for side in order:
                with environment(side.variables) as settings:
                    # Neither side pays for the writes and collections the other left.
                    os.sync()
                    settle(limit=25.0, max_wait=60.0)
                    started = time.perf_counter()
                    value = measure(settings, side)
                    side.record(workload, value)
                    console.print(
                        f"round {round_number} {workload:9} security {side.name:3}: "
                        f"{value:12,.1f} {unit} ({time.perf_counter() - started:.0f} s)"
                    )
    if "transform" not in args.skip:
        for side in sides:
            with environment(side.variables) as settings:
                cleanup(settings)

    targets = Targets()
    print(f"security on vs off, the median of each side (target ≤ {TARGET:.0%} slower):")
    for workload, (unit, _) in workloads.items():
        if workload in args.skip:
            continue
        on_figures, off_figures = (side.figures[workload] for side in sides)
        on, off = statistics.median(on_figures), statistics.median(off_figures)
        # Rates: slower means fewer per second; durations: slower means more seconds.
        slower = off / on - 1 if unit == "readings/s" else on / off - 1
        print(
            f"  {workload:9} on {on:12,.1f} {unit:10} off {off:12,.1f} {unit:10} "
            f"security costs {slower:+.1%} ({len(on_figures)} rounds, on "
            f"{min(on_figures):,.1f}-{max(on_figures):,.1f}, off "
            f"{min(off_figures):,.1f}-{max(off_figures):,.1f})"
        )
        targets.check(f"{workload}: security on ≤ {TARGET:.0%} slower than off",
                      slower <= TARGET, f"{slower:+.1%}")  # fmt: skip
    print(f"(transform: incremental run of one new hour, {PER_HOUR:,} readings of "
          f"{DEVICES} devices x {len(METRICS)} metrics)")  # fmt: skip
    targets.exit()


if __name__ == "__main__":
    main()
