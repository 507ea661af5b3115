"""A deterministic fleet simulator: devices across tenants and sites emitting readings.

Readings follow a diurnal cycle with noise; devices go quiet for a while (gaps), spike
now and then (anomalies), and deliveries arrive out of order or twice (duplicates,
with the same batch id and seq). The same `--seed` gives the same readings.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from lakehouse.clients import kafka_config

# metric: (base, diurnal amplitude, noise, unit)
METRICS: dict[str, tuple[float, float, float, str]] = {
    "temperature": (20.0, 5.0, 0.4, "C"),
    "humidity": (55.0, 12.0, 1.5, "%"),
    "pressure": (1013.0, 2.0, 0.3, "hPa"),
    "battery": (95.0, 0.0, 0.05, "%"),
}


@dataclass(frozen=True)
class Site:
    name: str
    tenant: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Device:
    device_id: str
    tenant: str
    site: str


@dataclass(frozen=True)
class Fleet:
    sites: tuple[Site, ...]
    devices: tuple[Device, ...]

    @classmethod
    def generate(cls, *, devices: int, tenants: int = 2, sites: int = 4, seed: int = 0) -> Fleet:
        rng = random.Random(f"fleet-{seed}")
        tenant_names = [f"tenant-{t:02d}" for t in range(1, tenants + 1)]
        site_list = tuple(
            Site(
                name=f"site-{s:03d}",
                tenant=tenant_names[s % tenants],
                lat=round(rng.uniform(-60, 70), 5),
                lon=round(rng.uniform(-180, 180), 5),
            )
            for s in range(1, max(sites, tenants) + 1)
        )
        device_list = tuple(
            Device(f"dev-{d:05d}", site.tenant, site.name)
            for d, site in ((d, site_list[d % len(site_list)]) for d in range(1, devices + 1))
        )
        return cls(site_list, device_list)


@dataclass(frozen=True)
class Delivery:
    """What one device sends at once: a batch of readings under one batch id."""

    device: Device
    batch_id: str
    readings: tuple[dict[str, Any], ...]

    def envelope(self) -> bytes:
        return orjson.dumps(
            {
                "device_id": self.device.device_id,
                "tenant": self.device.tenant,
                "site": self.device.site,
                "batch_id": self.batch_id,
                "readings": self.readings,
            }
        )

    def singles(self) -> list[bytes]:
        identity = {
            "device_id": self.device.device_id,
            "tenant": self.device.tenant,
            "site": self.device.site,
        }
        return [orjson.dumps({**identity, **reading}) for reading in self.readings]


@dataclass
class SimulationConfig:
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 1, tzinfo=UTC))
    interval: timedelta = timedelta(seconds=10)
    batch_size: int = 10
    gap_probability: float = 0.002
    gap_length: int = 30
    anomaly_probability: float = 0.002
    duplicate_probability: float = 0.0
    reorder_window: int = 0
    seed: int = 0


def deliveries(fleet: Fleet, config: SimulationConfig, samples: int) -> Iterator[Delivery]:
    """Each device takes `samples` samples (one reading per metric); batched per device."""
    rng = random.Random(f"readings-{config.seed}")
    # Delivery effects draw from their own stream: the readings do not depend on them.
    delivery_rng = random.Random(f"delivery-{config.seed}")
    seqs = {d.device_id: 0 for d in fleet.devices}
    quiet_until = {d.device_id: -1 for d in fleet.devices}
    pending: dict[str, list[dict[str, Any]]] = {d.device_id: [] for d in fleet.devices}
    window: list[Delivery] = []
    batch_counter = 0
    for step in range(samples):
        at = config.start + step * config.interval
        hour = at.hour + at.minute / 60
        for device in fleet.devices:
            if step < quiet_until[device.device_id]:
                continue
            if rng.random() < config.gap_probability:
                quiet_until[device.device_id] = step + config.gap_length
                continue
            for metric, (base, amplitude, noise, unit) in METRICS.items():
                value = base + amplitude * math.sin(2 * math.pi * (hour - 9) / 24)
                if metric == "battery":
                    value = max(5.0, base - step * 0.001)
                value += rng.gauss(0, noise)
                if rng.random() < config.anomaly_probability:
                    value += 10 * (amplitude or 5.0) * rng.choice((-1, 1))
                seqs[device.device_id] += 1
                pending[device.device_id].append(
                    {
                        "seq": seqs[device.device_id],
                        "ts": at.isoformat().replace("+00:00", "Z"),
                        "metric": metric,
                        "value": round(value, 4),
                        "unit": unit,
                    }
                )
            batch = pending[device.device_id]
            if len(batch) >= config.batch_size:
                batch_counter += 1
                window.append(_delivery(device, batch, config.seed, batch_counter))
                pending[device.device_id] = []
        yield from _drain(window, delivery_rng, config, final=False)
    for device in fleet.devices:
        if pending[device.device_id]:
            batch_counter += 1
            window.append(_delivery(device, pending[device.device_id], config.seed, batch_counter))
    yield from _drain(window, delivery_rng, config, final=True)


def _delivery(device: Device, readings: list[dict[str, Any]], seed: int, n: int) -> Delivery:
    batch_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}-{device.device_id}-{n}"))
    return Delivery(device, batch_id, tuple(readings))


def _drain(
    window: list[Delivery], rng: random.Random, config: SimulationConfig, *, final: bool
) -> Iterator[Delivery]:
    while window and (final or len(window) > config.reorder_window):
        index = rng.randrange(len(window)) if config.reorder_window else 0
        delivery = window.pop(index)
        yield delivery
        if rng.random() < config.duplicate_probability:
            yield delivery


class RateLimiter:
    """Sleeps so that `rate` units per second are not exceeded (None: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    def wait(self, units: int) -> None:
        self.sent += units
        if not self.rate:
            return
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def send_to_kafka(
    settings: Any,
    stream: Iterator[Delivery],
    *,
    topic: str,
    singles: bool = False,
    rate: float | None = None,
    on_progress: Any = None,
) -> int:
    """Produce deliveries (envelopes, or one message per reading) keyed by device id.

    Returns the number of readings sent; `rate` limits readings per second.
    """
    from confluent_kafka import Producer

    tuning: dict[str, Any] = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    }
    producer = Producer(kafka_config(settings, "simulate", **tuning))
    limiter = RateLimiter(rate)
    sent = 0
    for delivery in stream:
        key = delivery.device.device_id.encode()
        payloads = delivery.singles() if singles else [delivery.envelope()]
        for payload in payloads:
            while True:
                try:
                    producer.produce(topic, value=payload, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        sent += len(delivery.readings)
        limiter.wait(len(delivery.readings))
        if on_progress is not None:
            on_progress(len(delivery.readings))
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages were not acknowledged by Kafka")
    return sent
