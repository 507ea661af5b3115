"""Metrics and monitoring on the real stack: what the services export agrees with the
rows written, and the alert rules and dashboards use only metrics that exist.

The transform and maintenance loops run as the supervisor runs them (`--every`,
`--metrics-port`), in a test's own namespaces; the supervisor, gateway and consumer
are the test stack's own.
"""

from __future__ import annotations

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
from prometheus_client.parser import text_string_to_metric_families

from lakehouse.stack.state import SupervisorState
from lakehouse.stack.supervisor import state_file
from tests.bronze_writer import append_from_kafka
from tests.integration.conftest import free_port
from tests.integration.test_transform import env, reading  # noqa: F401 - the env fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "lakehouse.json"
PROMTOOL_VERSION = "v0.316.0"
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
def promtool(stack_settings) -> Path:
    """promtool built from the Prometheus Go module, cached outside the repository."""
    tools = stack_settings.cache_dir / "tools" / f"promtool-{PROMTOOL_VERSION}"
    binary = tools / "promtool"
    if not binary.exists():
        result = subprocess.run(
            ["go", "install", f"github.com/prometheus/prometheus/cmd/promtool@{PROMTOOL_VERSION}"],
            env={**os.environ, "GOBIN": str(tools)}, capture_output=True, text=True,
            timeout=1800, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    return binary


def test_alert_rules_and_scrape_config_pass_promtool(promtool):
    rules = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in rules.stdout + rules.stderr
    config = subprocess.run([promtool, "check", "config", SCRAPE_CONFIG], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_dashboard_expression_parses(promtool, tmp_path):
    # promtool parses recording rules' expressions as Prometheus would the panels'.
    expressions = dashboard_expressions()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr} for i, expr in enumerate(expressions)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(expressions) >= 15


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
