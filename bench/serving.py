"""The serving layer: publish cost, dashboard queries and dashboards in a browser.

In one run, on the benchmarks' own stack:
1. Bronze of N readings (default 10 M: 100 devices x 4 metrics, one reading of each
   every 5 minutes, so ~87 days of history ending an hour ago), a full transform, then a
   full copy into serving (the baseline), then the last hour (4,800 readings)
   transformed and published incrementally, as the transform's schedule would.
   Target: incremental publish ≤ 10 % of the full copy. `--cadence 1` gives the dense
   shape (one reading a second, ~7 hours), where one hour is an eighth of all the data.
2. The dashboards' chart queries on PostgreSQL serving, as a tenant's role (RLS on),
   against the same queries on Trino gold. Target: serving p95 ≤ 100 ms.
3. Each dashboard in Debian's Chromium as a business user, warm: from navigation until
   every chart has rendered. Target ≤ 3 s.
4. Resident memory of the whole platform (every server and service, Superset
   included). Target < 6 GiB.

Usage: python -m bench.serving [--readings 10000000] [--cadence 300] [--queries 30]
                               [--loads 3] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from lakehouse_testing.bronze_writer import create_environment, drop_environment
from rich.console import Console

from bench.targets import Targets
from bench.transform import DEVICES, METRICS, load_seconds, p95, register_fleet, timed_run
from lakehouse.clients import iceberg_catalog, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.serving import roles
from lakehouse.serving.publish import ServingPublisher, describe
from lakehouse.stack import process
from lakehouse.stack.manager import Stack
from lakehouse.transform.runner import TransformRunner

console = Console()
PREFIX = "sbench_"
TENANT = f"{PREFIX}t1"
DASHBOARDS = {"fleet-overview": 4, "site-kpis": 2, "anomalies": 2, "device-map": 2}
CHROMIUM = "/usr/bin/chromium"


def chart_queries(schema: str, gold: str) -> dict[str, tuple[str, str]]:
    """Each chart's query, on serving (PostgreSQL) and on the marts (Trino)."""
    site, platinum = f"{PREFIX}s3", f'lake."{PREFIX}platinum"'
    return {
        "readings per hour, last 7 days": (
            f"select date_trunc('hour', hour) as h, sum(readings) from {schema}.device_hourly "
            "where hour >= now() - interval '7' day and hour < now() group by 1 order by 1",
            f"select hour, sum(readings) from {gold}.fct_device_hourly where tenant = '{TENANT}' "
            "and hour >= current_timestamp - interval '7' day and hour < current_timestamp "
            "group by 1 order by 1",
        ),
        "devices reporting / freshness": (
            f"select count(*) filter (where readings > 0), max(last_seen) "
            f"from {schema}.device_health",
            f"select count_if(readings > 0), max(last_seen) from {gold}.device_health "
            f"where tenant = '{TENANT}'",
        ),
        "silent devices": (
            f"select device_id, site, last_seen, readings from {schema}.device_health "
            "where last_seen is null or last_seen < now() - interval '1 hour' "
            "order by last_seen limit 1000",
            f"select device_id, site, last_seen, readings from {gold}.device_health "
            f"where tenant = '{TENANT}' and (last_seen is null "
            "or last_seen < current_timestamp - interval '1' hour) order by last_seen limit 1000",
        ),
        "daily KPIs per site": (
            f"select day, site, metric, readings, devices_reporting, value_avg, uptime_pct "
            f"from {schema}.site_daily order by day desc limit 1000",
            f"select day, site, metric, readings, devices_reporting, value_avg, uptime_pct "
            f"from {gold}.fct_site_daily where tenant = '{TENANT}' order by day desc limit 1000",
        ),
        "one site, hourly": (
            f"select hour, avg(value_avg), min(value_min), max(value_max) "
            f"from {schema}.device_hourly where site = '{site}' and metric = 'temperature' "
            "group by hour order by hour",
            f"select hour, avg(value_avg), min(value_min), max(value_max) "
            f"from {gold}.fct_device_hourly where tenant = '{TENANT}' and site = '{site}' "
            "and metric = 'temperature' group by hour order by hour",
        ),
        "uptime per site": (
            f"select day, site, avg(uptime_pct) from {schema}.site_daily group by 1, 2 "
            "order by 1 limit 10000",
            f"select day, site, avg(uptime_pct) from {gold}.fct_site_daily "
            f"where tenant = '{TENANT}' group by 1, 2 order by 1 limit 10000",
        ),
        "flagged readings": (
            f"select ts, device_id, site, metric, value, baseline_median, robust_z "
            f"from {schema}.anomalies order by ts desc limit 1000",
            f"select ts, device_id, site, metric, value, baseline_median, robust_z "
            f"from {platinum}.anomaly_scores where tenant = '{TENANT}' and is_anomaly "
            "order by ts desc limit 1000",
        ),
        "anomalies per day": (
            f"select date_trunc('day', ts), metric, count(*) from {schema}.anomalies "
            "group by 1, 2 order by 1 limit 10000",
            f"select date_trunc('day', ts), metric, count(*) from {platinum}.anomaly_scores "
            f"where tenant = '{TENANT}' and is_anomaly group by 1, 2 order by 1 limit 10000",
        ),
        "sites (map and table)": (
            f"select site, lat, lon from {schema}.sites order by site",
            f'select site, lat, lon from lake."{PREFIX}silver".dim_site '
            f"where tenant = '{TENANT}' order by site",
        ),
    }


def timings(run: Any, repeat: int) -> list[float]:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


@dataclass(frozen=True)
class History:
    """`readings` readings of the fleet, one of each series every `cadence` seconds,
    ending an hour before the current hour (that last hour is the incremental run's)."""

    readings: int
    cadence: int
    hour: datetime = field(  # the current hour, fixed once
        default_factory=lambda: datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )

    @property
    def seconds(self) -> int:
        return round(self.readings / (DEVICES * len(METRICS))) * self.cadence

    @property
    def start(self) -> datetime:
        return self.hour - timedelta(hours=1, seconds=self.seconds)


def prepare(settings: Settings, credentials: Any, history: History) -> tuple[Any, list[Any]]:
    catalog = iceberg_catalog(settings, credentials, s3_key="ingest")
    drop_environment(catalog, PREFIX)
    table = create_environment(catalog, PREFIX)
    devices = register_fleet(
        settings,
        credentials,
        PREFIX,
        lambda site: (50.0 + int(site[-1]) / 4, 8.0 + int(site[-1]) / 3),
        since=history.start - timedelta(days=1),
    )
    started = time.perf_counter()
    loaded = load_seconds(
        table, devices, 0, history.seconds, step=history.cadence, start=history.start
    )
    console.print(
        f"bronze: {loaded:,} readings from {history.start:%Y-%m-%d %H:%M} UTC, one per "
        f"series every {history.cadence} s, in {time.perf_counter() - started:.1f} s"
    )
    return table, devices


def publish_figures(settings: Settings, credentials: Any, table: Any, devices: list[Any],
                    history: History) -> dict[str, float]:  # fmt: skip
    runner = TransformRunner(settings, credentials, quiet=True)
    console.print(f"full transform: {timed_run(runner, full_refresh=True):.1f} s")
    publisher = ServingPublisher(settings, credentials)
    full = publisher.publish(full_refresh=True)
    console.print(describe(full))
    added = load_seconds(
        table, devices, history.seconds, 3600, step=history.cadence, start=history.start
    )
    console.print(f"incremental transform (+1 h, {added:,} readings): {timed_run(runner):.1f} s")
    incremental = publisher.publish()
    console.print(describe(incremental))
    return {"full": full.seconds, "incremental": incremental.seconds}


def add_business_user(settings: Settings) -> tuple[str, str]:
    name = f"{PREFIX}viewer".replace("_", "-")
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "users", "add", name, "--tenant", TENANT],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return name, result.stdout.strip()


def browser_figures(settings: Settings, user: tuple[str, str], loads: int) -> dict[str, float]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    url = f"http://{settings.host}:{settings.superset.port}"
    figures: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/login/")
        page.fill("[data-test=username-input]", user[0])
        page.fill("[data-test=password-input]", user[1])
        page.click("[data-test=login-button]")
        page.wait_for_load_state("networkidle")
        for slug, charts in DASHBOARDS.items():
            rendered = (
                "() => document.querySelectorAll('.dashboard-component-chart-holder').length"
                f" === {charts} && document.querySelectorAll('.dashboard-component-chart-holder "
                ".chart-container, .dashboard-component-chart-holder table').length >= "
                f"{charts} && !document.querySelector('.dashboard-component-chart-holder "
                ".loading')"
            )
            times = []
            for attempt in range(loads + 1):  # the first load is the cold one
                started = time.perf_counter()
                page.goto(f"{url}/superset/dashboard/{slug}/?standalone=1")
                try:
                    page.wait_for_function(rendered, timeout=120_000, polling=50)
                except PlaywrightTimeoutError:
                    page.screenshot(path=f"{slug}-not-rendered.png", full_page=True)
                    console.print(
                        f"dashboard {slug} did not render in 120 s: {slug}-not-rendered.png"
                    )
                    times.append(float("inf"))
                    break
                if attempt:
                    times.append(time.perf_counter() - started)
                # Charts animate in for about a second after their data arrives; the next
                # load starts once the page is idle, as a user's would.
                page.wait_for_timeout(2000)
            figures[slug] = statistics.median(times)
        browser.close()
    return figures


def platform_memory(stack: Stack) -> tuple[float, float]:
    """Resident memory of the supervisor and everything it runs, in GiB: summed per
    process (shared pages counted in every process that maps them), and proportional
    (each shared page counted once); prints each service's share."""
    services = [(s.name, s.pid) for s in stack.status() if s.pid]
    for name, pid in services:
        console.print(
            f"  {name:16} RSS {process.tree_rss(pid) / 2**20:6.0f} MiB, "
            f"PSS {process.tree_pss(pid) / 2**20:6.0f} MiB"
        )
    supervisor = stack.supervisor_pid()
    if supervisor is None:
        pids = [pid for _, pid in services]
        rss = sum(process.tree_rss(pid) for pid in pids)
        pss = sum(process.tree_pss(pid) for pid in pids)
    else:
        own = process.tree_rss(supervisor, children=False)
        console.print(f"  {'supervisor':16} RSS {own / 2**20:6.0f} MiB (its own process)")
        rss, pss = process.tree_rss(supervisor), process.tree_pss(supervisor)
    return rss / 2**30, pss / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument(
        "--cadence", type=int, default=300, help="Seconds between readings of one series."
    )
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark namespaces.")
    args = parser.parse_args()
    settings = Settings()
    settings.transform.schema_prefix = PREFIX
    settings.serving.publish_after_transform = False  # published below, timed on its own
    stack = Stack(settings, Console(stderr=True))
    stack.up()
    credentials = load(settings)

    history = History(args.readings, args.cadence)
    table, devices = prepare(settings, credentials, history)
    published = publish_figures(settings, credentials, table, devices, history)
    schema, gold = settings.serving.schema_name, f'lake."{PREFIX}gold"'
    tenant_role = roles.tenant_role(TENANT)
    serving = psycopg.connect(
        host=settings.host, port=settings.postgres.port, user=tenant_role,
        password=roles.role_password(credentials, tenant_role), dbname="lakehouse",
        autocommit=True,
    )  # fmt: skip
    trino = trino_connection(settings).cursor()
    query_rows = []
    for name, (pg_sql, trino_sql) in chart_queries(schema, gold).items():
        pg_times = timings(lambda sql=pg_sql: serving.execute(sql).fetchall(), args.queries)

        def on_trino(sql: str = trino_sql) -> None:
            trino.execute(sql)
            trino.fetchall()

        trino_times = timings(on_trino, args.queries)
        query_rows.append((name, p95(pg_times), p95(trino_times)))
    serving.close()
    user = add_business_user(settings)
    rendered = browser_figures(settings, user, args.loads)
    rss, pss = platform_memory(stack)

    console.rule(f"serving at {args.readings:,} bronze readings")
    targets = Targets()
    share = published["incremental"] / published["full"]
    console.print(
        f"publish: one run's changes {published['incremental']:.2f} s vs full copy "
        f"{published['full']:.2f} s = {share:.1%}"
    )
    targets.check("incremental publish ≤ 10 % of the full copy", share <= 0.10, f"{share:.1%}")
    worst = 0.0
    for name, pg, tr in query_rows:
        worst = max(worst, pg)
        console.print(
            f"{name:32} serving p95 {pg * 1000:6.1f} ms | Trino gold p95 {tr * 1000:7.1f} ms "
            f"| ratio {pg / tr:.3f}"
        )
    console.print(f"worst serving p95 {worst * 1000:.1f} ms")
    targets.check("serving chart queries, worst p95 ≤ 100 ms", worst <= 0.1,
                  f"{worst * 1000:.1f} ms")  # fmt: skip
    slowest = max(rendered.values())
    for slug, seconds in rendered.items():
        console.print(f"dashboard {slug:16} warm {seconds:.2f} s (median of {args.loads} loads)")
    console.print(f"slowest dashboard {slowest:.2f} s")
    targets.check("slowest dashboard, warm, ≤ 3 s", slowest <= 3, f"{slowest:.2f} s")
    console.print(
        f"whole platform resident memory {pss:.2f} GiB, shared pages counted once (PSS); "
        f"summed per process {rss:.2f} GiB, PostgreSQL's shared buffers counted in each "
        "backend"
    )
    targets.check("whole platform resident memory (PSS) < 6 GiB", pss < 6, f"{pss:.2f} GiB")
    if not args.keep:
        drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), PREFIX)
    targets.exit()


if __name__ == "__main__":
    main()
