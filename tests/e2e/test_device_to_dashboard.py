"""Device to dashboard, the real path end to end on the test stack.

The edge agent (its own process, queue and uploader) samples a sensor and uploads
through the gateway; the stack's consumer writes bronze; a transform run publishes
silver, gold, platinum and the serving schema; a business user of the device's tenant
logs in to Superset in a real browser (Debian's Chromium) and sees the device's site
with exactly its readings; `lakehouse reconcile` then accounts for every one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lakehouse import registry
from lakehouse.clients import postgres_connection
from tests.integration.conftest import lakehouse, wait_for_device

pytestmark = pytest.mark.integration

READINGS = 30
CHROMIUM = "/usr/bin/chromium"


def test_a_devices_readings_reach_its_tenants_dashboard_all_accounted_for(
    stack, stack_settings, credentials, tmp_path
):
    u = uuid.uuid4().hex[:8]
    tenant, site, device = f"e2e-{u}", f"e2e-site-{u}", f"e2e-pi-{u}"
    with postgres_connection(stack_settings, credentials) as conn:
        conn.autocommit = True
        token = registry.register(conn, device, tenant=tenant, site=site, lat=46.95, lon=7.45,
                                  since=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'gateway = "http://127.0.0.1:{stack_settings.gateway.port}"\n'
        f'token_file = "{tmp_path / "token"}"\nstate_dir = "{tmp_path / "state"}"\n'
        f"interval_seconds = 0.2\nbatch_size = 10\nmax_readings = {READINGS}\n"
        '[[sources]]\ntype = "command"\nargv = ["echo", "21.5"]\n'
        'metric = "temperature"\nunit = "C"\n'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "lakehouse_edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for_device(stack_settings, device, READINGS)[0] == READINGS
    finally:
        agent.terminate()
        agent.wait(60)

    run = lakehouse("transform", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    with postgres_connection(stack_settings, credentials) as conn:
        served = conn.execute(
            "select metric, readings from serving.site_daily where site = %s", (site,)
        ).fetchall()
    assert [(metric, int(n)) for metric, n in served] == [("temperature", READINGS)]

    user = lakehouse("users", "add", f"viewer-{u}", "--tenant", tenant)
    assert user.returncode == 0, user.stderr
    password = user.stdout.strip()
    from playwright.sync_api import sync_playwright

    url = f"http://{stack_settings.host}:{stack_settings.superset.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/login/")
        page.fill("[data-test=username-input]", f"viewer-{u}")
        page.fill("[data-test=password-input]", password)
        page.click("[data-test=login-button]")
        page.wait_for_url(re.compile(r".*/superset/welcome/.*|.*/dashboard/list.*"), timeout=60_000)
        page.goto(f"{url}/superset/dashboard/site-kpis/?standalone=1")
        rows = page.locator(".dashboard-component-chart-holder table tbody tr")
        rows.first.wait_for(timeout=90_000)
        time.sleep(2)  # charts settle after their data arrives
        seen = {tuple(c.strip() for c in text.split("\t"))[1:4] for text in rows.all_inner_texts()}
        browser.close()
    assert seen == {(site, "temperature", str(READINGS))}

    report = lakehouse("reconcile", "--device", device, "--json")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-2000:]
    found = json.loads(report.stdout)
    assert found["accounted"] is True and found["discrepancies"] == []
    [counts] = found["devices"]
    stages = ("receipted", "bronze", "silver", "gold")
    assert [counts[stage] for stage in stages] == [READINGS] * len(stages)
