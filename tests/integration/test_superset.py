"""Superset on the real stack: business users of two tenants, each seeing only their
tenant's rows through Superset's chart-data API and in the dashboards rendered by a
real browser (Debian's Chromium), with SQL Lab closed to them.

The module publishes its own data (lake namespaces `p<id>_…`) into the test stack's
`serving` schema, which the test stack's Superset reads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lakehouse_testing.bronze_writer import append_from_kafka, create_environment, drop_environment
from lakehouse_testing.dashboards import CHROMIUM, DASHBOARDS

from lakehouse import registry
from lakehouse.clients import iceberg_catalog, postgres_connection, trino_connection
from lakehouse.serving.tables import TABLES
from lakehouse.transform.runner import TransformRunner

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 10, 1, tzinfo=UTC)
# Recent, so every chart has rows: Readings per hour shows the last 7 days.
H0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "dashboards"


class SupersetClient:
    """A logged-in session of one Superset user (JWT for the API, CSRF for writes)."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        response = self.http.post(
            "/api/v1/security/login",
            json={"username": username, "password": password, "provider": "db"},
        )
        assert response.status_code == 200, response.text
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        csrf = self.http.get("/api/v1/security/csrf_token/")
        assert csrf.status_code == 200, csrf.text
        self.http.headers["X-CSRFToken"] = csrf.json()["result"]
        self.http.headers["Referer"] = url

    def close(self) -> None:
        self.http.close()

    def datasets(self) -> dict[str, int]:
        response = self.http.get("/api/v1/dataset/", params={"q": "(page_size:100)"})
        assert response.status_code == 200, response.text
        return {row["table_name"]: row["id"] for row in response.json()["result"]}

    def chart_data(self, dataset_id: int, columns: list[str], metric_sql: str) -> httpx.Response:
        return self.http.post(
            "/api/v1/chart/data",
            json={
                "datasource": {"id": dataset_id, "type": "table"},
                "force": True,
                "queries": [{
                    "columns": columns,
                    "metrics": [{"expressionType": "SQL", "sqlExpression": metric_sql,
                                 "label": "m"}],
                    "row_limit": 10000,
                    "filters": [],
                }],
                "result_format": "json",
                "result_type": "full",
            },
        )  # fmt: skip

    def per_tenant(self, dataset_id: int, metric_sql: str = "COUNT(*)") -> dict[str, Any]:
        response = self.chart_data(dataset_id, ["tenant"], metric_sql)
        assert response.status_code == 200, response.text
        return {row["tenant"]: row["m"] for row in response.json()["result"][0]["data"]}


@dataclass
class Dashboards:
    settings: Any
    credentials: Any
    prefix: str
    url: str
    tenants: dict[str, str]
    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)
    clients: list[SupersetClient] = field(default_factory=list)

    def _login(self, username: str, password: str) -> SupersetClient:
        client = SupersetClient(self.url, username, password)
        self.clients.append(client)
        return client

    def admin(self) -> SupersetClient:
        return self._login(
            self.settings.superset.admin_user, self.credentials.superset_admin_password
        )

    def client(self, key: str) -> SupersetClient:
        return self._login(*self.users[key])

    def gold(self, sql: str) -> dict[str, Any]:
        cursor = trino_connection(self.settings).cursor()
        cursor.execute(sql.replace("{p}", f'lake."{self.prefix}'))
        return {tenant: value for tenant, value in cursor.fetchall()}

    def gold_counts(self, table: Any) -> dict[str, int]:
        return self.gold(
            f'select tenant, count(*) from {{p}}{table.layer}"."{table.source}" as s '
            f"where {table.where} group by tenant"
        )


def _add_user(name: str, tenant: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "users", "add", name, "--tenant", tenant],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"user {name} (tenant {tenant}) can log in to Superset" in result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def dashboards(stack, stack_settings, credentials) -> Iterator[Dashboards]:
    u = uuid.uuid4().hex[:8]
    prefix = f"p{u}_"
    settings = stack_settings.model_copy(deep=True)
    settings.transform.schema_prefix = prefix
    catalog = iceberg_catalog(settings, credentials, s3_key="ingest")
    table = create_environment(catalog, prefix)
    env = Dashboards(
        settings, credentials, prefix, f"http://{settings.host}:{settings.superset.port}",
        tenants={"a": f"acme-{u}", "b": f"globex-{u}"},
    )  # fmt: skip
    devices: dict[str, tuple[str, str, str]] = {}
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        for key, tenant, site, lat, lon in (("a1", "a", "north", 52.52, 13.40),
                                            ("a2", "a", "north", 52.52, 13.40),
                                            ("b1", "b", "south", 48.14, 11.58)):  # fmt: skip
            identity = (f"{key}-{u}", env.tenants[tenant], f"{site}-{u}")
            registry.register(conn, identity[0], tenant=identity[1], site=identity[2],
                              lat=lat, lon=lon, since=SINCE)  # fmt: skip
            devices[key] = identity
            env.sites[tenant] = identity[2]
    readings = []
    for key, values in (("a1", [20, 21, 22, 21, 20, 21, 95]), ("a2", [30, 31, 30]),
                        ("b1", [10, 11, 10, 12, 11])):  # fmt: skip
        for i, value in enumerate(values):
            ts = H0 + timedelta(minutes=7 * i)
            readings.append((devices[key], {"seq": i + 1, "ts": ts.isoformat(),
                                            "metric": "temperature", "value": value}))  # fmt: skip
    append_from_kafka(table, readings, partition=0)
    report = TransformRunner(settings, credentials, quiet=True).run()
    assert report.outcome == "published" and report.serving is not None, report.serving_error
    for key, tenant in env.tenants.items():
        name = f"user-{key}-{u}"
        env.users[key] = (name, _add_user(name, tenant))
    yield env
    for client in env.clients:
        client.close()
    drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), prefix)


def test_each_business_user_gets_their_tenant_rows_through_the_chart_data_api(dashboards):
    ids = dashboards.admin().datasets()
    assert {t.name for t in TABLES} <= set(ids)
    for key, tenant in dashboards.tenants.items():
        client = dashboards.client(key)
        assert set(client.datasets()) == {t.name for t in TABLES}, "serving datasets only"
        for table in TABLES:
            expected = dashboards.gold_counts(table).get(tenant)
            assert client.per_tenant(ids[table.name]) == ({tenant: expected} if expected else {})
        total = client.per_tenant(ids["device_hourly"], "SUM(readings)")
        assert total == {tenant: {"a": 10, "b": 5}[key]}


def test_an_administrator_sees_every_tenant(dashboards):
    admin = dashboards.admin()
    ids = admin.datasets()
    counts = admin.per_tenant(ids["device_hourly"], "SUM(readings)")
    assert counts[dashboards.tenants["a"]] == 10 and counts[dashboards.tenants["b"]] == 5


def test_sql_lab_and_the_trino_database_are_closed_to_business_users(dashboards):
    client = dashboards.client("a")
    databases = client.http.get("/api/v1/database/")
    assert databases.status_code == 200
    assert [row["database_name"] for row in databases.json()["result"]] == ["Serving"]
    serving_id = databases.json()["result"][0]["id"]
    for sql in ("select * from serving.device_hourly", "set role serving_all", "reset role"):
        response = client.http.post(
            "/api/v1/sqllab/execute/", json={"database_id": serving_id, "sql": sql}
        )
        assert response.status_code in (401, 403), (sql, response.status_code, response.text)


def _chart_errors(page: Any) -> list[str]:
    return [
        text.strip()
        for text in page.locator(
            ".dashboard-component-chart-holder .alert-danger, "
            ".dashboard-component-chart-holder [role=alert]"
        ).all_inner_texts()
        if text.strip()
    ]


def test_dashboards_render_in_a_real_browser_with_the_tenant_numbers(dashboards):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name, password = dashboards.users["b"]
    tenant = dashboards.tenants["b"]
    with postgres_connection(dashboards.settings, dashboards.credentials) as conn:
        kpis = {
            (site, metric, int(readings))
            for site, metric, readings in conn.execute(
                "select site, metric, readings from serving.site_daily where tenant = %s",
                (tenant,),
            ).fetchall()
        }
    assert kpis
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{dashboards.url}/login/")
        page.fill("[data-test=username-input]", name)
        page.fill("[data-test=password-input]", password)
        page.click("[data-test=login-button]")
        page.wait_for_url(re.compile(r".*/superset/welcome/.*|.*/dashboard/list.*"), timeout=60_000)
        for slug, charts in DASHBOARDS.items():
            page.goto(f"{dashboards.url}/superset/dashboard/{slug}/?standalone=1")
            holders = page.locator(".dashboard-component-chart-holder")
            holders.first.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => document.querySelectorAll('.dashboard-component-chart-holder').length"
                f" === {charts} && !document.querySelector('.dashboard-component-chart-holder "
                ".loading')",
                timeout=60_000,
            )
            page.wait_for_timeout(2000)  # charts animate in after their data arrives
            page.screenshot(path=str(SCREENSHOTS / f"{slug}.png"), full_page=True)
            assert _chart_errors(page) == [], slug
            if slug == "site-kpis":
                rows = page.locator(".dashboard-component-chart-holder table tbody tr")
                seen = set()
                for text in rows.all_inner_texts():
                    cells = [c.strip() for c in text.split("\t")]
                    seen.add((cells[1], cells[2], int(cells[3].replace(",", ""))))
                assert seen == kpis
            if slug == "device-map":
                body = page.inner_text("body")
                assert dashboards.sites["b"] in body and dashboards.sites["a"] not in body
        browser.close()
