"""End-to-end freshness: a reading's device timestamp to its hour in gold and in serving.

(a) Freshness: devices post agent-like batches to the upload gateway at READINGS/s for
    SECONDS (default 1,000/s for 600 s), stamped with the time they are sent, while the
    bronze consumers and the transform loop (as `make up` runs it, at its default
    interval) publish. One device is the probe: each of its batches is visible in gold
    once gold.fct_device_hourly's newest `last_ts` for it reaches the batch's newest
    timestamp, and in serving (what a dashboard reads) once serving.device_hourly's
    does. Target: device → dashboard p95 ≤ 60 s.
(b) Fixed cost of a small run: bronze of 1 M and 10 M rows in namespaces of their own,
    published once, then runs with nothing but one new reading each (the median of
    --repeat runs, as the transform loop runs them: Trino warm, the project parsed once).
    Target: ≤ 10 s at 10 M rows; the ratio 10 M / 1 M shows whether it follows the
    table's size. The baseline measured in the same run is the same on an empty
    environment.

(c) With --platform, freshness, run breakdown and CPU on the platform `make up` runs
    instead (bench.platform_freshness).

Usage: python -m bench.freshness [--seconds 600] [--rate 1000] [--every S]
       [--sizes 1000000 10000000] [--repeat 5] [--skip-freshness] [--skip-fixed-cost]
       python -m bench.freshness --platform [--seconds 600] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from lakehouse_testing.bronze_writer import drop_environment
from rich.console import Console

import bench
from bench.gateway import RawClient
from bench.targets import Targets
from bench.transform import (
    BASE,
    DEVICES,
    METRICS,
    commit,
    load_seconds,
    prepare_environment,
    readings,
    timed_run,
)
from lakehouse import registry
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.config import Settings, SupervisorSettings
from lakehouse.credentials import load

console = Console()
TARGET_P95 = 60.0
TARGET_FIXED = 10.0
PER_BATCH = 100  # readings per device batch, one batch per device per second


# ---------------------------------------------------------------------------------------
# (a) Freshness


def register_devices(settings: Settings, count: int) -> list[tuple[str, str]]:
    """`count` new devices of one bench tenant; (device id, token) of each."""
    run = uuid.uuid4().hex[:6]
    with postgres_connection(settings, load(settings)) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        return [
            (
                f"fresh-{run}-{d}",
                registry.register(
                    conn, f"fresh-{run}-{d}", tenant="bench-fresh", site="bench-fresh-site",
                    lat=52.5, lon=13.4,
                ),
            )
            for d in range(count)
        ]  # fmt: skip


def batch(number: int, sent: float) -> tuple[bytes, datetime]:
    """A second of readings ending at `sent`, gzipped; and its newest timestamp."""
    stamps = [sent - 1 + (i + 1) / PER_BATCH for i in range(PER_BATCH)]
    body = [
        {
            "seq": number * PER_BATCH + i,
            "ts": datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z"),
            "metric": METRICS[i % len(METRICS)],
            "value": round(float(BASE[i % len(METRICS)]) + (number + i) % 50 / 10, 1),
        }
        for i, ts in enumerate(stamps)
    ]
    return gzip.compress(orjson.dumps(body), compresslevel=5), datetime.fromtimestamp(
        stamps[-1], UTC
    )


async def send(
    port: int, devices: list[tuple[str, str]], seconds: int, probe_sent: list[datetime]
) -> None:
    """Every device posts one batch a second for `seconds`; the first is the probe."""
    start = time.time()

    async def device(index: int, token: str) -> None:
        client = RawClient(port)
        for number in range(seconds):
            due = start + number + index / len(devices)
            await asyncio.sleep(max(0.0, due - time.time()))
            body, newest = batch(number, time.time())
            status = await client.post(token, body, f"fresh-{index}-{number}-{start}")
            if status != 202:
                raise RuntimeError(f"device {index} batch {number}: HTTP {status}")
            if index == 0:
                probe_sent.append(newest)
        client.close()

    await asyncio.gather(*(device(i, token) for i, (_, token) in enumerate(devices)))


def _newest(cursor: Any, query: str) -> datetime | None:
    """The one value `query` selects; None while its table is not there yet."""
    try:
        cursor.execute(query)
        newest: datetime | None = cursor.fetchall()[0][0]
        return newest
    except Exception:  # not published (or committed) yet
        return None


class Watcher(threading.Thread):
    """Polls the probe's newest timestamp in each of `layers` (bronze, gold, serving),
    once a second."""

    def __init__(
        self, settings: Settings, probe: str, layers: tuple[str, ...] = ("gold", "serving")
    ) -> None:
        super().__init__(daemon=True)
        self.settings, self.probe = settings, probe
        self.seen: dict[str, list[tuple[float, datetime]]] = {layer: [] for layer in layers}
        self.stop = threading.Event()

    def run(self) -> None:
        credentials = load(self.settings)
        cursor = trino_connection(self.settings).cursor()
        schema = self.settings.serving.schema_name
        with postgres_connection(self.settings, credentials) as conn:
            conn.autocommit = True
            while not self.stop.wait(1.0):
                if "bronze" in self.seen:
                    self._note("bronze", self._newest_in_bronze(cursor))
                if "gold" in self.seen:
                    self._note("gold", self._newest_in_gold(cursor))
                if "serving" in self.seen:
                    self._note("serving", self._newest_in_serving(conn, schema))

    def _newest_in_bronze(self, cursor: Any) -> datetime | None:
        # The probe's recent rows only: bronze grows by a thousand rows a second.
        return _newest(
            cursor,
            "select max(ts) from lake.bronze.readings where device_id = "
            f"'{self.probe}' and ts > current_timestamp - interval '10' minute",
        )

    def _newest_in_gold(self, cursor: Any) -> datetime | None:
        return _newest(
            cursor,
            "select max(last_ts) from lake.gold.fct_device_hourly "
            f"where device_id = '{self.probe}'",
        )

    def _newest_in_serving(self, conn: Any, schema: str) -> datetime | None:
        try:
            row = conn.execute(
                f"select max(last_ts) from {schema}.device_hourly where device_id = %s",
                (self.probe,),
            ).fetchone()
        except Exception:  # nothing served yet
            return None
        return row[0] if row else None

    def _note(self, layer: str, newest: datetime | None) -> None:
        if newest is not None:
            self.seen[layer].append((time.time(), newest.astimezone(UTC)))

    def latencies(self, layer: str, sent: list[datetime]) -> tuple[list[float], int]:
        """Seconds from each batch's newest timestamp to the first poll that showed it;
        and how many batches were never seen."""
        seen = self.seen[layer]
        result, missing = [], 0
        for newest in sent:
            at = next((when for when, shown in seen if shown >= newest), None)
            if at is None:
                missing += 1
            else:
                result.append(at - newest.timestamp())
        return result, missing


def freshness(settings: Settings, seconds: int, rate: int, every: float) -> dict[str, Any]:
    devices = register_devices(settings, max(1, rate // PER_BATCH))
    console.print(
        f"{len(devices)} devices x {PER_BATCH} readings/s = {len(devices) * PER_BATCH:,} "
        f"readings/s for {seconds} s; transform every {every:g} s"
    )
    loop = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "transform", "--every", f"{every:g}", "--quiet",
         "--metrics-port", "0", "--audit-every", "0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watcher = Watcher(settings, devices[0][0])
    watcher.start()
    sent: list[datetime] = []
    try:
        asyncio.run(send(settings.gateway.port, devices, seconds, sent))
        deadline = time.time() + 4 * every + 120
        while time.time() < deadline and not (
            watcher.seen["serving"] and watcher.seen["serving"][-1][1] >= sent[-1]
        ):
            time.sleep(2)
    finally:
        watcher.stop.set()
        loop.terminate()
        _, errors = loop.communicate(timeout=300)
    runs = [line for line in errors.splitlines() if line.startswith("run ")]
    published = [line for line in runs if "published" in line]
    console.print(f"transform runs: {len(runs)}, published {len(published)}")
    warmup = min(60, seconds // 5)  # the first runs see the consumers start
    measured = sent[warmup:]
    figures: dict[str, Any] = {"runs": len(runs)}
    for layer in ("gold", "serving"):
        values, missing = watcher.latencies(layer, measured)
        if not values:
            raise SystemExit(f"no probe batch became visible in {layer}")
        figures[layer] = (statistics.median(values), p95(values), missing)
    return figures


# ---------------------------------------------------------------------------------------
# (b) Fixed cost of a small run


def one_reading_run(
    settings: Settings, credentials: Any, size: int, repeat: int
) -> dict[str, float]:
    """Bronze of `size` rows published once; then `repeat` runs of one new reading each."""
    prefix = f"fresh{size // 1_000_000}m_" if size else "fresh0m_"
    env = prepare_environment(settings, credentials, prefix, serving=False)
    table, devices, runner = env.table, env.devices, env.runner
    seconds = round(size / (DEVICES * len(METRICS)))
    started = time.perf_counter()
    loaded = load_seconds(table, devices, 0, seconds) if seconds else 0
    figures = {"rows": float(loaded), "load": time.perf_counter() - started}
    # The first run builds everything (and the reference tables): not the figure.
    commit(table, readings(devices, seconds, 1).slice(0, 1), partition=0)
    figures["first"] = timed_run(runner)
    # The loop `make up` runs keeps Trino warm and its parse of the project: the figure
    # is the median of `repeat` such runs (the first of them is shown too).
    small = []
    for number in range(repeat):
        commit(table, readings(devices, seconds + 1 + number, 1).slice(0, 1), partition=0)
        small.append(timed_run(runner))
    figures["one_reading"] = statistics.median(small)
    figures["one_reading_first"] = small[0]
    console.print(
        f"({prefix}) bronze {loaded:,} rows: first run {figures['first']:.1f} s, "
        f"then runs of one new reading " + ", ".join(f"{s:.1f}" for s in small) + " s"
    )
    drop_environment(env.catalog, prefix)
    return figures


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=int, default=1000, help="Readings per second.")
    parser.add_argument(
        "--every", type=float, default=None,
        help="Seconds between transform runs (default: what `make up` runs).",
    )  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--platform", action="store_true",
        help="Measure on the platform `make up` runs (demo fleet included), before and now.",
    )  # fmt: skip
    parser.add_argument(
        "--demo-seconds", type=int, default=120,
        help="With --platform: seconds the CPU is measured at the demo's load alone.",
    )  # fmt: skip
    parser.add_argument("--skip-freshness", action="store_true")
    parser.add_argument("--skip-fixed-cost", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=5, help="Runs of one new reading per size (median)."
    )
    args = parser.parse_args()
    if args.platform:
        from bench import platform_freshness

        platform_freshness.main(args.seconds, args.rate, args.demo_seconds)
    assert bench.BENCH_ENVIRONMENT  # the bench stack's own home and ports
    settings = Settings()
    credentials = load(settings)
    # The isolated bench stack runs no loop of its own; this one runs at make up's interval.
    every = args.every or SupervisorSettings.model_fields["transform_every"].default
    targets = Targets()

    if not args.skip_freshness:
        console.rule("device → gold → dashboard")
        figures = freshness(settings, args.seconds, args.rate, every)
        for layer in ("gold", "serving"):
            median, high, missing = figures[layer]
            console.print(
                f"device → {layer:8} p50 {median:5.1f} s  p95 {high:5.1f} s"
                + (f"  ({missing} batches not seen)" if missing else "")
                + f"  = {high / every:.2f} x the transform interval ({every:g} s)"
            )
        high = figures["serving"][1]
        console.print(f"device → dashboard p95 {high:.1f} s")
        targets.check(f"device → dashboard p95 ≤ {TARGET_P95:g} s", high <= TARGET_P95,
                      f"{high:.1f} s")  # fmt: skip
        # A batch never seen is later than any p95 of the ones that were.
        missing = figures["serving"][2]
        targets.check("every probe batch reached the dashboard", not missing,
                      f"{missing} not seen" if missing else "")  # fmt: skip

    if not args.skip_fixed_cost:
        console.rule("fixed cost of a small run")
        baseline = one_reading_run(settings, credentials, 0, args.repeat)
        results = {
            size: one_reading_run(settings, credentials, size, args.repeat)
            for size in sorted(args.sizes)
        }
        for size, f in results.items():
            console.print(
                f"bronze {size:>12,} rows: one new reading {f['one_reading']:5.1f} s median "
                f"(first {f['one_reading_first']:.1f} s) "
                f"({f['one_reading'] / baseline['one_reading']:.2f} x an empty environment's "
                f"{baseline['one_reading']:.1f} s)"
            )
        largest, smallest = results[max(results)], results[min(results)]
        console.print(
            f"{max(results):,} / {min(results):,} rows: ratio "
            f"{largest['one_reading'] / smallest['one_reading']:.2f}"
        )
        console.print(f"fixed cost at {max(results):,} rows {largest['one_reading']:.1f} s")
        targets.check(
            f"fixed cost of a run at {max(results):,} rows ≤ {TARGET_FIXED:g} s",
            largest["one_reading"] <= TARGET_FIXED,
            f"{largest['one_reading']:.1f} s",
        )
    targets.exit()


if __name__ == "__main__":
    main()
