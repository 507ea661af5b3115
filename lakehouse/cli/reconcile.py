"""`lakehouse reconcile`: account for every reading, stage by stage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from lakehouse.cli.common import err, out, settings_of
from lakehouse.credentials import load
from lakehouse.errors import ConfigError
from lakehouse.reconcile.model import DEFAULT_WAIT_SECONDS, DeviceCounts, Report

# Above this many devices only the totals are printed (all are in --json).
MAX_DEVICE_ROWS = 50
STAGES = (
    "receipted by the gateway", "in Kafka, not consumed yet", "in bronze",
    "rejected by bronze", "in bronze, not transformed yet", "in silver",
    "quarantined (not duplicates)", "duplicates removed", "in gold",
)  # fmt: skip
STAGE_COLUMNS = ("recv", "kafka", "bronze", "rej", "wait", "silver", "quar", "dup", "gold")
STAGE_NAMES = ", ".join(f"{c}: {s}" for c, s in zip(STAGE_COLUMNS, STAGES, strict=True))


def _stages(c: DeviceCounts) -> tuple[int, ...]:
    quarantined = sum(c.quarantined.values())
    return (
        c.receipted, c.kafka_pending, c.bronze, sum(c.rejected.values()), c.transform_pending,
        c.silver, quarantined - c.duplicates_removed, c.duplicates_removed, c.gold,
    )  # fmt: skip


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not a date or time",
            fix=f"give {option} as ISO 8601, for example 2026-12-01 or 2026-12-01T10:00Z",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def reconcile(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Readings received from this time (ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Readings received before this time (ISO 8601, UTC).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's devices.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait in all for servers that are away (restarting)."),
    ] = DEFAULT_WAIT_SECONDS,
) -> None:
    """Count every reading at every stage and name those not accounted for exactly once.

    Stages: accepted by the gateway (receipts), waiting in Kafka, in bronze, rejected with
    a reason, waiting for the next transform, in silver, quarantined by rule (duplicates
    removed among them), and in gold. Exits 1 when any reading is lost or duplicated,
    listing the exact (device, seq) ranges.
    """
    from lakehouse.reconcile.collect import Reconciler
    from lakehouse.reconcile.model import Window

    settings = settings_of(ctx)
    window = Window(_instant(since, "--since"), _instant(until, "--until"), tenant, device)
    if window.since and window.until and window.since >= window.until:
        raise ConfigError("--since must be before --until")
    report = Reconciler(settings, load(settings)).run(
        window,
        progress=(lambda _: None) if as_json else (lambda m: err.print(f"… {m}")),
        wait_seconds=wait,
    )
    if as_json:
        typer.echo(json.dumps(report.as_json(), default=str))
    else:
        _print_report(report)
    if not report.accounted:
        raise typer.Exit(1)


def _print_report(report: Report) -> None:
    """Stages per device (for a few devices), in total, the reasons and the verdict."""
    devices = [report.devices[d] for d in sorted(report.devices)]
    if 1 < len(devices) <= MAX_DEVICE_ROWS:
        table = Table(title="per device", caption=STAGE_NAMES)
        for name in ("device", *STAGE_COLUMNS):
            table.add_column(name, justify="left" if name == "device" else "right",
                             overflow="fold")  # fmt: skip
        for c in devices:
            table.add_row(c.device_id, *(f"{n:,}" for n in _stages(c)))
        out.print(table)
    overall = report.totals() if len(devices) != 1 else devices[0]
    stages = Table(title=f"all {len(devices):,} device(s)" if len(devices) != 1
                   else devices[0].device_id)  # fmt: skip
    stages.add_column("stage")
    stages.add_column("readings", justify="right")
    for name, n in zip(STAGES, _stages(overall), strict=True):
        stages.add_row(name, f"{n:,}")
    out.print(stages)
    totals = report.totals()
    for label, counted in (("rejected", totals.rejected), ("quarantined", totals.quarantined)):
        if counted:
            listed = ", ".join(f"{k} {v:,}" for k, v in sorted(counted.items()))
            out.print(f"{label}: {listed}", highlight=False)
    for finding in report.discrepancies:
        out.print(f"[bold red]✗[/] {finding.describe()}", highlight=False)
    style = "green" if report.accounted else "bold red"
    out.print(f"[{style}]{report.verdict()}[/] ({report.seconds:.1f} s)", highlight=False)
