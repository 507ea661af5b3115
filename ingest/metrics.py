"""Prometheus metrics of one ingest process, on its own registry."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IngestMetrics:
    """Counters, the commit latency histogram, lag and freshness gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "lakehouse_ingest_records_consumed", "Kafka messages consumed", registry=r
        )
        self.committed = Counter(
            "lakehouse_ingest_readings_committed", "Readings committed to bronze", registry=r
        )
        self.rejected = Counter(
            "lakehouse_ingest_records_rejected", "Records written to the rejected table", registry=r
        )
        self.fenced = Counter(
            "lakehouse_ingest_fenced_batches", "Batches refused because offsets moved", registry=r
        )
        self.expired = Counter(
            "lakehouse_ingest_offsets_expired",
            "Kafka offsets that expired (retention) before they were consumed",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "lakehouse_ingest_commit_seconds",
            "Duration of one batch commit (both tables)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge(
            "lakehouse_ingest_partition_lag", "Messages behind the high watermark",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self._last_commit = Gauge(
            "lakehouse_ingest_last_commit_timestamp_seconds", "Unix time of the last commit",
            registry=r,
        )  # fmt: skip
        self.seconds_since_commit = Gauge(
            "lakehouse_ingest_seconds_since_last_commit", "Seconds since the last commit",
            registry=r,
        )  # fmt: skip
        self.seconds_since_commit.set_function(self._since_commit)
        self._newest_event = Gauge(
            "lakehouse_ingest_newest_event_timestamp_seconds",
            "Event time of the newest reading committed", registry=r,
        )  # fmt: skip
        self.freshness = Gauge(
            "lakehouse_ingest_freshness_seconds",
            "Now minus the newest event time committed", registry=r,
        )  # fmt: skip
        self.freshness.set_function(self._freshness)
        self.dependency_up = Gauge(
            "lakehouse_ingest_dependency_up",
            "1 while a server the consumer needs answers, 0 during an outage",
            ["dependency"], registry=r,
        )  # fmt: skip
        for dependency in ("catalog", "kafka"):
            self.dependency_up.labels(dependency).set(1)
        self._last_commit_at: float | None = None
        self._newest_event_at: float | None = None

    def availability(self, dependency: str) -> Callable[[bool], None]:
        """A callback that sets the dependency's gauge (for lakehouse.retry.Outage)."""
        gauge = self.dependency_up.labels(dependency)
        return lambda available: gauge.set(1 if available else 0)

    def record_commit(self, newest_event_seconds: float | None) -> None:
        self._last_commit_at = time.time()
        self._last_commit.set(self._last_commit_at)
        if newest_event_seconds is not None and (
            self._newest_event_at is None or newest_event_seconds > self._newest_event_at
        ):
            self._newest_event_at = newest_event_seconds
            self._newest_event.set(newest_event_seconds)

    def _since_commit(self) -> float:
        return time.time() - self._last_commit_at if self._last_commit_at else float("nan")

    def _freshness(self) -> float:
        return time.time() - self._newest_event_at if self._newest_event_at else float("nan")

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on host:port (port 0 disables it)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
