"""`lakehouse-edge run | status | flush | requeue`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from typing import Any, Dict, List, Optional

from lakehouse_edge import rules, sources
from lakehouse_edge.clock import ClockGuard
from lakehouse_edge.config import AgentConfig, ConfigError
from lakehouse_edge.queue import DurableQueue, QueueFull
from lakehouse_edge.uploader import Uploader

log = logging.getLogger("lakehouse_edge")


def build_sources(
    specs: List[Dict[str, Any]], queue: Optional[DurableQueue] = None
) -> List[sources.Source]:
    """The configured sources; stateful ones resume where `queue` says they were."""
    built: List[sources.Source] = []
    for spec in specs:
        kind = spec.get("type")
        if kind == "cpu_temperature":
            built.append(sources.CpuTemperature(
                spec.get("path", "/sys/class/thermal/thermal_zone0/temp")))  # fmt: skip
        elif kind == "ds18b20":
            built.append(sources.DS18B20(spec.get("root", "/sys/bus/w1/devices")))
        elif kind == "file":
            name = sources.FileTail.state_name(spec["path"])
            saved = queue.source_state(name) if queue is not None else None
            built.append(sources.FileTail(spec["path"], saved))
        elif kind == "command":
            built.append(sources.Command(spec["argv"], spec["metric"], spec.get("unit", "")))
        elif kind == "simulator":
            built.append(sources.Simulator(spec.get("metrics", 1), spec.get("seed", 0)))
        else:
            raise ConfigError(f"unknown source type {kind!r}")
    return built


def _open(config: AgentConfig, *, recover: bool = True) -> DurableQueue:
    os.makedirs(config.state_dir, exist_ok=True)
    return DurableQueue(os.path.join(config.state_dir, "queue.db"), max_rows=config.max_queue,
                        policy=config.queue_policy, recover=recover)  # fmt: skip


def sample_once(source: sources.Source, queue: DurableQueue, clock: ClockGuard,
                room: Optional[int] = None) -> int:  # fmt: skip
    """Read one source and queue what it gave, with the counts of what was not queued
    and the source's new position, in one transaction; returns how many were queued."""
    try:
        readings = source.read()
    except Exception as exc:  # a broken sensor must not stop the others
        log.warning("source %s failed: %s", source.name, exc)
        source.rollback()
        return 0
    counts: Dict[str, int] = {
        f"invalid:{reason}": n for reason, n in source.take_discarded().items()
    }
    stamped = []
    for reading in readings:
        found = rules.problem(reading)
        if found is not None:
            key = f"invalid:{found[0]}"
            if key not in counts:
                log.warning("source %s: reading not queued (%s: %s)", source.name, *found)
            counts[key] = counts.get(key, 0) + 1
            continue
        ts = clock.stamp()
        if ts is None:
            counts["clock_skipped"] = counts.get("clock_skipped", 0) + 1
            continue
        stamped.append({**reading, "ts": ts})
    if room is not None:
        stamped = stamped[: max(room, 0)]
    state = source.state()
    positions = {source.name: state} if state is not None else None
    try:
        queue.put_many(stamped, counts=counts, source_state=positions)
    except QueueFull:
        source.rollback()
        log.warning("queue full; sampling paused")
        return 0
    except sqlite3.OperationalError as exc:  # the file stayed locked or the disk is full
        source.rollback()
        log.warning("queue unavailable (%s); sampling again next round", exc)
        return 0
    source.commit()
    return len(stamped)


def sample_loop(config: AgentConfig, queue: DurableQueue, stop: threading.Event) -> None:
    readers = build_sources(config.sources, queue)
    clock = ClockGuard(os.path.join(config.state_dir, "clock"))
    while not stop.is_set():
        if config.max_readings and queue.next_seq() > config.max_readings:
            stop.wait(1.0)
            continue
        for source in readers:
            room = config.max_readings - queue.next_seq() + 1 if config.max_readings else None
            sample_once(source, queue, clock, room)
        stop.wait(config.interval_seconds)


def run(config: AgentConfig) -> int:
    queue = _open(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    uploader = Uploader(queue, config.gateway, config.token(),
                        batch_size=config.batch_size, compress=config.gzip)  # fmt: skip
    sender = threading.Thread(target=uploader.run, args=(stop,), name="uploader", daemon=True)
    sender.start()
    sampler = threading.Thread(target=sample_loop, args=(config, queue, stop), name="sampler",
                               daemon=True)  # fmt: skip
    sampler.start()
    # Neither thread may die while the process lives on: systemd restarts a process.
    while not stop.wait(1.0):
        if not (sender.is_alive() and sampler.is_alive()):
            log.error("the %s thread stopped; exiting so the service manager restarts the agent",
                      "uploader" if not sender.is_alive() else "sampler")  # fmt: skip
            stop.set()
            sender.join(35)
            queue.close()
            return 1
    sampler.join(35)
    sender.join(35)
    queue.close()
    return 0


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="lakehouse-edge", description=__doc__)
    parser.add_argument(
        "command", choices=("run", "status", "flush", "requeue"),
        help="run: sample and upload; status: counts as JSON (queued, failed and never "
        "queued, by reason); flush: upload what is queued, then exit; requeue: send the "
        "readings the gateway refused again",
    )  # fmt: skip
    parser.add_argument("--config", default="/etc/lakehouse-edge/config.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = AgentConfig.load(args.config)
        if args.command == "run":
            return run(config)
        queue = _open(config, recover=args.command != "status")
        if args.command == "status":
            reasons = queue.reasons()
            # anchored: false until the gateway said where this device's seqs stand.
            print(json.dumps({**queue.counts(), "invalid_by_reason": reasons["invalid"],
                              "failed_by_reason": reasons["failed"],
                              "anchored": queue.anchored}))  # fmt: skip
            return 0
        if args.command == "requeue":
            print(json.dumps({"requeued": queue.requeue()}))
            return 0
        uploader = Uploader(queue, config.gateway, config.token(),
                            batch_size=config.batch_size, compress=config.gzip)  # fmt: skip
        failed = uploader.drain()
        print(json.dumps(queue.counts()))
        return 1 if failed else 0
    except ConfigError as exc:
        print(f"lakehouse-edge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
