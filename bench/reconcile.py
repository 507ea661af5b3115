"""`lakehouse reconcile` on the transform benchmark's lakehouse.

On the benchmarks' own stack: bronze of N readings (default 10 M: 100 devices x 4
metrics x 1 reading/s) arriving as a live fleet's would, the oldest ~7 hours ago and
the newest now, committed hour by hour as the consumer does; a full transform. Then
`reconcile` over the full window and over the last hour, each next to the baseline
measured in the same run: one `count(*)` over bronze, the least a reconciliation reads.
Targets: last hour ≤ 5 s, full window ≤ 60 s, every reading accounted for.

Usage: python -m bench.reconcile [--readings 10000000] [--repeat 3] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from lakehouse_testing.bronze_writer import create_environment, drop_environment
from rich.console import Console

from bench.targets import Targets
from bench.transform import DEVICES, METRICS, commit, readings, register_fleet, timed_run
from lakehouse.clients import iceberg_catalog, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.reconcile.collect import Reconciler
from lakehouse.reconcile.model import Report, Window
from lakehouse.stack.manager import Stack
from lakehouse.transform.runner import TransformRunner

console = Console()
PREFIX = "rbench_"


def load_live(table, devices, seconds: int) -> int:
    """`seconds` of the fleet, received `seconds` ago up to now (ingested_at follows)."""
    now = time.time()
    written, second = 0, 0
    while second < seconds:
        chunk = min(3600, seconds - second)
        data = readings(devices, second, chunk)
        # Rows run device by device, second by second, metric by metric (see readings).
        offsets = np.tile(np.repeat(np.arange(chunk), len(METRICS)), len(devices))
        arrived = now - seconds + second + offsets
        column = data.schema.get_field_index("ingested_at")
        data = data.set_column(
            column, data.schema.field(column),
            pa.array((arrived * 1_000_000).astype(np.int64), pa.timestamp("us", "UTC")),
        )  # fmt: skip
        commit(table, data, partition=(second // 3600) % 6)
        written += data.num_rows
        second += chunk
    return written


def timed(action, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark namespaces.")
    parser.add_argument(
        "--reuse", action="store_true", help="Time the lakehouse an earlier --keep run left."
    )
    args = parser.parse_args()
    settings = Settings()
    settings.transform.schema_prefix = PREFIX
    settings.serving.publish_after_transform = False
    Stack(settings, Console(stderr=True)).up()
    credentials = load(settings)

    catalog = iceberg_catalog(settings, credentials, s3_key="ingest")
    if not (args.reuse and catalog.table_exists(f"{PREFIX}gold.fct_device_hourly")):
        drop_environment(catalog, PREFIX)
        table = create_environment(catalog, PREFIX)
        devices = register_fleet(settings, credentials, PREFIX)
        started = time.perf_counter()
        loaded = load_live(table, devices, round(args.readings / (DEVICES * len(METRICS))))
        console.print(f"bronze: {loaded:,} rows in {time.perf_counter() - started:.1f} s")
        runner = TransformRunner(settings, credentials, quiet=True)
        console.print(f"full transform: {timed_run(runner, full_refresh=True):.1f} s")

    cursor = trino_connection(settings).cursor()

    def count_bronze() -> None:
        cursor.execute(f'select count(*) from lake."{PREFIX}bronze".readings')
        cursor.fetchall()

    baseline, _ = timed(count_bronze, args.repeat)
    reconciler = Reconciler(settings, credentials)
    full_s, full = timed(lambda: reconciler.run(Window()), args.repeat)
    # The last hour of arrivals (the newest readings arrived when bronze was loaded).
    cursor.execute(f'select max(ingested_at) from lake."{PREFIX}bronze".readings')
    since = cursor.fetchall()[0][0] - timedelta(hours=1)
    hour_s, hour = timed(lambda: reconciler.run(Window(since=since)), args.repeat)

    total = full.totals().bronze
    targets = Targets()
    console.rule(f"reconcile at {total:,} bronze readings (median of {args.repeat})")
    console.print(f"baseline: count(*) over bronze {baseline:.2f} s")
    for name, seconds, report, target in (
        ("full window", full_s, full, 60.0), ("last hour", hour_s, hour, 5.0),
    ):  # fmt: skip
        assert isinstance(report, Report)
        console.print(
            f"{name:12} {seconds:6.2f} s ({seconds / baseline:.1f}x baseline), "
            f"{report.totals().bronze:,} readings in bronze, accounted: {report.accounted}"
        )
        for finding in report.discrepancies[:5]:
            console.print(f"  {finding.describe()}")
        targets.check(f"reconcile, {name} ≤ {target:.0f} s", seconds <= target,
                      f"{seconds:.2f} s")  # fmt: skip
        targets.check(f"reconcile, {name}: every reading accounted for", report.accounted,
                      f"{len(report.discrepancies)} discrepancies")  # fmt: skip

    if not args.keep:
        drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), PREFIX)
    targets.exit()


if __name__ == "__main__":
    main()
