"""The demo fleet `make up` runs: a few tenants' devices at real places, each running
the edge agent's own code (its durable queue, clock guard and uploader) against the
gateway, with the faults real fleets have.

- gaps: a device now and then goes silent for a minute or two;
- late deliveries: its uplink drops for a while, the queue keeps the readings, and they
  arrive minutes after they were taken;
- duplicated deliveries: a batch is sent again with the same key, as after a lost reply;
- the odd bad reading: a sensor glitch far outside the physical range, which silver
  quarantines (`value_out_of_range`).

Tokens and queues live under `<home>/demo` (private), so a restarted fleet goes on where
it stopped. `LAKEHOUSE_DEMO=false` runs the platform without it.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from lakehouse_edge.cli import sample_once
from lakehouse_edge.clock import ClockGuard
from lakehouse_edge.queue import Batch, DurableQueue
from lakehouse_edge.sources import Reading, Source
from lakehouse_edge.uploader import Uploader
from prometheus_client import CollectorRegistry, Counter, Gauge

from lakehouse import registry
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.private_files import write_private


@dataclass(frozen=True)
class DemoSite:
    tenant: str
    name: str
    lat: float
    lon: float
    # The site's typical temperature (°C) and humidity (%).
    temperature: float
    humidity: float


# The demo logins `stack up` makes and prints, kept 0600 in the demo directory.
LOGINS = "logins.json"
ANALYST = "analyst"
SITES = (
    DemoSite("acme", "acme-zurich", 47.3769, 8.5417, 19.0, 48.0),
    DemoSite("acme", "acme-basel", 47.5596, 7.5886, 20.0, 52.0),
    DemoSite("globex", "globex-lyon", 45.7640, 4.8357, 22.0, 55.0),
    DemoSite("globex", "globex-milan", 45.4642, 9.1900, 23.0, 60.0),
    DemoSite("initech", "initech-vienna", 48.2082, 16.3738, 18.0, 45.0),
    DemoSite("initech", "initech-munich", 48.1351, 11.5820, 17.0, 50.0),
)
DEVICES_PER_SITE = 2
TENANTS = tuple(sorted({site.tenant for site in SITES}))


@dataclass(frozen=True)
class Faults:
    """How often each fault starts, per device and sample (or per batch sent)."""

    gap: float = 0.004
    gap_seconds: tuple[float, float] = (60.0, 150.0)
    offline: float = 0.002
    offline_seconds: tuple[float, float] = (90.0, 240.0)
    duplicate: float = 0.02
    glitch: float = 0.003


def device_ids() -> list[tuple[str, DemoSite]]:
    numbers = range(1, DEVICES_PER_SITE + 1)
    return [(f"{site.name}-{n:02d}", site) for site in SITES for n in numbers]


class DemoSensor(Source):
    """Temperature and humidity with a daily cycle, noise, gaps and the odd glitch."""

    name = "demo"

    def __init__(self, site: DemoSite, rng: random.Random, faults: Faults) -> None:
        super().__init__()
        self.site = site
        self.rng = rng
        self.faults = faults
        self.silent_until = 0.0

    def read(self) -> list[Reading]:
        now = time.time()
        if now < self.silent_until:
            return []
        if self.rng.random() < self.faults.gap:
            self.silent_until = now + self.rng.uniform(*self.faults.gap_seconds)
            return []
        clock = time.gmtime(now)
        hour = clock.tm_hour + clock.tm_min / 60
        cycle = math.sin(2 * math.pi * (hour - 9) / 24)
        temperature = self.site.temperature + 4 * cycle + self.rng.gauss(0, 0.3)
        humidity = self.site.humidity - 8 * cycle + self.rng.gauss(0, 1.0)
        if self.rng.random() < self.faults.glitch:
            temperature = 850.0 + self.rng.uniform(0, 100)  # a shorted probe
        return [
            {"metric": "temperature", "value": round(temperature, 2), "unit": "C"},
            {"metric": "humidity", "value": round(min(max(humidity, 0), 100), 1), "unit": "%"},
        ]


class FlakyUploader(Uploader):
    """The agent's uploader over a link that drops for minutes and loses replies."""

    def __init__(self, *args: Any, rng: random.Random, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = rng
        self.faults = faults
        self.offline_until = 0.0
        self.duplicates = 0

    def _post(self, batch: Batch) -> tuple[int | str, float | None, dict[str, Any]]:
        now = time.monotonic()
        if now < self.offline_until:
            return "network: demo link down", None, {}
        if self.rng.random() < self.faults.offline:
            self.offline_until = now + self.rng.uniform(*self.faults.offline_seconds)
            return "network: demo link down", None, {}
        result = self._send(batch)
        if result[0] in (200, 202) and self.rng.random() < self.faults.duplicate:
            # The reply was lost: the same batch goes again, with the same key.
            self.duplicates += 1
            return self._send(batch)
        return result

    def _send(self, batch: Batch) -> tuple[int | str, float | None, dict[str, Any]]:
        return super()._post(batch)


class DemoDevice:
    """One device: the agent's sampling and uploading, in two threads of this process."""

    def __init__(
        self, device_id: str, site: DemoSite, token: str, gateway: str, state: Path,
        interval: float, faults: Faults,
    ) -> None:  # fmt: skip
        self.device_id = device_id
        self.interval = interval
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        rng = random.Random(device_id)
        self.queue = DurableQueue(str(state / "queue.db"), max_rows=200_000)
        self.clock = ClockGuard(str(state / "clock"))
        self.sensor = DemoSensor(site, rng, faults)
        self.uploader = FlakyUploader(
            self.queue, gateway, token, batch_size=50, compress=True, rng=rng, faults=faults
        )

    def sample(self, stop: threading.Event) -> None:
        # Devices start spread over one interval, as a real fleet's clocks are.
        stop.wait(random.Random(self.device_id).uniform(0, self.interval))
        while not stop.is_set():
            sample_once(self.sensor, self.queue, self.clock)
            stop.wait(self.interval)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.sample, args=(stop,), daemon=True,
                             name=f"{self.device_id}-sampler"),
            threading.Thread(target=self.uploader.run, args=(stop,), daemon=True,
                             name=f"{self.device_id}-uploader"),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        return threads


def demo_dir(settings: Settings) -> Path:
    return settings.home / "demo"


def enrol(settings: Settings, credentials: Credentials) -> dict[str, str]:
    """Register the fleet (sites with coordinates) once; each device's token, kept 0600
    under the demo directory. A device registered without a kept token gets a new one."""
    tokens_dir = demo_dir(settings) / "tokens"
    tokens_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tokens: dict[str, str] = {}
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        known = registry.registered(conn, [device for device, _ in device_ids()])
        for device, site in device_ids():
            path = tokens_dir / device
            if path.exists():
                tokens[device] = path.read_text().strip()
                continue
            if device in known:
                token = registry.rotate(conn, device, grace=timedelta(0))
            else:
                token = registry.register(
                    conn, device, tenant=site.tenant, site=site.name, lat=site.lat,
                    lon=site.lon,
                )  # fmt: skip
            write_private(path, token)
            tokens[device] = token
    return tokens


class DemoMetrics:
    """What the fleet did, for `stack top` and Prometheus."""

    def __init__(self, devices: list[DemoDevice]) -> None:
        self.registry = CollectorRegistry()
        self.devices = devices
        self.queued = Gauge(
            "lakehouse_demo_queued_readings", "Readings waiting in the devices' queues",
            registry=self.registry,
        )  # fmt: skip
        self.duplicates = Counter(
            "lakehouse_demo_duplicate_deliveries", "Batches sent again after a lost reply",
            registry=self.registry,
        )  # fmt: skip
        self.devices_gauge = Gauge(
            "lakehouse_demo_devices", "Devices of the demo fleet", registry=self.registry
        )
        self.devices_gauge.set(len(devices))
        self._reported_duplicates = 0

    def refresh(self) -> None:
        self.queued.set(sum(d.queue.counts()["ready"] for d in self.devices))
        total = sum(d.uploader.duplicates for d in self.devices)
        self.duplicates.inc(total - self._reported_duplicates)
        self._reported_duplicates = total


def fleet(
    settings: Settings, tokens: dict[str, str], *, interval: float, gateway: str,
    faults: Faults | None = None,
) -> list[DemoDevice]:  # fmt: skip
    base = demo_dir(settings) / "devices"
    return [
        DemoDevice(
            device, site, tokens[device], gateway, base / device, interval, faults or Faults()
        )
        for device, site in device_ids()
    ]
