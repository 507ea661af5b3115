"""Transform cost against table size, full refresh, and dashboard query latency.

For each bronze size (default 1 M and 10 M rows of 100 devices x 4 metrics x 1
reading/s), in its own namespaces: load bronze as the consumer commits it (rows plus
offsets), publish a full refresh, add one more hour (1.44 M readings), and time the
incremental run that publishes it. Target: incremental(10 M) / incremental(1 M) ≤ 2,
i.e. the cost follows the new data, not the table. The fixed cost of a run (a forced
run with nothing new) is printed as the baseline of the pipeline itself.

Then gold queries of the kind dashboards send, against the largest environment:
target p95 ≤ 1 s, next to the round trip of `select 1` measured in the same run.

Usage: python -m bench.transform [--sizes 1000000 10000000] [--queries 30] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from lakehouse_testing.bronze_writer import create_environment, drop_environment
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from rich.console import Console

from bench.targets import Targets
from ingest.offsets import commit_with_offsets, read_offsets
from ingest.readings import READINGS_ARROW
from lakehouse import registry
from lakehouse.clients import iceberg_catalog, postgres_connection, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.transform.runner import TransformRunner

console = Console()
DEVICES = 100
METRICS = ("temperature", "humidity", "pressure", "battery")
BASE = np.array([21.0, 55.0, 1013.0, 80.0])
SWING = np.array([4.0, 10.0, 6.0, 5.0])
PER_HOUR = DEVICES * len(METRICS) * 3600
START = datetime(2026, 10, 1, tzinfo=UTC)


def readings(
    devices: list[tuple[str, str, str]],
    first_second: int,
    seconds: int,
    *,
    step: int = 1,
    start: datetime = START,
) -> pa.Table:
    """`seconds` seconds of every device and metric from `start` + first_second, one
    reading of each every `step` seconds."""
    n_metrics = len(METRICS)
    offsets = np.arange(0, seconds, step)
    samples = len(offsets)
    rows = len(devices) * samples * n_metrics
    device = np.repeat(np.arange(len(devices)), samples * n_metrics)
    second = first_second + np.tile(np.repeat(offsets, n_metrics), len(devices))
    metric = np.tile(np.arange(n_metrics), len(devices) * samples)
    rng = np.random.default_rng(first_second)
    value = (
        BASE[metric]
        + SWING[metric] * np.sin(2 * np.pi * second / 86_400)
        + rng.normal(0, 0.3, rows)
        + np.where(rng.random(rows) < 0.001, 25.0, 0.0)  # occasional spikes
    )
    start_us = int(start.timestamp() * 1_000_000)
    now_us = int(time.time() * 1_000_000)
    ids, tenants, sites = (pa.array([d[i] for d in devices]) for i in range(3))
    take = pa.array(device)
    columns = {
        "device_id": ids.take(take),
        "tenant": tenants.take(take),
        "site": sites.take(take),
        "seq": pa.array(second * n_metrics + metric + 1, pa.int64()),
        "ts": pa.array(start_us + second * 1_000_000, pa.timestamp("us", "UTC")),
        "metric": pa.array(np.array(METRICS)[metric]),
        "value": pa.array(value),
        "unit": pa.nulls(rows, pa.string()),
        "attrs": pa.nulls(rows, READINGS_ARROW.field("attrs").type),
        "ingested_at": pa.array(np.full(rows, now_us), pa.timestamp("us", "UTC")),
        "source": pa.array(np.full(rows, "kafka")),
        "source_topic": pa.array(np.full(rows, "readings")),
        "source_partition": pa.nulls(rows, pa.int32()),
        "source_offset": pa.nulls(rows, pa.int64()),
        "batch_id": pa.nulls(rows, pa.string()),
        "source_file": pa.nulls(rows, pa.string()),
        "source_line": pa.nulls(rows, pa.int64()),
    }
    return pa.table(columns, schema=READINGS_ARROW)


def register_fleet(
    settings: Settings,
    credentials,
    prefix: str,
    where: Callable[[str], tuple[float, float]] = lambda site: (50.0, 8.0),
    since: datetime = START - timedelta(days=1),
) -> list[tuple[str, str, str]]:
    """DEVICES devices of two tenants on ten sites (lat, lon from `where`), registered
    once and dated back to `since` at the latest; returns (device, tenant, site) of each."""
    devices = [
        (f"{prefix}d{i:03}", f"{prefix}t{i % 2}", f"{prefix}s{i % 10}") for i in range(DEVICES)
    ]
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        known = registry.registered(conn, [device for device, _, _ in devices])
        for device, tenant, site in devices:
            if device not in known:
                lat, lon = where(site)
                registry.register(conn, device, tenant=tenant, site=site, lat=lat, lon=lon,
                                  since=since)  # fmt: skip
        conn.execute(
            "update registry.devices set created_at = %s "
            "where device_id = any(%s) and created_at > %s",
            (since, [device for device, _, _ in devices], since),
        )
    return devices


def commit(table, data: pa.Table, partition: int) -> None:
    """Commit as a consumer of `partition` would: one offset per reading."""
    table.refresh()
    start = read_offsets(table, "readings").get(partition)
    first = start or 0
    data = data.set_column(
        data.schema.get_field_index("source_partition"), "source_partition",
        pa.array(np.full(data.num_rows, partition), pa.int32()),
    ).set_column(
        data.schema.get_field_index("source_offset"), "source_offset",
        pa.array(np.arange(first, first + data.num_rows), pa.int64()),
    )  # fmt: skip
    commit_with_offsets(
        table, data, topic="readings", expected={partition: start},
        new={partition: first + data.num_rows},
    )  # fmt: skip


def load_seconds(
    table, devices, first_second: int, seconds: int, *, step: int = 1, start: datetime = START
) -> int:
    """Append in commits of 3600 samples per series (an hour at one reading a second),
    each on its own partition (as 6 consumers would)."""
    written, second, span = 0, first_second, 3600 * step
    while second < first_second + seconds:
        chunk = min(span, first_second + seconds - second)
        data = readings(devices, second, chunk, step=step, start=start)
        commit(table, data, partition=(second // span) % 6)
        written += data.num_rows
        second += chunk
    return written


def timed_run(runner: TransformRunner, **kwargs: bool) -> float:
    started = time.perf_counter()
    report = runner.run(**kwargs)
    seconds = time.perf_counter() - started
    if report.outcome != "published":
        raise SystemExit(f"run {report.run_id} {report.outcome}: {report.error}")
    return seconds


@dataclass(frozen=True)
class Environment:
    """Namespaces of their own (`prefix`) with an empty bronze and a registered fleet."""

    settings: Settings
    catalog: Catalog
    table: Table
    devices: list[tuple[str, str, str]]
    runner: TransformRunner


def prepare_environment(
    settings: Settings, credentials: Credentials, prefix: str, *, serving: bool = True
) -> Environment:
    """An environment under `prefix`, dropped first if an earlier run left one.
    `serving`: whether its runs publish the serving tables, as make up's do."""
    env_settings = settings.model_copy(deep=True)
    env_settings.transform.schema_prefix = prefix
    env_settings.serving.publish_after_transform = serving
    catalog = iceberg_catalog(env_settings, credentials, s3_key="ingest")
    drop_environment(catalog, prefix)
    table = create_environment(catalog, prefix)
    devices = register_fleet(env_settings, credentials, prefix)
    runner = TransformRunner(env_settings, credentials, quiet=True)
    return Environment(env_settings, catalog, table, devices, runner)


def environment(
    settings: Settings, credentials: Credentials, size: int
) -> tuple[Settings, dict[str, float]]:
    prefix = f"bench{size // 1_000_000}m_"
    env = prepare_environment(settings, credentials, prefix)
    table, devices, runner = env.table, env.devices, env.runner
    seconds = round(size / (DEVICES * len(METRICS)))
    started = time.perf_counter()
    loaded = load_seconds(table, devices, 0, seconds)
    console.print(f"({prefix}) bronze: {loaded:,} rows in {time.perf_counter() - started:.1f} s")
    figures = {"rows": loaded, "full_refresh": timed_run(runner, full_refresh=True)}
    console.print(f"({prefix}) full refresh: {figures['full_refresh']:.1f} s")
    figures["fixed"] = timed_run(runner, force=True)
    console.print(f"({prefix}) forced run with nothing new: {figures['fixed']:.1f} s")
    load_seconds(table, devices, seconds, 3600)
    figures["incremental"] = timed_run(runner)
    console.print(f"({prefix}) incremental run, one new hour ({PER_HOUR:,} readings): "
                  f"{figures['incremental']:.1f} s")  # fmt: skip
    return env.settings, figures


def dashboard_queries(settings: Settings, prefix: str) -> dict[str, str]:
    p = f"lake.{prefix}"
    return {
        "site temperature, hourly, last 24 h": (
            f"select hour, avg(value_avg), min(value_min), max(value_max) "
            f"from {p}gold.fct_device_hourly where site = '{prefix}s3' and metric = 'temperature' "
            f"and hour >= (select max(hour) from {p}gold.fct_device_hourly) - interval '24' hour "
            f"group by hour order by hour"
        ),
        "site KPIs, daily": (
            f"select day, metric, readings, devices_reporting, value_avg, uptime_pct "
            f"from {p}gold.fct_site_daily where tenant = '{prefix}t1' order by day desc, metric"
        ),
        "fleet health": (
            f"select device_id, last_seen, uptime_pct, gaps from {p}gold.device_health "
            f"where tenant = '{prefix}t0' order by uptime_pct limit 50"
        ),
        "one device, hourly, a week": (
            f"select hour, metric, value_avg, value_stddev from {p}gold.fct_device_hourly "
            f"where device_id = '{prefix}d042' order by hour desc, metric limit 700"
        ),
    }


def query_latency(settings: Settings, sql: str, repeat: int) -> list[float]:
    cursor = trino_connection(settings).cursor()
    cursor.execute(sql)
    cursor.fetchall()  # warm-up (planning caches, metadata)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        cursor.execute(sql)
        cursor.fetchall()
        times.append(time.perf_counter() - started)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark namespaces.")
    args = parser.parse_args()
    settings = Settings()
    credentials = load(settings)

    results = {}
    environments = []
    for size in sorted(args.sizes):
        env_settings, figures = environment(settings, credentials, size)
        results[size] = figures
        environments.append(env_settings)

    targets = Targets()
    smallest, largest = min(results), max(results)
    ratio = results[largest]["incremental"] / results[smallest]["incremental"]
    console.rule("transform")
    for f in results.values():
        console.print(
            f"bronze {f['rows']:>12,} rows: incremental (+1 h, {PER_HOUR:,}) "
            f"{f['incremental']:6.1f} s | fixed cost of a run {f['fixed']:5.1f} s | "
            f"full refresh {f['full_refresh']:6.1f} s"
        )
    console.print(
        f"incremental {results[largest]['rows']:,} / {results[smallest]['rows']:,} rows: "
        f"ratio {ratio:.2f}"
    )
    targets.check("incremental run, largest / smallest bronze ≤ 2", ratio <= 2, f"{ratio:.2f}")

    console.rule("dashboard queries on gold")
    largest_env = environments[-1]
    baseline = query_latency(largest_env, "select 1", args.queries)
    console.print(f"baseline select 1: p50 {statistics.median(baseline) * 1000:.0f} ms")
    worst = 0.0
    for name, sql in dashboard_queries(largest_env, largest_env.transform.schema_prefix).items():
        times = query_latency(largest_env, sql, args.queries)
        worst = max(worst, p95(times))
        console.print(
            f"{name:38} p50 {statistics.median(times) * 1000:5.0f} ms  "
            f"p95 {p95(times) * 1000:5.0f} ms  "
            f"({p95(times) / statistics.median(baseline):.1f}x select 1)"
        )
    console.print(f"worst p95 {worst * 1000:.0f} ms")
    targets.check("dashboard queries on gold, worst p95 ≤ 1000 ms", worst <= 1,
                  f"{worst * 1000:.0f} ms")  # fmt: skip

    if not args.keep:
        for env_settings in environments:
            drop_environment(
                iceberg_catalog(env_settings, credentials, s3_key="ingest"),
                env_settings.transform.schema_prefix,
            )
    targets.exit()


if __name__ == "__main__":
    main()
