"""Prometheus metrics of the supervisor: each service's state and restarts, and the
disk the home lives on (what `stack status` shows, for alerting)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lakehouse.stack.state import ServiceState


class SupervisorCollector(Collector):
    """Reads the supervisor's service states at every scrape."""

    def __init__(self, states: Callable[[], list[ServiceState]], home: Path) -> None:
        self.states = states
        self.home = home

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "lakehouse_service_up", "1 while a service runs and answers its health check",
            labels=["service", "kind"],
        )  # fmt: skip
        failed = GaugeMetricFamily(
            "lakehouse_service_failed", "1 once a service used up its restarts",
            labels=["service"],
        )  # fmt: skip
        restarts = CounterMetricFamily(
            "lakehouse_service_restarts", "Restarts since the supervisor started",
            labels=["service"],
        )  # fmt: skip
        for state in self.states():
            up.add_metric(
                [state.name, state.kind], 1.0 if state.state == "running" and state.healthy else 0.0
            )
            failed.add_metric([state.name], 1.0 if state.state == "failed" else 0.0)
            restarts.add_metric([state.name], float(state.restarts))
        yield from (up, failed, restarts)
        usage = shutil.disk_usage(self.home)
        yield GaugeMetricFamily(
            "lakehouse_disk_free_bytes", "Free bytes on the home's filesystem", value=usage.free
        )
        yield GaugeMetricFamily(
            "lakehouse_disk_size_bytes", "Size of the home's filesystem", value=usage.total
        )


def supervisor_registry(states: Callable[[], list[ServiceState]], home: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(states, home))
    return registry
