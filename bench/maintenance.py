"""Maintenance: queries before and after compaction, the cost of a pass, and bronze's
file count under continuous ingestion with maintenance running.

On the benchmarks' own stack, in namespaces of its own:
(a) bronze gets 1,000 small commits (as 5-second consumer commits make) and a gold
    table of hourly aggregates 1,000 small appends; a typical query on each is timed
    before and after one maintenance pass (target: ≥ 5x faster after);
(b) the pass's cost: compaction and garbage collection, against the bytes maintained;
(c) a consumer process ingests 1,000 readings/s for --soak-minutes while maintenance
    runs every minute: bronze's data file count after each pass must stay bounded.

Usage: python -m bench.maintenance [--commits 1000] [--soak-minutes 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer
from lakehouse_testing.bronze_writer import create_environment, drop_environment
from pyiceberg.transforms import DayTransform
from rich.console import Console

from bench.ingest import drop_topic, make_topic
from bench.targets import Targets
from bench.transform import commit, readings, register_fleet
from lakehouse.clients import iceberg_catalog, kafka_config, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.maintain.runner import Maintainer
from lakehouse.stack.manager import Stack

console = Console()
PREFIX = "mbench_"
SECONDS_PER_COMMIT = 5


def bronze_small_commits(table, devices, commits: int) -> int:
    """`commits` commits of SECONDS_PER_COMMIT seconds of the fleet each."""
    written = 0
    for i in range(commits):
        data = readings(devices, i * SECONDS_PER_COMMIT, SECONDS_PER_COMMIT)
        commit(table, data, partition=i % 6)
        written += data.num_rows
    return written


def gold_small_appends(catalog, bronze: pa.Table, commits: int) -> int:
    """A gold-like table of hourly aggregates per device and metric, one hour a commit."""
    name = f"{PREFIX}gold.hourly"
    if catalog.table_exists(name):
        catalog.drop_table(name)
    hours = pc.floor_temporal(bronze.column("ts"), unit="hour")
    grouped = (
        bronze.append_column("hour", hours)
        .group_by(["device_id", "site", "metric", "hour"])
        .aggregate([("value", "count"), ("value", "mean"), ("value", "min"), ("value", "max")])
    )
    schema = grouped.schema
    table = catalog.create_table(name, schema=schema)
    with table.update_spec() as spec:
        spec.add_field("hour", DayTransform(), "hour_day")
    order = pc.sort_indices(grouped, [("hour", "ascending")])
    grouped = grouped.take(order)
    per_commit = max(grouped.num_rows // commits, 1)
    written = 0
    for start in range(0, grouped.num_rows, per_commit):
        chunk = grouped.slice(start, per_commit)
        table.append(chunk)
        written += chunk.num_rows
    return written


def median_seconds(settings: Settings, sql: str, repeat: int) -> tuple[float, list]:
    cursor = trino_connection(settings).cursor()
    times, rows = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        cursor.execute(sql)
        rows = cursor.fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


QUERIES = {
    "bronze": (
        f'select metric, count(*), round(avg(value), 6), max(value) from lake."{PREFIX}bronze"'
        ".readings where device_id like '%d00%' group by metric order by metric"
    ),
    "gold": (
        f"select site, metric, date_trunc('day', hour), sum(value_count), "
        f'round(avg(value_mean), 6) from lake."{PREFIX}gold".hourly '
        "group by 1, 2, 3 order by 1, 2, 3"
    ),
}


def data_files(settings: Settings, table: str) -> int:
    cursor = trino_connection(settings).cursor()
    cursor.execute(f'select count(*) from lake."{PREFIX}{table.split(".")[0]}".'
                   f'"{table.split(".")[1]}$files"')  # fmt: skip
    return int(cursor.fetchall()[0][0])


def file_bound(settings: Settings) -> int:
    """Most data files bronze may hold after a pass: files of the target size, plus in
    each partition the small files too few to compact (fewer than min_small_files)."""
    policy = settings.maintain.policies["bronze"]
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        f"select count(distinct partition), count_if(file_size_in_bytes >= "
        f'{policy.small_file_bytes}) from lake."{PREFIX}bronze"."readings$files"'
    )
    partitions, large = cursor.fetchall()[0]
    return int(partitions) * (policy.min_small_files - 1) + int(large)


def soak(settings: Settings, credentials, minutes: float, rate: int) -> list[tuple[int, int, int]]:
    """Ingest `rate` readings/s through a consumer process into PREFIX bronze, with a
    maintenance pass every minute; (files before, files after, bound) of each pass."""
    topic = make_topic(settings, "bench-maint")
    env = {**os.environ, **settings.to_env(), "LAKEHOUSE_INGEST_NAMESPACE": f"{PREFIX}bronze"}
    consumer = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "ingest", "kafka", "--topic", topic,
         "--group", f"bench-{topic}", "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    stop = threading.Event()

    def produce() -> None:
        producer = Producer(kafka_config(settings, "simulate", **{"linger.ms": 20}))
        seq, started, per_message = 0, time.time(), 50
        while not stop.is_set():
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            batch = [{"seq": seq + i, "ts": now, "metric": "temperature", "value": 20.0}
                     for i in range(per_message)]  # fmt: skip
            producer.produce(topic, orjson.dumps(
                {"device_id": f"soak-{seq % 7}", "tenant": "bench", "readings": batch}
            ))  # fmt: skip
            producer.poll(0)
            seq += per_message
            ahead = seq / rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(30)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    maintainer = Maintainer(settings, credentials, schema_prefix=PREFIX)
    passes: list[tuple[int, int, int]] = []
    deadline = time.time() + minutes * 60
    try:
        while time.time() < deadline:
            next_pass = time.time() + 60
            time.sleep(max(next_pass - time.time(), 0))
            report = maintainer.run(gc=True, retention=False)
            (bronze,) = [t for t in report.tables if t.table == f"{PREFIX}bronze.readings"]
            passes.append((bronze.before.files, bronze.after.files, file_bound(settings)))
            console.print(
                f"  pass {len(passes)}: bronze {bronze.before.files} → {bronze.after.files} "
                f"data files (bound {passes[-1][2]}), pass {report.seconds:.1f} s, gc deleted "
                f"{report.gc.deleted_files if report.gc else 0}"
            )
    finally:
        stop.set()
        producer.join(60)
        consumer.terminate()
        consumer.wait(60)
        drop_topic(settings, topic)
    return passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="Readings/s in the soak.")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    Stack(settings, Console(stderr=True)).up()
    credentials = load(settings)
    catalog = iceberg_catalog(settings, credentials, s3_key="trino")
    drop_environment(catalog, PREFIX)
    table = create_environment(catalog, PREFIX)
    devices = register_fleet(settings, credentials, PREFIX)

    started = time.perf_counter()
    rows = bronze_small_commits(table, devices, args.commits)
    console.print(f"bronze: {rows:,} readings in {args.commits} commits, "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    table.refresh()
    gold_rows = gold_small_appends(catalog, table.scan().to_arrow(), args.commits)
    files = {name: data_files(settings, t) for name, t in
             (("bronze", "bronze.readings"), ("gold", "gold.hourly"))}  # fmt: skip
    console.print(f"gold: {gold_rows:,} hourly rows; data files {files}")

    before = {name: median_seconds(settings, sql, args.repeat) for name, sql in QUERIES.items()}
    maintainer = Maintainer(settings, credentials, schema_prefix=PREFIX)
    report = maintainer.run(gc=True, retention=False, gc_grace=timedelta(0))
    after = {name: median_seconds(settings, sql, args.repeat) for name, sql in QUERIES.items()}
    steady = maintainer.run(gc=True, retention=False)

    targets = Targets()
    console.rule(f"queries before and after compaction (median of {args.repeat})")
    for name in QUERIES:
        (b, b_rows), (a, a_rows) = before[name], after[name]
        ratio = b / a
        console.print(
            f"{name:7} {b:6.2f} s → {a:6.2f} s: {ratio:4.1f}x faster; "
            f"same result: {a_rows == b_rows}"
        )
        targets.check(f"{name} query ≥ 5x faster after compaction", ratio >= 5, f"{ratio:.1f}x")
        targets.check(f"{name} query: same result after compaction", a_rows == b_rows)
    console.rule("one maintenance pass")
    maintained = sum(t.before.bytes for t in report.tables)
    for t in report.tables:
        if t.action != "none":
            console.print(f"{t.table}: {t.before.files} → {t.after.files} files, "
                          f"{t.before.bytes / 2**20:.1f} MiB, {t.seconds:.1f} s")  # fmt: skip
    gc = report.gc
    console.print(
        f"pass: {report.seconds:.1f} s for {maintained / 2**20:.1f} MiB of table data "
        f"({report.seconds / max(maintained / 2**30, 1e-9):.0f} s/GiB); garbage collection "
        f"listed {gc.listed_files if gc else 0} files, deleted {gc.deleted_files if gc else 0}"
    )
    console.print(f"next pass with nothing to compact: {steady.seconds:.1f} s")

    if args.soak_minutes > 0:
        console.rule(f"continuous ingestion, {args.rate} readings/s, maintenance every minute")
        passes = soak(settings, credentials, args.soak_minutes, args.rate)
        bounded = all(after <= bound for _, after, bound in passes)
        console.print(
            f"bronze data files after each pass: {[after for _, after, _ in passes]}; most "
            f"before a pass {max(before for before, _, _ in passes)}"
        )
        targets.check(
            "every pass leaves bronze within its bound (partitions x (min_small_files - 1) "
            "+ full-size files)",
            bounded,
            f"after {[after for _, after, _ in passes]}, bounds {[b for _, _, b in passes]}",
        )
    drop_environment(iceberg_catalog(settings, credentials, s3_key="trino"), PREFIX)
    targets.exit()


if __name__ == "__main__":
    main()
