"""Prometheus exposition for the platform's own processes.

Each long-running process of ours keeps its metrics on a registry of its own and serves
them on its own port (`/metrics`), bound like every server to LAKEHOUSE_HOST. Metric
names start with `lakehouse_`; the dashboards and alert rules under `monitoring/` use
only names that a scrape of the running services shows (a test checks it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve `registry` at http://host:port/metrics from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
