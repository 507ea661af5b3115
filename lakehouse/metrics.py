"""Prometheus exposition for the platform's own processes.

Each long-running process of ours keeps its metrics on a registry of its own and serves
them on its own port (`/metrics`), bound like every server to LAKEHOUSE_HOST. Metric
names start with `lakehouse_`; the dashboards and alert rules under `monitoring/` use
only names that a scrape of the running services shows (a test checks it).
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread; the server, to
    shut down when its process stops serving without exiting."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
