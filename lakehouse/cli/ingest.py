"""`lakehouse ingest …`: Kafka → bronze consumer and batch file ingest."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lakehouse.cli.common import err, out, settings_of
from lakehouse.clients import iceberg_catalog
from lakehouse.credentials import load

if TYPE_CHECKING:
    from ingest.kafka_consumer import BronzeConsumer

ingest_app = typer.Typer(help="Write readings into the bronze tables.")


@ingest_app.command("kafka")
def ingest_kafka(
    ctx: typer.Context,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the stack's).")] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group id, one Kafka lets `ingest` use (default: the stack's)."),
    ] = None,
    max_rows: Annotated[int | None, typer.Option(help="Commit at this many records.")] = None,
    max_age: Annotated[float | None, typer.Option(help="Commit at this batch age (s).")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port (0: off; default from settings).")
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Static group membership: a restart under the same id resumes at once."),
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(
            help="Exit after this many seconds with partitions and no messages (default: never)."
        ),
    ] = None,
) -> None:
    """Consume the readings topic into bronze, exactly once; SIGTERM drains and commits."""
    # A stop asked for while still starting up (connecting, loading tables) is kept and
    # honoured once the consumer exists, so SIGTERM always ends in a clean exit.
    stop_requested = threading.Event()
    consumer: BronzeConsumer | None = None

    def request_stop(*_: object) -> None:
        stop_requested.set()
        if consumer is not None:
            consumer.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)

    from ingest.kafka_consumer import BronzeConsumer, CommitPolicy
    from ingest.metrics import IngestMetrics

    settings = settings_of(ctx)
    if not os.environ.get("LAKEHOUSE_LOG_LEVEL"):
        logging.getLogger("ingest").setLevel(logging.INFO)
    ingest = settings.ingest
    policy = CommitPolicy(
        max_rows=max_rows or ingest.max_rows,
        max_bytes=ingest.max_bytes,
        max_age_seconds=max_age or ingest.max_age_seconds,
    )
    metrics = IngestMetrics()
    metrics.serve(settings.host, ingest.metrics_port if metrics_port is None else metrics_port)
    overrides = {"group.instance.id": instance_id} if instance_id else {}
    consumer = BronzeConsumer(
        settings, load(settings), policy=policy, group_id=group, topic=topic, metrics=metrics,
        overrides=overrides,
        tables=(f"{ingest.namespace}.readings", f"{ingest.namespace}.readings_rejected"),
    )  # fmt: skip
    if stop_requested.is_set():
        consumer.stop()
    consumer.run(idle_exit_seconds=idle_exit)
    err.print(f"stopped after {consumer.commits} commits")


@ingest_app.command("file")
def ingest_file_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="CSV, JSONL or Parquet files.")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, jsonl or parquet (default: by suffix).")
    ] = None,
) -> None:
    """Validate files and append them to bronze; the same content twice lands once."""
    from ingest.files import FORMATS, ingest_file

    if file_format is not None and file_format not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    settings = settings_of(ctx)
    catalog = iceberg_catalog(settings, load(settings), s3_key="ingest")
    table = Table("file", "readings", "rejected", "status")
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} rows"),
        TimeElapsedColumn(), console=err, transient=True,
    ) as bar:  # fmt: skip
        for path in paths:
            task = bar.add_task(path.name, total=None)
            result = ingest_file(
                catalog, path, file_format=file_format,
                progress=lambda n, task=task: bar.advance(task, n),  # type: ignore[misc]
            )  # fmt: skip
            status = "already ingested" if result.skipped else "ingested"
            table.add_row(path.name, str(result.readings), str(result.rejected), status)
    out.print(table)
