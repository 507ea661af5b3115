"""Outage recovery: how soon ingestion flows again after a server is kill -9'd.

Runs a supervised stack of its own (own home and ports, never the user's lakehouse).
A producer sends readings to Kafka at a steady rate for `--seconds`; the supervised
consumer writes them to bronze. The baseline run has no outage; then, for each server,
the same run with that server killed half way. Reported per server: seconds from the
kill to the first bronze commit after it (target ≤ 30 s), end-to-end readings/s of the
run as a ratio to the baseline's, and whether bronze holds exactly the readings sent.

Usage: python -m bench.outage [--seconds 120] [--rate 2000] [--servers minio,nessie,...]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer
from lakehouse_testing.lake import device_counts, readings_envelope
from rich.console import Console

from bench.targets import Targets
from lakehouse.clients import kafka_config

SERVERS = ("minio", "nessie", "kafka", "postgres", "trino")
TARGET_RECOVERY = 30.0
PER_MESSAGE = 50


def last_commit(settings) -> float:
    """Unix time of the consumer's last bronze commit, from its metrics."""
    text = httpx.get(f"http://{settings.host}:{settings.ingest.metrics_port}/metrics").text
    for line in text.splitlines():
        if line.startswith("lakehouse_ingest_last_commit_timestamp_seconds "):
            return float(line.split()[1])
    return 0.0


def produce(settings, device: str, seconds: float, rate: int, sent: list[int]) -> None:
    producer = Producer(kafka_config(settings, "simulate", acks="all",
                                     **{"enable.idempotence": True, "linger.ms": 5}))  # fmt: skip
    per_second = max(rate // PER_MESSAGE, 1)
    started = time.monotonic()
    number = 0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        for _ in range(per_second):
            envelope = readings_envelope(device, number, PER_MESSAGE, tenant="bench",
                                         site="bench", ts=datetime.now(UTC).isoformat(),
                                         value=21.0)  # fmt: skip
            while True:
                try:
                    producer.produce(settings.kafka.topic, orjson.dumps(envelope), device.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            number += 1
        producer.poll(0)
        time.sleep(max(1.0 - (time.monotonic() - tick), 0))
    while producer.flush(5):
        pass  # Kafka may be away; the producer keeps its messages until it is back
    sent.append(number * PER_MESSAGE)


def one_run(stack, settings, seconds: float, rate: int, victim: str | None) -> dict:
    device = f"outage-{victim or 'none'}-{uuid.uuid4().hex[:6]}"
    sent: list[int] = []
    started = time.monotonic()
    producer = threading.Thread(target=produce, args=(settings, device, seconds, rate, sent))
    producer.start()
    recovery = None
    if victim is not None:
        time.sleep(seconds / 2)
        pid = next(s.pid for s in stack.status() if s.name == victim)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                if last_commit(settings) > killed:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        recovery = time.time() - killed
    producer.join()
    while True:  # wait for the tail to land (and Trino to answer after its own outage)
        try:
            rows, distinct = device_counts(settings, device)
        except Exception:  # Trino restarting
            time.sleep(1)
            continue
        if rows >= sent[0] or time.monotonic() - started > seconds * 3 + 120:
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    return {"sent": sent[0], "rows": rows, "distinct": distinct, "rate": rows / elapsed,
            "recovery": recovery}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=int, default=2000, help="readings/s produced")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    from lakehouse.config import Settings
    from lakehouse.stack.manager import Stack

    settings = Settings()
    stack = Stack(settings, Console(stderr=True))
    was_running = stack.supervisor_pid() is not None
    stack.up()
    outcomes: list[tuple[str, dict[str, Any]]] = []
    try:
        base = one_run(stack, settings, args.seconds, args.rate, None)
        print(f"baseline: {base['rate']:,.0f} readings/s end to end, "
              f"{base['rows']:,}/{base['sent']:,} readings in bronze")  # fmt: skip
        print(f"{'server':<9} {'flowing again':>14} {'readings/s':>11} {'ratio':>6}  exact")
        outcomes.append(("no outage", base))
        for victim in args.servers.split(","):
            result = one_run(stack, settings, args.seconds, args.rate, victim)
            outcomes.append((victim, result))
            exact = result["rows"] == result["distinct"] == result["sent"]
            print(f"{victim:<9} {result['recovery']:>12.1f} s {result['rate']:>11,.0f} "
                  f"{result['rate'] / base['rate']:>6.2f}  {'yes' if exact else 'NO'} "
                  f"({result['rows']:,} rows, {result['distinct']:,} distinct, "
                  f"{result['sent']:,} sent)")  # fmt: skip
    finally:
        if not was_running:
            stack.down()
    targets = Targets()
    for name, result in outcomes:
        if result["recovery"] is not None:
            targets.check(f"{name}: flowing again ≤ {TARGET_RECOVERY:g} s",
                          result["recovery"] <= TARGET_RECOVERY,
                          f"{result['recovery']:.1f} s")  # fmt: skip
        targets.check(
            f"{name}: bronze holds exactly the readings sent",
            result["rows"] == result["distinct"] == result["sent"],
            f"{result['rows']:,} rows, {result['distinct']:,} distinct, {result['sent']:,} sent",
        )
    targets.exit()


if __name__ == "__main__":
    main()
