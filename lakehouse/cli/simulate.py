"""`lakehouse simulate`: a deterministic fleet writing readings to Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lakehouse import registry
from lakehouse.cli.common import err, settings_of
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.simulate import METRICS, Fleet, SimulationConfig, deliveries, send_to_kafka


def simulate(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, help="Number of devices.")] = 100,
    tenants: Annotated[int, typer.Option(min=1, help="Number of tenants.")] = 2,
    sites: Annotated[int, typer.Option(min=1, help="Number of sites (with lat/lon).")] = 4,
    samples: Annotated[int, typer.Option(min=1, help="Samples per device (4 metrics each).")] = 360,
    interval: Annotated[float, typer.Option(help="Seconds between samples (event time).")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Readings per delivery.")] = 20,
    singles: Annotated[bool, typer.Option(help="One Kafka message per reading.")] = False,
    rate: Annotated[float | None, typer.Option(help="Readings per second (default: max).")] = None,
    duplicates: Annotated[float, typer.Option(help="Probability a delivery repeats.")] = 0.0,
    reorder: Annotated[int, typer.Option(help="Out-of-order window, in deliveries.")] = 0,
    seed: Annotated[int, typer.Option(help="Same seed, same readings.")] = 0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the stack's).")] = None,
    start: Annotated[
        datetime | None,
        typer.Option(
            help="Event time of the first sample (default: so the last one is now).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"],
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            help="Register the simulated sites and devices (their readings are "
            "quarantined as unknown devices otherwise)."
        ),
    ] = True,
) -> None:
    """Simulate a fleet of devices and produce their readings to Kafka."""
    settings = settings_of(ctx)
    fleet = Fleet.generate(devices=devices, tenants=tenants, sites=sites, seed=seed)
    step = timedelta(seconds=interval)
    first = start.replace(tzinfo=start.tzinfo or UTC) if start else (
        datetime.now(UTC).replace(microsecond=0) - step * (samples - 1)
    )  # fmt: skip
    config = SimulationConfig(
        start=first, interval=step, batch_size=batch_size,
        duplicate_probability=duplicates, reorder_window=reorder, seed=seed,
    )  # fmt: skip
    if register:
        added = register_fleet(settings, fleet, since=first)
        err.print(f"registered {added} of {devices} devices "
                  f"({devices - added} were registered already)")  # fmt: skip
    else:
        err.print("devices not registered (--no-register): silver quarantines their "
                  "readings as unknown_device until they are")  # fmt: skip
    upper_bound = devices * samples * len(METRICS)
    with Progress(
        TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("readings"),
        TimeElapsedColumn(), console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("simulate", total=upper_bound)
        sent = send_to_kafka(
            settings, deliveries(fleet, config, samples),
            topic=topic or settings.kafka.topic, singles=singles, rate=rate,
            on_progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    err.print(
        f"sent {sent} readings from {devices} devices to {topic or settings.kafka.topic}, "
        f"event time {first:%Y-%m-%d %H:%M:%S} to {first + step * (samples - 1):%H:%M:%S} UTC"
    )


def register_fleet(settings: Settings, fleet: Fleet, *, since: datetime) -> int:
    """Register the fleet's devices (with their sites and coordinates); returns how many
    were new. Tokens are not shown: the simulator writes to Kafka directly."""
    sites = {site.name: site for site in fleet.sites}
    with postgres_connection(settings, load(settings)) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        known = registry.registered(conn, [d.device_id for d in fleet.devices])
        added = 0
        for device in fleet.devices:
            if device.device_id in known:
                continue
            site = sites[device.site]
            registry.register(
                conn, device.device_id, tenant=device.tenant, site=device.site,
                lat=site.lat, lon=site.lon, since=since,
            )  # fmt: skip
            added += 1
    return added
