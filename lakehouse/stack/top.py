"""`lakehouse stack top`: a live view of the native stack, in the spirit of htop.

Each refresh reads the supervisor's state, every service's processes (CPU and memory)
and the metrics our services export, and shows rates between two refreshes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table

from lakehouse.config import Settings
from lakehouse.stack.manager import Stack
from lakehouse.stack.service import ServiceStatus

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Samples of a /metrics page by name: [(labels, value), …]."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of the samples of `name` whose labels include `labels`; None if there are none."""
    values = [
        v
        for sample_labels, v in samples.get(name, [])
        if all(sample_labels.get(k) == want for k, want in labels.items())
    ]
    return sum(values) if values else None


@dataclass
class Frame:
    """One refresh: statuses, per-process figures and every service's metrics."""

    at: float
    statuses: list[ServiceStatus]
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    metrics: Samples = field(default_factory=dict)


class Top:
    def __init__(self, settings: Settings, stack: Stack) -> None:
        self.settings = settings
        self.stack = stack
        self._processes: dict[int, psutil.Process] = {}
        self._http = httpx.Client(timeout=2, verify=False)  # noqa: S501 - local probes only
        self.previous: Frame | None = None

    def _metric_urls(self, statuses: list[ServiceStatus]) -> list[str]:
        urls = [f"http://{self.settings.host}:{self.settings.supervisor.metrics_port}/metrics"]
        for status in statuses:
            if status.name == "gateway":
                urls.append(f"{status.url}/metrics")
            elif status.name.startswith("consumer-") or status.name in {"transform", "maintain"}:
                urls.append(status.url)
        return urls

    def _usage(self, pid: int) -> tuple[float, int]:
        """CPU % since the last refresh and RSS of a process and its children."""
        cpu, rss = 0.0, 0
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                known = self._processes.setdefault(process.pid, process)
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
        except psutil.Error:
            pass
        return cpu, rss

    def frame(self) -> Frame:
        statuses = self.stack.status()
        frame = Frame(at=time.monotonic(), statuses=statuses)
        for status in statuses:
            if status.pid:
                frame.cpu[status.name], frame.rss[status.name] = self._usage(status.pid)
        for url in self._metric_urls(statuses):
            try:
                page = parse(self._http.get(url).text)
            except (httpx.HTTPError, ValueError):
                continue
            for name, samples in page.items():
                frame.metrics.setdefault(name, []).extend(samples)
        return frame

    def rate(self, frame: Frame, name: str, **labels: str) -> float | None:
        now = total(frame.metrics, name, **labels)
        if self.previous is None or now is None:
            return None
        before = total(self.previous.metrics, name, **labels)
        seconds = frame.at - self.previous.at
        if before is None or seconds <= 0:
            return None
        return max(now - before, 0.0) / seconds

    def render(self, frame: Frame) -> Group:
        services = Table("service", "state", "pid", "restarts", "CPU %", "RSS MiB",
                         title="services", title_justify="left")  # fmt: skip
        for s in frame.statuses:
            state = s.state if s.healthy else f"[red]{s.state}[/]"
            cpu = frame.cpu.get(s.name)
            rss = frame.rss.get(s.name)
            services.add_row(
                s.name, state, str(s.pid or "-"), str(s.restarts),
                "-" if cpu is None else f"{cpu:.0f}",
                "-" if rss is None else f"{rss / 2**20:.0f}",
            )  # fmt: skip
        m = frame.metrics
        figures = Table("figure", "value", title="pipeline", title_justify="left")
        freshness = "lakehouse_layer_freshness_seconds"
        runs = "lakehouse_transform_runs_total"
        gc_bytes = total(m, "lakehouse_maintenance_gc_deleted_bytes_total")
        rows = [
            ("readings into bronze /s",
             self.rate(frame, "lakehouse_ingest_readings_committed_total"), "{:.0f}"),
            ("consumer lag (messages)", total(m, "lakehouse_ingest_partition_lag"), "{:.0f}"),
            ("bronze freshness (s)", _max(m, "lakehouse_ingest_freshness_seconds"), "{:.1f}"),
            ("rejected records", total(m, "lakehouse_ingest_records_rejected_total"), "{:.0f}"),
            ("gateway requests /s",
             self.rate(frame, "lakehouse_gateway_requests_total"), "{:.1f}"),
            ("gateway 5xx",
             _sum_matching(m, "lakehouse_gateway_requests_total", "status", "5"), "{:.0f}"),
            ("silver freshness (s)", total(m, freshness, layer="silver"), "{:.0f}"),
            ("gold freshness (s)", total(m, freshness, layer="gold"), "{:.0f}"),
            ("transform runs published", total(m, runs, outcome="published"), "{:.0f}"),
            ("transform runs failed", _failed_runs(m), "{:.0f}"),
            ("quarantined readings", total(m, "lakehouse_quarantined_readings"), "{:.0f}"),
            ("bronze data files", _bronze_files(m), "{:.0f}"),
            ("last maintenance pass (s)",
             total(m, "lakehouse_maintenance_pass_seconds"), "{:.1f}"),
            ("garbage collected (MiB)", None if gc_bytes is None else gc_bytes / 2**20, "{:.1f}"),
            ("Kafka partitions at risk", total(m, "lakehouse_kafka_partitions_at_risk"), "{:.0f}"),
            ("disk free (%)", _disk_free(m), "{:.1f}"),
        ]  # fmt: skip
        for label, number, shape in rows:
            figures.add_row(label, "-" if number is None else shape.format(number))
        return Group(services, figures)


def _max(samples: Samples, name: str) -> float | None:
    values = [v for _, v in samples.get(name, [])]
    return max(values) if values else None


def _sum_matching(samples: Samples, name: str, label: str, prefix: str) -> float | None:
    values = [v for labels, v in samples.get(name, []) if labels.get(label, "").startswith(prefix)]
    return sum(values) if samples.get(name) else None


def _failed_runs(samples: Samples) -> float | None:
    """Runs that did not publish: failed on the data, errors, and builds a server
    that went away interrupted."""
    counts = [
        total(samples, "lakehouse_transform_runs_total", outcome=outcome)
        for outcome in ("failed", "error", "interrupted")
    ]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def _bronze_files(samples: Samples) -> float | None:
    values = [
        v
        for labels, v in samples.get("lakehouse_table_data_files", [])
        if labels.get("table", "").endswith("bronze.readings")
    ]
    return sum(values) if values else None


def _disk_free(samples: Samples) -> float | None:
    free = total(samples, "lakehouse_disk_free_bytes")
    size = total(samples, "lakehouse_disk_size_bytes")
    return None if not free or not size else 100.0 * free / size
