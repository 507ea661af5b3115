"""Metrics and monitoring on the real stack: what the services export agrees with the
rows written, and the alert rules and dashboards parse and use only metrics that exist.

The transform and maintenance loops run as the supervisor runs them (`--every`,
`--metrics-port`), in a test's own namespaces; the supervisor, gateway and consumer
are the test stack's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lakehouse_testing.bronze_writer import append_from_kafka
from lakehouse_testing.lake import free_port
from prometheus_client.parser import text_string_to_metric_families

from lakehouse.config import (
    GatewaySettings,
    IngestSettings,
    MaintainSettings,
    Settings,
    SupervisorSettings,
    TransformSettings,
)
from lakehouse.stack.state import SupervisorState
from lakehouse.stack.supervisor import state_file
from tests.integration.test_transform import env, reading  # noqa: F401 - the env fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "lakehouse.json"
RULECHECK = ROOT / "monitoring" / "rulecheck"
METRIC_NAME = re.compile(r"\blakehouse_[a-z0-9_]+")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


@pytest.fixture(scope="session")
def rulecheck(stack_settings) -> Path:
    """monitoring/rulecheck: Prometheus's own rule-file loader and PromQL parser, built
    from the Prometheus Go module (cached outside the repository by its source's hash)."""
    digest = hashlib.sha256(
        b"".join((RULECHECK / name).read_bytes() for name in ("main.go", "go.mod", "go.sum"))
    ).hexdigest()[:16]
    binary = stack_settings.cache_dir / "tools" / f"rulecheck-{digest}"
    if not binary.exists():
        result = subprocess.run(
            ["go", "build", "-o", str(binary), "."], cwd=RULECHECK, capture_output=True,
            text=True, timeout=1800, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    return binary


def check(rulecheck: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([rulecheck, *args], capture_output=True, text=True, check=False)


def test_alert_rules_load_as_prometheus_loads_them(rulecheck, tmp_path):
    result = check(rulecheck, ALERTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{ALERTS}: {len(alert_expressions())} rules found"
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS.read_text().replace("> 60", "> > 60", 1))
    failed = check(rulecheck, broken)
    assert failed.returncode == 1
    assert "parse error" in failed.stderr


def test_every_dashboard_expression_parses(rulecheck):
    expressions = dashboard_expressions()
    result = check(rulecheck, *[arg for expr in expressions for arg in ("-expr", expr)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{len(expressions)} expressions parse"
    assert len(expressions) >= 15


def test_the_scrape_config_targets_every_metrics_port_of_a_default_stack():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    defaults = Settings.model_construct(
        gateway=GatewaySettings.model_construct(), ingest=IngestSettings.model_construct(),
        transform=TransformSettings.model_construct(),
        maintain=MaintainSettings.model_construct(),
        supervisor=SupervisorSettings.model_construct(),
    )  # fmt: skip
    ports = (defaults.supervisor.metrics_port, defaults.gateway.port,
             defaults.ingest.metrics_port, defaults.transform.metrics_port,
             defaults.maintain.metrics_port)  # fmt: skip
    assert targets == {f"127.0.0.1:{port}" for port in ports}


def start_loop(args: list[str], prefix: str, log: Path) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "LAKEHOUSE_TRANSFORM_SCHEMA_PREFIX": prefix,
        "LAKEHOUSE_SERVING_PUBLISH_AFTER_TRANSFORM": "false",
        "LAKEHOUSE_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lakehouse", *args], env=environment,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def wait_for(url: str, name: str, labels: dict[str, str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            samples = scrape(url)
        except httpx.HTTPError:
            samples = {}
        if (value(samples, name, **labels) or 0) >= 1:
            return samples
        time.sleep(1)
    raise AssertionError(f"{name}{labels} never reached 1 at {url}")


@pytest.fixture
def loops(env, tmp_path) -> Iterator[dict[str, Any]]:  # noqa: F811
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> str:
        port = free_port()
        procs.append(start_loop([*args, "--metrics-port", str(port)], env.prefix,
                                tmp_path / f"{args[0]}.log"))  # fmt: skip
        return f"http://127.0.0.1:{port}/metrics"

    yield {"start": start}
    for proc in procs:
        proc.terminate()
        proc.wait(60)


def test_metrics_agree_with_the_rows_and_cover_every_dashboard_and_alert(
    env,  # noqa: F811
    loops,
    stack,
    stack_settings,
):
    known = env.devices["a"]
    stranger = (f"stranger-{env.u}", known[1], known[2])
    rows = [(known, reading(s, s, "temperature", 20.0 + s)) for s in range(1, 31)]
    rows += [(stranger, reading(s, s, "temperature", 1.0)) for s in range(1, 6)]
    append_from_kafka(env.table, rows, partition=0)

    transform_url = loops["start"](["transform", "--every", "3600", "--quiet"])
    transform = wait_for(transform_url, "lakehouse_transform_runs_total", {"outcome": "published"})
    maintain_url = loops["start"](["maintain", "--every", "3600", "--no-gc"])
    maintain = wait_for(maintain_url, "lakehouse_maintenance_passes_total", {"outcome": "done"})

    # The transform's figures are the published tables'.
    assert value(transform, "lakehouse_transform_runs_total", outcome="failed") == 0
    quarantined = env.query("select failed_rule, count(*) from {p}silver.readings_quarantine "
                            "group by 1")  # fmt: skip
    assert quarantined == [["unknown_device", 5]]
    assert value(transform, "lakehouse_quarantined_readings", rule="unknown_device") == 5
    (newest,) = env.query("select to_unixtime(max(ts)) from {p}silver.readings")[0]
    assert value(transform, "lakehouse_layer_newest_event_timestamp_seconds",
                 layer="silver") == newest  # fmt: skip
    # Maintenance's file counts are the tables'.
    table = f"{env.prefix}bronze.readings"
    (files,) = env.query(f'select count(*) from lake.{env.prefix}bronze."readings$files"')[0]
    assert value(maintain, "lakehouse_table_data_files", table=table) == files
    # The supervisor's view is `stack status`'s.
    supervisor = scrape(f"http://127.0.0.1:{stack_settings.supervisor.metrics_port}/metrics")
    state = SupervisorState.read(state_file(stack_settings))
    for service in state.services:
        assert value(supervisor, "lakehouse_service_restarts_total",
                     service=service.name) == service.restarts  # fmt: skip
        up = 1.0 if service.state == "running" and service.healthy else 0.0
        assert value(supervisor, "lakehouse_service_up", service=service.name,
                     kind=service.kind) == up  # fmt: skip

    gateway = scrape(f"{stack.service('gateway').url}/metrics")
    consumer = scrape(stack.service("consumer-1").url)
    exported = {name for source in (transform, maintain, supervisor, gateway, consumer)
                for name, _ in source}  # fmt: skip
    used = {name for expr in dashboard_expressions() + alert_expressions()
            for name in METRIC_NAME.findall(expr)}  # fmt: skip
    assert used - exported == set()


def test_stack_top_shows_every_service_and_the_pipeline(stack, stack_settings):
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "stack", "top", "--once", "--interval", "1"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in stack.names():
        assert re.search(rf"\b{re.escape(name)}\b.*\brunning\b", result.stdout), name
    shown = re.search(r"disk free \(%\)\s*│\s*([0-9.]+)", result.stdout)
    assert shown is not None, result.stdout
    usage = shutil.disk_usage(stack_settings.home)
    assert abs(float(shown.group(1)) - 100 * usage.free / usage.total) < 1.0
