"""Bronze's Kafka positions, read from its table properties: the next offset to consume
per topic and partition, and the ranges that expired before they were consumed.

The consumers write both in the same commit as the rows (ingest.offsets); the transform,
reconcile, maintenance and backup read them here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from lakehouse.contracts import KAFKA_GAPS_PROPERTY_PREFIX, KAFKA_OFFSETS_PROPERTY_PREFIX


def committed_offsets(properties: Mapping[str, str]) -> dict[str, dict[int, int]]:
    """Next offset to consume per topic and partition, from bronze's table properties."""
    offsets: dict[str, dict[int, int]] = {}
    for key, raw in properties.items():
        if key.startswith(KAFKA_OFFSETS_PROPERTY_PREFIX):
            topic = key[len(KAFKA_OFFSETS_PROPERTY_PREFIX) :]
            offsets[topic] = {int(p): int(o) for p, o in json.loads(raw).items()}
    return offsets


@dataclass(frozen=True)
class Gap:
    """Offsets [first, end) of a partition that expired before they were consumed."""

    topic: str
    partition: int
    first: int
    end: int
    detected_at: datetime


def expired_offsets(properties: Mapping[str, str]) -> list[Gap]:
    """The gaps bronze's consumers recorded (ingest.offsets.commit_with_offsets)."""
    gaps = []
    for key, raw in properties.items():
        if key.startswith(KAFKA_GAPS_PROPERTY_PREFIX):
            topic = key[len(KAFKA_GAPS_PROPERTY_PREFIX) :]
            for g in json.loads(raw):
                detected = datetime.fromisoformat(g["detected_at"])
                gaps.append(Gap(topic, int(g["partition"]), int(g["from"]), int(g["to"]), detected))
    return sorted(gaps, key=lambda g: (g.topic, g.partition, g.first))
