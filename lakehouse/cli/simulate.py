"""`lakehouse simulate`: a deterministic fleet writing readings to Kafka."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lakehouse.cli.common import err, settings_of
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
) -> None:
    """Simulate a fleet of devices and produce their readings to Kafka."""
    settings = settings_of(ctx)
    fleet = Fleet.generate(devices=devices, tenants=tenants, sites=sites, seed=seed)
    config = SimulationConfig(
        interval=timedelta(seconds=interval), batch_size=batch_size,
        duplicate_probability=duplicates, reorder_window=reorder, seed=seed,
    )  # fmt: skip
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
    err.print(f"sent {sent} readings from {devices} devices to {topic or settings.kafka.topic}")
