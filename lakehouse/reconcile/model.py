"""What a reconciliation reports: counts per device and stage, and every discrepancy.

A reading is accounted for when it is, exactly once, in one of: silver (and then in
gold's count of its hour), the quarantine with the rule it failed, bronze's rejects
with their reason, or still on its way (in Kafka before the consumer, or in bronze
before the next transform). Anything else is a `Discrepancy` naming its readings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

DiscrepancyKind = Literal[
    # Kafka offsets that expired (retention) before the consumer read them.
    "expired_in_kafka",
    # A gateway receipt's envelope was consumed, but bronze holds fewer of its readings.
    "lost_before_bronze",
    # An envelope is in Kafka twice: its batch id has a receipt for another offset.
    "envelope_duplicated",
    # Bronze rows that silver processed but holds neither as a reading nor quarantined.
    "lost_in_transform",
    # Silver or quarantine rows whose bronze row is gone.
    "missing_from_bronze",
    # A (device, seq) more than once in silver.
    "duplicated_in_silver",
    # Quarantined as a duplicate of a silver reading that is a different reading.
    "seq_reused",
    # Gold's count for a (device, metric, hour) differs from silver's.
    "gold_mismatch",
]

EXPLANATIONS: dict[str, str] = {
    "expired_in_kafka": "in Kafka messages that expired before they were consumed",
    "lost_before_bronze": "accepted by the gateway and consumed from Kafka, not in bronze",
    "envelope_duplicated": "in Kafka a second time under a batch id already receipted",
    "lost_in_transform": "in bronze and processed by silver, but neither kept nor quarantined",
    "missing_from_bronze": "in silver or the quarantine, but no longer in bronze",
    "duplicated_in_silver": "more than once in silver",
    "seq_reused": "quarantined as a duplicate, but differs from the reading kept under its seq",
    "gold_mismatch": "gold's hourly count differs from silver's",
}

# How long a reconcile waits in all for servers that are away (restarting).
DEFAULT_WAIT_SECONDS = 300.0


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges: [1, 2, 3, 7, 9, 10] → [(1, 3), (7, 7), (9, 10)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def format_ranges(ranges: Iterable[tuple[int, int]], limit: int = 8) -> str:
    listed = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
    more = f" (+{len(listed) - limit} more)" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


@dataclass(frozen=True)
class Discrepancy:
    """Readings of one device that are not accounted for exactly once."""

    kind: DiscrepancyKind
    device_id: str
    readings: int
    seqs: tuple[tuple[int, int], ...] = ()
    detail: str = ""

    def describe(self) -> str:
        named = f" seq {format_ranges(self.seqs)}" if self.seqs else ""
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.device_id}: {self.readings} reading(s){named} {EXPLANATIONS[self.kind]}{extra}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "device_id": self.device_id, "readings": self.readings,
            "seq_ranges": [list(r) for r in self.seqs], "detail": self.detail,
        }  # fmt: skip


@dataclass
class DeviceCounts:
    """One device's readings at every stage (of those received in the window)."""

    device_id: str
    tenant: str | None = None
    receipted: int = 0  # in envelopes the gateway acknowledged
    kafka_pending: int = 0  # receipted, not consumed yet
    bronze: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    transform_pending: int = 0  # in bronze, not processed by a transform yet
    silver: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    gold: int = 0  # silver's readings whose hour gold counts the same

    @property
    def duplicates_removed(self) -> int:
        return self.quarantined.get("duplicate", 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id, "tenant": self.tenant, "receipted": self.receipted,
            "kafka_pending": self.kafka_pending, "bronze": self.bronze,
            "rejected": dict(sorted(self.rejected.items())),
            "transform_pending": self.transform_pending, "silver": self.silver,
            "quarantined": dict(sorted(self.quarantined.items())),
            "duplicates_removed": self.duplicates_removed, "gold": self.gold,
        }  # fmt: skip


@dataclass(frozen=True)
class Window:
    """Readings received (by the gateway or by bronze) in [since, until)."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    device: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "tenant": self.tenant,
            "device": self.device,
        }


@dataclass
class Report:
    window: Window
    devices: dict[str, DeviceCounts] = field(default_factory=dict)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    # Envelopes in bronze with a batch id but no receipt (written to Kafka directly).
    unreceipted_envelopes: int = 0
    seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return not self.discrepancies

    def device(self, device_id: str) -> DeviceCounts:
        if device_id not in self.devices:
            self.devices[device_id] = DeviceCounts(device_id)
        return self.devices[device_id]

    def totals(self) -> DeviceCounts:
        total = DeviceCounts("all")
        for counts in self.devices.values():
            for name in ("receipted", "kafka_pending", "bronze", "transform_pending", "silver",
                         "gold"):  # fmt: skip
                setattr(total, name, getattr(total, name) + getattr(counts, name))
            for target, source in ((total.rejected, counts.rejected),
                                   (total.quarantined, counts.quarantined)):  # fmt: skip
                for reason, n in source.items():
                    target[reason] = target.get(reason, 0) + n
        return total

    def verdict(self) -> str:
        if self.accounted:
            total = self.totals()
            return (
                f"every reading accounted for exactly once: {total.bronze:,} in bronze across "
                f"{len(self.devices):,} device(s)"
            )
        lost = sum(d.readings for d in self.discrepancies)
        return f"NOT accounted for: {lost:,} reading(s) in {len(self.discrepancies)} finding(s)"

    def as_json(self) -> dict[str, Any]:
        return {
            "window": self.window.as_json(),
            "accounted": self.accounted,
            "verdict": self.verdict(),
            "totals": self.totals().as_json(),
            "devices": [self.devices[d].as_json() for d in sorted(self.devices)],
            "discrepancies": [d.as_json() for d in self.discrepancies],
            "unreceipted_envelopes": self.unreceipted_envelopes,
            "seconds": round(self.seconds, 3),
        }
