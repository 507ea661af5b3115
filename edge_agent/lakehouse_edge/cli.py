"""`lakehouse-edge run | status | flush`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, List

from lakehouse_edge import sources
from lakehouse_edge.clock import ClockGuard
from lakehouse_edge.config import AgentConfig, ConfigError
from lakehouse_edge.queue import DurableQueue, QueueFull
from lakehouse_edge.uploader import Uploader

log = logging.getLogger("lakehouse_edge")


def build_sources(specs: List[Dict[str, Any]]) -> List[Callable[[], List[Dict[str, Any]]]]:
    built: List[Callable[[], List[Dict[str, Any]]]] = []
    for spec in specs:
        kind = spec.get("type")
        if kind == "cpu_temperature":
            built.append(lambda s=spec: sources.cpu_temperature(
                s.get("path", "/sys/class/thermal/thermal_zone0/temp")))  # fmt: skip
        elif kind == "ds18b20":
            built.append(lambda s=spec: sources.ds18b20(s.get("root", "/sys/bus/w1/devices")))
        elif kind == "file":
            built.append(sources.FileTail(spec["path"]).read)
        elif kind == "command":
            built.append(lambda s=spec: sources.command(s["argv"], s["metric"], s.get("unit", "")))
        elif kind == "simulator":
            built.append(sources.Simulator(spec.get("metrics", 1), spec.get("seed", 0)).read)
        else:
            raise ConfigError(f"unknown source type {kind!r}")
    return built


def _open(config: AgentConfig) -> DurableQueue:
    os.makedirs(config.state_dir, exist_ok=True)
    return DurableQueue(os.path.join(config.state_dir, "queue.db"),
                        max_rows=config.max_queue, policy=config.queue_policy)  # fmt: skip


def sample_loop(config: AgentConfig, queue: DurableQueue, stop: threading.Event) -> None:
    readers = build_sources(config.sources)
    clock = ClockGuard(os.path.join(config.state_dir, "clock"))
    while not stop.is_set():
        if config.max_readings and queue.next_seq() > config.max_readings:
            stop.wait(1.0)
            continue
        for read in readers:
            try:
                readings = read()
            except Exception as exc:  # a broken sensor must not stop the others
                log.warning("source failed: %s", exc)
                continue
            stamped = []
            for reading in readings:
                ts = clock.stamp()
                if ts is not None:
                    stamped.append({**reading, "ts": ts})
            if config.max_readings:
                room = config.max_readings - queue.next_seq() + 1
                stamped = stamped[: max(room, 0)]
            try:
                queue.put_many(stamped)
            except QueueFull:
                log.warning("queue full; sampling paused")
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
    parser.add_argument("command", choices=("run", "status", "flush"))
    parser.add_argument("--config", default="/etc/lakehouse-edge/config.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = AgentConfig.load(args.config)
        if args.command == "run":
            return run(config)
        queue = _open(config)
        if args.command == "status":
            print(json.dumps(queue.counts()))
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
