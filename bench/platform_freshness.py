"""`python -m bench.freshness --platform`: freshness on the platform `make up` runs.

A platform of this benchmark's own (home `.lakehouse-bench-platform/`, ports from
22400) runs everything `make up` runs, demo fleet included. It is measured twice in the
same run, from nothing each time: first as the transform loop ran before runs followed
bronze's commits (a run every 30 s: the baseline), then with the current defaults. Each
time: the platform's CPU share at the demo's load alone, then devices post agent-like
batches to the gateway at --rate readings/s for --seconds while a probe device's newest
reading is looked for in bronze (Trino), gold and serving (what a dashboard reads)
once a second; then where the runs' seconds went (transform.runs.phases).

Targets (current defaults): device → serving p95 ≤ 15 s and p50 ≤ 8 s; device → bronze
p95 ≤ 2 s; a run's median ≤ 4 s, serving publish included; a run with nothing new
≤ 0.5 s; the platform's CPU ≤ 25 % of the machine at the demo's load and ≤ 70 % at
--rate.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.platform import OwnPlatform
from bench.targets import Targets

console = Console()
HOME = Path(__file__).resolve().parent.parent / ".lakehouse-bench-platform"
FIRST_PORT = 22_400
# The first runs after start build every layer and the audit runs once: not the figure.
WARMUP_SECONDS = 120
LAYERS = ("bronze", "gold", "serving")
BASELINE = {"LAKEHOUSE_SUPERVISOR_TRANSFORM_WATCH": "0"}


@dataclass
class Figures:
    label: str
    latency: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    cpu_demo: float = 0.0
    cpu_load: float = 0.0
    runs: int = 0
    run_median: float = 0.0
    idle_median: float | None = None
    idle_runs: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    failed_runs: int = 0


def cpu_share(top: Any, seconds: float) -> float:
    """The platform's CPU over the next `seconds`, as a share of the whole machine."""
    top.frame()  # the counters start here
    time.sleep(seconds)
    frame = top.frame()
    return float(sum(frame.cpu.values())) / (100 * (os.cpu_count() or 1))


def measure(label: str, overrides: dict[str, str], seconds: int, rate: int, idle: int) -> Figures:
    from bench.freshness import PER_BATCH, Watcher, p95, register_devices, send
    from lakehouse.stack.manager import Stack
    from lakehouse.stack.top import Top

    console.rule(label)
    figures = Figures(label)
    with OwnPlatform(HOME, FIRST_PORT, console, overrides) as settings:
        top = Top(settings, Stack(settings, Console(stderr=True)))
        platform_started = datetime.now(UTC)
        time.sleep(WARMUP_SECONDS)
        figures.cpu_demo = cpu_share(top, idle)
        console.print(f"demo fleet only: the platform uses {figures.cpu_demo:.0%} of the machine")
        devices = register_devices(settings, max(1, rate // PER_BATCH))
        watcher = Watcher(settings, devices[0][0], LAYERS)
        watcher.start()
        sent: list[datetime] = []
        load_started = datetime.now(UTC)
        sender = threading.Thread(
            target=lambda: asyncio.run(send(settings.gateway.port, devices, seconds, sent)),
            daemon=True,
        )
        sender.start()
        time.sleep(min(30, seconds / 4))  # CPU once the load is steady
        figures.cpu_load = cpu_share(top, seconds - min(30, seconds / 4) - 5)
        sender.join()
        load_ended = datetime.now(UTC)
        deadline = time.time() + 180
        while time.time() < deadline and not (
            watcher.seen["serving"] and sent and watcher.seen["serving"][-1][1] >= sent[-1]
        ):
            time.sleep(2)
        watcher.stop.set()
        if len(sent) < seconds:
            raise SystemExit(f"the devices stopped after {len(sent)} of {seconds} batches")
        for layer in LAYERS:
            values, missing = watcher.latencies(layer, sent)
            if not values:
                raise SystemExit(f"no probe batch became visible in {layer}")
            figures.latency[layer] = (statistics.median(values), p95(values), missing)
        _runs(settings, figures, load_started, load_ended, platform_started)
    show(figures)
    return figures


def _runs(
    settings: Any, figures: Figures, since: datetime, until: datetime, start: datetime
) -> None:
    """The loop's runs while the load was on: their medians, phase by phase; and those
    with nothing new since the platform started (under load bronze always has news)."""
    from lakehouse.clients import postgres_connection
    from lakehouse.credentials import load

    with postgres_connection(settings, load(settings)) as conn:
        rows = conn.execute(
            "select outcome, seconds, phases, (serving->>'seconds')::float from transform.runs "
            "where started_at >= %s and started_at < %s and finished_at is not null",
            (since, until),
        ).fetchall()
        idle = [
            float(seconds) for (seconds,) in conn.execute(
                "select seconds from transform.runs where outcome = 'up_to_date' "
                "and started_at >= %s and started_at < %s",
                (start, until),
            ).fetchall()
        ]  # fmt: skip
    published = [r for r in rows if r[0] == "published"]
    figures.runs = len(published)
    figures.failed_runs = sum(r[0] not in ("published", "up_to_date", "audited") for r in rows)
    figures.idle_runs = len(idle)
    figures.idle_median = statistics.median(idle) if idle else None
    if not published:
        return
    figures.run_median = statistics.median(r[1] + (r[3] or 0.0) for r in published)
    names = dict.fromkeys(name for r in published for name in (r[2] or {}))
    for name in names:
        figures.phases[name] = statistics.median((r[2] or {}).get(name, 0.0) for r in published)
    figures.phases["serving"] = statistics.median(r[3] or 0.0 for r in published)


def show(figures: Figures) -> None:
    for layer, (median, high, missing) in figures.latency.items():
        console.print(
            f"device → {layer:8} p50 {median:5.1f} s  p95 {high:5.1f} s"
            + (f"  ({missing} batches not seen)" if missing else "")
        )
    idle = f"{figures.idle_median:.2f} s" if figures.idle_median is not None else "-"
    console.print(
        f"runs published {figures.runs} (median {figures.run_median:.1f} s with serving), "
        f"with nothing new {figures.idle_runs} (median {idle}), failed {figures.failed_runs}; "
        f"CPU {figures.cpu_demo:.0%} at the demo's load, {figures.cpu_load:.0%} under load"
    )
    console.print(
        "median seconds by phase: "
        + ", ".join(f"{name} {value:.2f}" for name, value in figures.phases.items())
    )


def compare(before: Figures, now: Figures, rate: int) -> Targets:
    table = Table(title=f"make up platform + {rate:,} readings/s: before → now")
    for column in ("figure", "before", "now", "ratio"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    rows: list[tuple[str, float, float, float | None]] = [
        ("device → serving p95 (s)", before.latency["serving"][1], now.latency["serving"][1], 15),
        ("device → serving p50 (s)", before.latency["serving"][0], now.latency["serving"][0], 8),
        ("device → gold p95 (s)", before.latency["gold"][1], now.latency["gold"][1], None),
        ("device → bronze p95 (s)", before.latency["bronze"][1], now.latency["bronze"][1], 2),
        ("run median, serving incl. (s)", before.run_median, now.run_median, 4),
        ("run with nothing new (s)", before.idle_median or 0.0, now.idle_median or 0.0, 0.5),
        ("CPU share at the demo's load", before.cpu_demo, now.cpu_demo, 0.25),
        (f"CPU share at {rate:,}/s", before.cpu_load, now.cpu_load, 0.70),
    ]
    for name, old, new, _ in rows:
        table.add_row(name, f"{old:.2f}", f"{new:.2f}", f"{new / old:.2f}" if old else "-")
    console.print(table)
    targets = Targets()
    for name, _, new, target in rows:
        if target is None:
            continue
        if name.startswith("run with nothing new") and now.idle_median is None:
            targets.check(f"{name} ≤ {target:g}", False, "no such run was seen under load")
            continue
        targets.check(f"{name} ≤ {target:g}", new <= target, f"{new:.2f}")
    targets.check("no transform run failed under load", not now.failed_runs,
                  f"{now.failed_runs} failed")  # fmt: skip
    for layer in LAYERS:
        missing = now.latency[layer][2]
        targets.check(f"every probe batch reached {layer}", not missing, f"{missing} not seen")
    return targets


def main(seconds: int, rate: int, idle: int) -> None:
    before = measure("before: a run every 30 s", BASELINE, seconds, rate, idle)
    now = measure("now: the defaults", {}, seconds, rate, idle)
    compare(before, now, rate).exit()
    raise SystemExit(0)
