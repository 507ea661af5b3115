"""Readings envelopes as the gateway produces them, a device's rows in the lake, and a
free local port."""

from __future__ import annotations

import socket
from typing import Any

from lakehouse.clients import trino_connection
from lakehouse.config import Settings


def readings_envelope(
    device: str, number: int, per_envelope: int, *, tenant: str, site: str, ts: str, value: float
) -> dict[str, Any]:
    """The `number`-th envelope of `device` as the gateway produces it (seq from 1 on)."""
    readings = [
        {"seq": number * per_envelope + i + 1, "ts": ts, "metric": "temperature", "value": value}
        for i in range(per_envelope)
    ]
    return {"device_id": device, "tenant": tenant, "site": site,
            "batch_id": f"{device}-{number}", "readings": readings}  # fmt: skip


def device_counts(
    settings: Settings, device: str, table: str = "bronze.readings"
) -> tuple[int, int]:
    """(rows, distinct seq) of one device in a readings table."""
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        f"select count(*), count(distinct seq) from lake.{table} where device_id = '{device}'"
    )
    rows, distinct = cursor.fetchall()[0]
    return rows, distinct


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
