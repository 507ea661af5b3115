"""Prometheus metrics of the transform loop: runs by outcome, durations, and how fresh
each published layer is (newest event time in silver and gold)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = (
    "published", "failed", "up_to_date", "error", "audited", "audit_failed", "interrupted",
)  # fmt: skip
LAYERS = {
    # layer: (table, column holding the newest event time it covers)
    "silver": ("silver.readings", "ts"),
    "gold": ("gold.fct_device_hourly", "hour"),
}


class TransformMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.runs = Counter("lakehouse_transform_runs", "Transform runs by outcome",
                            ["outcome"], registry=r)  # fmt: skip
        for outcome in OUTCOMES:
            self.runs.labels(outcome)
        self.duration = Histogram(
            "lakehouse_transform_run_seconds", "Duration of one transform run",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800), registry=r,
        )  # fmt: skip
        self.last_published = Gauge(
            "lakehouse_transform_last_published_timestamp_seconds",
            "Unix time of the last run that published", registry=r,
        )  # fmt: skip
        self.newest_event = Gauge(
            "lakehouse_layer_newest_event_timestamp_seconds",
            "Newest event time a published layer holds", ["layer"], registry=r,
        )  # fmt: skip
        self.freshness = Gauge(
            "lakehouse_layer_freshness_seconds",
            "Now minus the newest event time a published layer holds", ["layer"], registry=r,
        )  # fmt: skip
        self._newest: dict[str, float] = {}
        for layer in LAYERS:
            self.freshness.labels(layer).set_function(self._age_of(layer))
        self.quarantined = Gauge(
            "lakehouse_quarantined_readings",
            "Readings in silver's quarantine, by the rule they failed", ["rule"], registry=r,
        )  # fmt: skip

    def _age_of(self, layer: str) -> Callable[[], float]:
        def age() -> float:
            newest = self._newest.get(layer)
            return time.time() - newest if newest is not None else float("nan")

        return age

    def record_run(self, outcome: str, seconds: float) -> None:
        self.runs.labels(outcome).inc()
        self.duration.observe(seconds)
        if outcome == "published":
            self.last_published.set(time.time())

    def refresh_layers(self, cursor: Any, prefix: str) -> None:
        """Newest event per layer and quarantine counts, read through Trino."""
        for layer, (table, column) in LAYERS.items():
            cursor.execute(f"select to_unixtime(max({column})) from lake.{prefix}{table}")  # noqa: S608
            (newest,) = cursor.fetchone()
            if newest is not None:
                self._newest[layer] = float(newest)
                self.newest_event.labels(layer).set(float(newest))
        cursor.execute(
            f"select failed_rule, count(*) from lake.{prefix}silver.readings_quarantine "  # noqa: S608
            "group by 1"
        )
        for rule, count in cursor.fetchall():
            self.quarantined.labels(rule).set(count)
