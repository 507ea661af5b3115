"""Soak: the whole platform as `make up` runs it, plus 1,000 readings/s, for an hour.

A platform of this benchmark's own (home `.lakehouse-bench-soak/`, ports from 22300)
runs everything `make up` runs, with its defaults: gateway, consumer, the transform
loop and its serving publish, maintenance, audit, Superset and the demo fleet. Devices
post agent-like batches to the gateway at --rate readings/s for --minutes. Every
--sample-minutes: `lakehouse reconcile` over the whole lake, data files per table,
RSS per service, the transform runs since the last sample and their outcomes, and the
device → serving freshness of a probe device.

Targets: 0 readings unaccounted, 0 failed reconcile calls, 0 failed transform runs,
every service's RSS within 10 % of its value at minute 10 (the baseline, measured in
the same run), data file counts bounded. File counts are read every 30 s: compaction
makes them a saw-tooth, which samples minutes apart would catch at random phases. The
time after minute 10 is cut in thirds; a table is bounded when the most files it held
in the last third is no more than 1.5x the most it held in the first (or 10).

Usage: python -m bench.soak [--minutes 60] [--rate 1000] [--sample-minutes 5] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import bench
from bench.platform import OwnPlatform, lakehouse
from bench.targets import Targets

console = Console()
HOME = Path(__file__).resolve().parent.parent / ".lakehouse-bench-soak"
FIRST_PORT = 22_300
TABLES = (
    "bronze.readings", "silver.readings", "gold.fct_device_hourly",
    "gold.fct_site_daily", "platinum.device_features",
)  # fmt: skip
BASELINE_MINUTE = 10
RSS_TOLERANCE = 0.10
FILE_GROWTH_LIMIT = 1.5
# A batch counts towards a sample's freshness once it was sent this long before it.
SETTLE_SECONDS = 180


@dataclass
class Sample:
    minute: float
    reconcile_ok: bool
    unaccounted: int
    reconcile_seconds: float
    files: dict[str, int]
    rss_mib: dict[str, float]
    pss_mib: dict[str, float]
    runs: dict[str, int]
    run_seconds: list[float]
    freshness: list[float] = field(default_factory=list)


class Sampler:
    """Takes the figures of one sample from the running platform."""

    def __init__(self, started: float, files: FileCounts) -> None:
        from lakehouse.config import Settings
        from lakehouse.credentials import load
        from lakehouse.stack.manager import Stack
        from lakehouse.stack.top import Top

        self.settings = Settings()
        self.credentials = load(self.settings)
        self.top = Top(self.settings, Stack(self.settings, Console(stderr=True)))
        self.started = started
        self.files = files
        self.since = datetime.now(UTC)
        self.top.frame()  # CPU figures are differences: start the counters

    def take(self, freshness: list[float]) -> Sample:
        from lakehouse.stack.process import tree_pss

        result = lakehouse("reconcile", "--json")
        report = json.loads(result.stdout) if result.stdout.strip() else {}
        unaccounted = sum(d.get("readings", 0) for d in report.get("discrepancies", []))
        frame = self.top.frame()
        outcomes, seconds = self._runs()
        return Sample(
            minute=(time.monotonic() - self.started) / 60,
            reconcile_ok=result.returncode == 0,
            unaccounted=unaccounted,
            reconcile_seconds=float(report.get("seconds", 0.0)),
            files=self.files.latest(),
            rss_mib={name: rss / 2**20 for name, rss in frame.rss.items()},
            # Shared pages divided among the processes mapping them: PostgreSQL's shared
            # buffers count once, not once per backend that touched them.
            pss_mib={s.name: tree_pss(s.pid) / 2**20 for s in frame.statuses if s.pid},
            runs=outcomes,
            run_seconds=seconds,
            freshness=freshness,
        )

    def _runs(self) -> tuple[dict[str, int], list[float]]:
        from lakehouse import transform_runs as runs
        from lakehouse.clients import postgres_connection

        until = datetime.now(UTC)
        with postgres_connection(self.settings, self.credentials) as conn:
            recent = [
                r for r in runs.recent(conn, limit=1000)
                if r.finished_at is not None and self.since <= r.finished_at < until
            ]  # fmt: skip
        self.since = until
        outcomes: dict[str, int] = {}
        for record in recent:
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
        return outcomes, [r.seconds for r in recent if r.seconds is not None]


class FileCounts(threading.Thread):
    """Data files per table every `every` seconds: (minute, counts) in `seen`."""

    def __init__(self, started: float, every: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.started, self.every = started, every
        self.seen: list[tuple[float, dict[str, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from lakehouse.clients import trino_connection
        from lakehouse.config import Settings

        cursor = trino_connection(Settings()).cursor()
        while not self.stop.wait(self.every):
            self.seen.append(((time.monotonic() - self.started) / 60, count_files(cursor)))

    def latest(self) -> dict[str, int]:
        return self.seen[-1][1] if self.seen else {}


def count_files(cursor: Any) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        layer, name = table.split(".")
        try:
            cursor.execute(f'select count(*) from lake.{layer}."{name}$files"')
            counts[table] = int(cursor.fetchall()[0][0])
        except Exception:  # not published yet
            counts[table] = 0
    return counts


def show(sample: Sample) -> None:
    runs = ", ".join(f"{k} {v}" for k, v in sorted(sample.runs.items())) or "none"
    median_run = statistics.median(sample.run_seconds) if sample.run_seconds else 0.0
    fresh = (
        f"p50 {statistics.median(sample.freshness):.1f} s, p95 {p95(sample.freshness):.1f} s"
        if sample.freshness
        else "-"
    )
    console.print(
        f"[bold]minute {sample.minute:5.1f}[/] reconcile "
        f"{'ok' if sample.reconcile_ok else 'FAILED'} ({sample.reconcile_seconds:.1f} s, "
        f"{sample.unaccounted} unaccounted); runs {runs} (median {median_run:.1f} s); "
        f"device→serving {fresh}; files "
        + " ".join(f"{t.split('.')[1]}={n}" for t, n in sample.files.items())
        + f"; RSS {sum(sample.rss_mib.values()) / 1024:.2f} GiB",
        highlight=False,
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def verdict(
    samples: list[Sample], files: list[tuple[float, dict[str, int]]], targets: Targets
) -> None:
    baseline = next((s for s in samples if s.minute >= BASELINE_MINUTE), samples[0])
    final = samples[-1]
    table = Table(title=f"RSS per service (MiB): minute {baseline.minute:.0f} → end")
    for column in ("service", "baseline", "end", "ratio", "peak", "PSS baseline", "PSS end"):
        table.add_column(column, justify="left" if column == "service" else "right")
    rss_drifted = []
    for name in sorted(baseline.rss_mib):
        start, end = baseline.rss_mib[name], final.rss_mib.get(name, 0.0)
        peak = max(s.rss_mib.get(name, 0.0) for s in samples if s.minute >= baseline.minute)
        ratio = end / start if start else 0.0
        if abs(ratio - 1) > RSS_TOLERANCE:
            rss_drifted.append(f"{name} {ratio:.2f}")
        pss = (baseline.pss_mib.get(name, 0.0), final.pss_mib.get(name, 0.0))
        table.add_row(name, f"{start:.0f}", f"{end:.0f}", f"{ratio:.2f}", f"{peak:.0f}",
                      f"{pss[0]:.0f}", f"{pss[1]:.0f}")  # fmt: skip
    console.print(table)
    # A run shorter than the baseline minute (a trial) judges all it saw.
    after = [(minute, counts) for minute, counts in files if minute >= BASELINE_MINUTE] or files
    third = (after[-1][0] - after[0][0]) / 3 if after else 0.0
    first = [c for m, c in after if m <= after[0][0] + third]
    last = [c for m, c in after if m >= after[-1][0] - third] if after else []
    growing = []
    for name in TABLES:
        early = max((c.get(name, 0) for c in first), default=0)
        late = max((c.get(name, 0) for c in last), default=0)
        bounded = bool(after) and late <= max(FILE_GROWTH_LIMIT * early, 10)
        if not bounded:
            growing.append(name)
        console.print(
            f"{name}: at most {late} data files in the last third, {early} in the first "
            f"(ratio {late / early if early else 0:.2f}; {'bounded' if bounded else 'GROWING'})",
            highlight=False,
        )
    unaccounted = sum(s.unaccounted for s in samples)
    failed_reconciles = sum(not s.reconcile_ok for s in samples)
    failed_runs = sum(
        n for s in samples for outcome, n in s.runs.items()
        if outcome not in ("published", "up_to_date", "audited")
    )  # fmt: skip
    all_runs = [t for s in samples for t in s.run_seconds]
    fresh = [f for s in samples if s.minute >= BASELINE_MINUTE for f in s.freshness]
    if all_runs:
        console.print(
            f"transform runs: {len(all_runs)}, median {statistics.median(all_runs):.1f} s, "
            f"p95 {p95(all_runs):.1f} s"
        )
    if fresh:
        console.print(
            f"device → serving after minute {BASELINE_MINUTE}: p50 "
            f"{statistics.median(fresh):.1f} s, p95 {p95(fresh):.1f} s"
        )
    console.print(
        f"unaccounted {unaccounted}, failed reconciles {failed_reconciles}, "
        f"failed runs {failed_runs}"
    )
    targets.check("0 readings unaccounted", unaccounted == 0, str(unaccounted))
    targets.check("0 failed reconcile calls", failed_reconciles == 0, str(failed_reconciles))
    targets.check("0 failed transform runs", failed_runs == 0, str(failed_runs))
    targets.check(f"RSS within {RSS_TOLERANCE:.0%} of minute {BASELINE_MINUTE}",
                  not rss_drifted, ", ".join(rss_drifted))  # fmt: skip
    targets.check("file counts bounded", not growing, ", ".join(growing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=1000, help="readings/s through the gateway")
    parser.add_argument("--sample-minutes", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="Leave the platform running.")
    args = parser.parse_args()
    assert bench.BENCH_ENVIRONMENT  # replaced below by a platform of this benchmark's own
    from bench.freshness import PER_BATCH, Watcher, register_devices, send

    targets = Targets()
    with OwnPlatform(HOME, FIRST_PORT, console, keep=args.keep) as settings:
        devices = register_devices(settings, max(1, args.rate // PER_BATCH))
        watcher = Watcher(settings, devices[0][0])
        watcher.start()
        sent: list[datetime] = []
        seconds = int(args.minutes * 60)
        sender = threading.Thread(
            target=lambda: asyncio.run(send(settings.gateway.port, devices, seconds, sent)),
            daemon=True,
        )
        console.print(
            f"{len(devices)} devices x {PER_BATCH} readings/s for {args.minutes:g} min, "
            f"a sample every {args.sample_minutes:g} min"
        )
        started = time.monotonic()
        sender.start()
        files = FileCounts(started)
        files.start()
        sampler = Sampler(started, files)
        samples: list[Sample] = []
        measured = 0
        while sender.is_alive():
            sender.join(args.sample_minutes * 60)
            # Batches sent long enough ago to have reached serving by now.
            cutoff = datetime.now(UTC).timestamp() - SETTLE_SECONDS
            settled = measured + sum(1 for b in sent[measured:] if b.timestamp() <= cutoff)
            latencies, _ = watcher.latencies("serving", sent[measured:settled])
            measured = settled
            samples.append(sampler.take(latencies))
            show(samples[-1])
        watcher.stop.set()
        files.stop.set()
        if len(sent) < seconds:
            raise SystemExit(f"the devices stopped after {len(sent)} of {seconds} batches")
        verdict(samples, files.seen, targets)
    targets.exit()


if __name__ == "__main__":
    main()
