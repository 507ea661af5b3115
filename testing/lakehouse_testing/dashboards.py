"""The dashboards Superset shows (name: charts) and the browser that opens them."""

from __future__ import annotations

DASHBOARDS = {
    "fleet-overview": 4,
    "site-kpis": 2,
    "anomalies": 2,
    "device-map": 2,
}
CHROMIUM = "/usr/bin/chromium"
