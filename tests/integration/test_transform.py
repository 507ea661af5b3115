"""Transforms on the real stack: golden numbers, idempotence, incremental = full refresh,
write-audit-publish on failure, and publishing while ingestion keeps committing.

Each test works in its own namespaces (`t<id>_bronze` … `t<id>_platinum`) with its own
registered devices; bronze is written as the consumer writes it (rows plus committed
offsets in one snapshot), or by the real consumer process.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from lakehouse_testing.bronze_writer import (
    append_file,
    append_from_kafka,
    create_environment,
    drop_environment,
)

from lakehouse import audit, registry
from lakehouse.clients import iceberg_catalog, kafka_config, postgres_connection, trino_connection
from lakehouse.errors import ServersAwayError
from lakehouse.nessie import NessieClient
from lakehouse.transform.runner import RunReport, TransformRunner
from tests.integration.conftest import lakehouse, start_consumer, stop_consumer

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 10, 1, tzinfo=UTC)
H0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
MODELS = (
    "silver.readings", "silver.readings_quarantine", "internal.bronze_progress",
    "gold.fct_device_hourly", "gold.fct_site_daily", "gold.device_health",
    "platinum.device_features", "platinum.anomaly_scores", "internal.hour_baselines",
)  # fmt: skip


@dataclass
class Env:
    """One isolated lakehouse environment and its devices."""

    settings: Any
    credentials: Any
    prefix: str
    u: str
    table: Any
    devices: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def runner(self) -> TransformRunner:
        return TransformRunner(self.settings, self.credentials, quiet=True)

    def run(self, **kwargs: bool) -> RunReport:
        return self.runner().run(**kwargs)

    def query(self, sql: str) -> list[list[Any]]:
        cursor = trino_connection(self.settings).cursor()
        cursor.execute(sql.replace("{p}", f"lake.{self.prefix}"))
        return cursor.fetchall()

    def snapshot_ids(self) -> dict[str, int | None]:
        catalog = iceberg_catalog(self.settings, self.credentials, s3_key="ingest")
        return {
            name: catalog.load_table(f"{self.prefix}{name}").metadata.current_snapshot_id
            for name in MODELS
        }

    def contents(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every model's rows without run ids, floats rounded, sorted."""
        result = {}
        for name in MODELS:
            cursor = trino_connection(self.settings).cursor()
            cursor.execute(f"select * from lake.{self.prefix}{name}")
            columns = [d[0] for d in cursor.description]
            keep = [i for i, c in enumerate(columns) if c != "run_id"]
            rows = [tuple(_canonical(row[i]) for i in keep) for row in cursor.fetchall()]
            result[name] = sorted(rows, key=repr)
        return result


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return value


@pytest.fixture
def env(stack, stack_settings, credentials, unique) -> Iterator[Env]:
    prefix = f"t{unique}_"
    settings = stack_settings.model_copy(deep=True)
    settings.transform.schema_prefix = prefix
    settings.serving.publish_after_transform = False  # serving has tests of its own
    catalog = iceberg_catalog(settings, credentials, s3_key="ingest")
    table = create_environment(catalog, prefix)
    environment = Env(settings, credentials, prefix, unique, table)
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        for key, tenant, site, lat in (("a", "ta", "sa", 52.5), ("b", "ta", "sa", 52.5),
                                       ("c", "tb", "sb", 48.1)):  # fmt: skip
            identity = (f"d{key}-{unique}", f"{tenant}-{unique}", f"{site}-{unique}")
            registry.register(conn, identity[0], tenant=identity[1], site=identity[2],
                              lat=lat, lon=13.4, since=SINCE)  # fmt: skip
            environment.devices[key] = identity
    yield environment
    with NessieClient(settings) as nessie:
        for ref in nessie.references():
            if ref.name.startswith("transform_"):
                runs_branch = iceberg_catalog(settings, credentials, ref=ref.name, s3_key="ingest")
                if runs_branch.namespace_exists(f"{prefix}bronze"):
                    environment.runner().discard(ref.name.removeprefix("transform_"))
    drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), prefix)


def reading(seq: int, minutes: float, metric: str, value: float, **extra: Any) -> dict[str, Any]:
    ts = extra.pop("ts", None) or H0 + timedelta(minutes=minutes)
    return {"seq": seq, "ts": ts.isoformat(), "metric": metric, "value": value, **extra}


# ---------------------------------------------------------------------------------------
# Golden numbers


@dataclass
class Row:
    """One input reading and what silver must make of it (None: kept)."""

    identity: tuple[str, str, str]
    reading: dict[str, Any]
    expect: str | None = None


def golden_input(env: Env) -> tuple[list[Row], list[Row], list[Row]]:
    a, b, c = env.devices["a"], env.devices["b"], env.devices["c"]
    unknown = (f"dx-{env.u}", a[1], a[2])
    future = datetime.now(UTC) + timedelta(hours=2)
    # Partition 0: the bulk of hour 10, with an in-window duplicate and an unknown device.
    first = [
        *(Row(a, reading(s, m, "temperature", v))
          for s, m, v in ((1, 0, 20), (2, 10, 21), (3, 20, 22), (4, 30, 23), (5, 40, 40))),
        Row(a, reading(6, 5, "humidity", 50)),
        Row(a, reading(7, 15, "humidity", 52)),
        *(Row(b, reading(s, s, "temperature", v)) for s, v in ((1, 18), (2, 19), (3, 20))),
        *(Row(c, reading(s, 15 * (s - 1), "pressure", 999 + s)) for s in (1, 2, 3, 4)),
        Row(c, reading(1, 0, "pressure", 1000), "duplicate"),
        Row(unknown, reading(1, 0, "temperature", 20), "unknown_device"),
    ]  # fmt: skip
    # Partition 1, in envelopes: later hours first, then late and bad readings.
    second = [
        Row(a, reading(8, 60, "temperature", 24)),
        Row(a, reading(9, 90, "temperature", 25)),
        Row(b, reading(4, 180, "temperature", 21)),
        Row(b, reading(5, 50, "temperature", 19.5)),
        Row(a, reading(2, 10, "temperature", 21), "duplicate"),
        Row(a, reading(10, 45, "temperature", 200), "value_out_of_range"),
        Row(b, reading(6, 0, "temperature", 20, ts=datetime(2026, 9, 1, tzinfo=UTC)),
            "ts_before_device"),
        Row(c, reading(5, 0, "pressure", 1004, ts=future), "ts_in_future"),
        Row((c[0], a[1], c[2]), reading(6, 50, "pressure", 1004), "tenant_mismatch"),
    ]  # fmt: skip
    # A file, ingested whole.
    third = [Row(c, reading(7, 55, "pressure", 1005)), Row(c, reading(8, 58, "pressure", 1006))]
    return first, second, third


def load_golden(env: Env) -> list[Row]:
    first, second, third = golden_input(env)
    append_from_kafka(env.table, [(r.identity, r.reading) for r in first], partition=0)
    append_from_kafka(env.table, [(r.identity, r.reading) for r in second], partition=1,
                      per_message=3)  # fmt: skip
    sha = hashlib.sha256(f"golden-{env.u}".encode()).hexdigest()
    append_file(env.table, [(r.identity, r.reading) for r in third], sha)
    return [*first, *second, *third]


def _ts(row: Row) -> datetime:
    return datetime.fromisoformat(row.reading["ts"])


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _stdev(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def expected_hourly(kept: list[Row]) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    groups: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
    for r in kept:
        groups[(r.identity[0], r.reading["metric"], _hour(_ts(r)))].append(r.reading["value"])
    return {
        key: {"readings": len(v), "min": min(v), "max": max(v), "avg": statistics.fmean(v),
              "stddev": _stdev(v)}
        for key, v in groups.items()
    }  # fmt: skip


def expected_features(kept: list[Row]) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    by_hour: dict[tuple[str, str], dict[datetime, list[float]]] = defaultdict(dict)
    for r in kept:
        series = by_hour[(r.identity[0], r.reading["metric"])]
        series.setdefault(_hour(_ts(r)), []).append(r.reading["value"])
    features = {}
    for (device, metric), hours in by_hour.items():
        for hour, values in hours.items():
            window = [h for h in hours if hour - timedelta(hours=23) <= h <= hour]
            pooled = [x for h in window for x in hours[h]]
            before = hours.get(hour - timedelta(hours=1))
            lag = statistics.fmean(before) if before else None
            features[(device, metric, hour)] = {
                "readings_24h": len(pooled),
                "mean_24h": statistics.fmean(pooled),
                "stddev_24h": _stdev(pooled),
                "lag_1h": lag,
                "rate": statistics.fmean(values) - lag if lag is not None else None,
                "missing": 1 - len(window) / 24,
            }
    return features


def expected_scores(kept: list[Row]) -> dict[tuple[str, int], tuple[float | None, bool | None]]:
    """The model's definition: a reading is compared with the 24 hours before only: the
    hour before when it holds 12 readings or more, otherwise those that hold fewer,
    otherwise the latest; the spread is at least the metric's noise floor, and only a
    baseline of 8 readings or more flags."""
    floors = noise_floors()
    hours: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
    for r in kept:
        hours[(r.identity[0], r.reading["metric"], _hour(_ts(r)))].append(r.reading["value"])
    scores = {}
    for r in kept:
        device, metric, hour = r.identity[0], r.reading["metric"], _hour(_ts(r))
        day = [hours.get((device, metric, hour - timedelta(hours=n)), []) for n in range(1, 25)]
        sparse = [v for in_hour in day if len(in_hour) < 12 for v in in_hour]
        latest = next((in_hour for in_hour in day if in_hour), [])
        values = day[0] if len(day[0]) >= 12 else sparse or latest
        if len(values) < 3:
            scores[(device, r.reading["seq"])] = (None, None)
            continue
        median = statistics.median(values)
        deviations = [abs(v - median) for v in values]
        mad, mean_ad = statistics.median(deviations), statistics.fmean(deviations)
        spread = max(mad, floors.get(metric, 0.0))
        v = r.reading["value"]
        if spread > 0:
            z = 0.6745 * (v - median) / spread
        elif mean_ad > 0:
            z = (v - median) / (1.2533 * mean_ad)
        else:
            z = 0.0
        flag = None if len(values) < 8 else abs(z) > 3.5
        scores[(device, r.reading["seq"])] = (z, flag)
    return scores


def noise_floors() -> dict[str, float]:
    seed = Path(__file__).resolve().parents[2] / "dbt" / "seeds" / "metric_noise_floors.csv"
    with seed.open() as handle:
        return {row["metric"]: float(row["noise_floor"]) for row in csv.DictReader(handle)}


def assert_env_accounted(env: Env) -> None:
    """`lakehouse reconcile` over the whole environment: every reading exactly once."""
    from lakehouse.reconcile.collect import Reconciler
    from lakehouse.reconcile.model import Window

    report = Reconciler(env.settings, env.credentials).run(Window())
    assert report.accounted, [d.describe() for d in report.discrepancies]
    total = report.totals()
    assert total.bronze == total.silver + sum(total.quarantined.values()) > 0
    assert total.gold == total.silver


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)


def test_golden_numbers(env):
    rows = load_golden(env)
    kept = [r for r in rows if r.expect is None]

    report = env.run()

    assert report.outcome == "published", report.error
    assert report.counts == {"bronze": 27, "silver": 20, "quarantine": 7}
    with postgres_connection(env.settings, env.credentials) as conn:
        published = conn.execute(
            "select principal, detail->>'main_after' from audit.events "
            "where source = 'transform' and action = 'publish' and target = %s",
            (report.run_id,),
        ).fetchall()
    assert published == [(audit.actor(), report.main_after)]
    assert len(kept) == 20
    # Quarantine: exactly one row per broken rule, each on the reading that broke it.
    quarantined = env.query("select device_id, seq, failed_rule from {p}silver.readings_quarantine")
    assert sorted(map(tuple, quarantined)) == sorted(
        (r.identity[0], r.reading["seq"], r.expect) for r in rows if r.expect
    )
    silver = env.query("select device_id, seq, value from {p}silver.readings")
    assert sorted(map(tuple, silver)) == sorted(
        (r.identity[0], r.reading["seq"], r.reading["value"]) for r in kept
    )

    hourly = env.query(
        "select device_id, metric, hour, readings, value_min, value_max, value_avg, "
        "value_stddev from {p}gold.fct_device_hourly"
    )
    expected = expected_hourly(kept)
    assert len(hourly) == len(expected) == 6
    for device, metric, hour, n, lo, hi, avg, sd in hourly:
        e = expected[(device, metric, hour)]
        assert (n, lo, hi) == (e["readings"], e["min"], e["max"])
        assert (avg, sd) == (approx(e["avg"]), approx(e["stddev"]))

    site_daily = {
        (site, metric): (n, devices, device_hours, lo, hi, avg, sd, uptime)
        for site, metric, day, n, devices, device_hours, lo, hi, avg, sd, uptime in env.query(
            "select site, metric, day, readings, devices_reporting, device_hours, value_min, "
            "value_max, value_avg, value_stddev, uptime_pct from {p}gold.fct_site_daily"
        )
        if day == date(2026, 11, 1)
    }
    a, b, c = env.devices["a"], env.devices["b"], env.devices["c"]
    temperatures = [r.reading["value"] for r in kept
                    if r.identity[2] == a[2] and r.reading["metric"] == "temperature"]  # fmt: skip
    assert len(temperatures) == 12
    n, devices, device_hours, lo, hi, avg, sd, uptime = site_daily[(a[2], "temperature")]
    # a: hours 10 and 11; b: hours 10 and 13 -> 4 device-hours of 48
    assert (n, devices, device_hours, lo, hi) == (12, 2, 4, 18.0, 40.0)
    assert (avg, sd) == (
        approx(statistics.fmean(temperatures)),
        approx(statistics.stdev(temperatures)),
    )
    assert uptime == approx(100 * 4 / 48)
    assert len(site_daily) == 3

    health = {
        row[0]: row[1:]
        for row in env.query(
            "select device_id, first_seen, last_seen, readings, active_hours, span_hours, "
            "uptime_pct, gaps, longest_gap_hours from {p}gold.device_health "
            f"where device_id in ('{a[0]}', '{b[0]}', '{c[0]}')"
        )
    }
    assert health[a[0]] == [H0, H0 + timedelta(minutes=90), 9, 2, 2, 100.0, 0, 0]
    assert health[b[0]] == [H0 + timedelta(minutes=1), H0 + timedelta(minutes=180), 5, 2, 4,
                            50.0, 1, 2]  # fmt: skip
    assert health[c[0]] == [H0, H0 + timedelta(minutes=58), 6, 1, 1, 100.0, 0, 0]

    features = env.query(
        "select device_id, metric, hour, readings_24h, mean_24h, stddev_24h, lag_1h, "
        "rate_of_change_1h, missing_ratio_24h from {p}platinum.device_features"
    )
    expected_f = expected_features(kept)
    assert len(features) == len(expected_f) == 6
    for device, metric, hour, n, mean, sd, lag, rate, missing in features:
        e = expected_f[(device, metric, hour)]
        assert n == e["readings_24h"]
        assert (mean, sd, lag, rate, missing) == (
            approx(e["mean_24h"]), approx(e["stddev_24h"]), approx(e["lag_1h"]),
            approx(e["rate"]), approx(e["missing"]),
        )  # fmt: skip

    scores = env.query(
        "select device_id, seq, robust_z, is_anomaly, unflagged_reason "
        "from {p}platinum.anomaly_scores"
    )
    expected_s = expected_scores(kept)
    assert len(scores) == len(expected_s) == 20
    for device, seq, z, flag, reason in scores:
        assert (z, flag) == (approx(expected_s[(device, seq)][0]), expected_s[(device, seq)][1])
        assert reason == (None if flag is not None else "small_baseline")
    # a's 40 °C stands far from its hour's other readings, but its first hour has no
    # earlier one to judge it by: it is left unscored and unflagged, and says why; its
    # next hour is scored against this one, still too small a baseline to flag.
    outlier = next(row for row in scores if (row[0], row[1]) == (a[0], 5))
    assert outlier[2:] == [None, None, "small_baseline"]
    next_hour = next(row for row in scores if (row[0], row[1]) == (a[0], 8))
    assert next_hour[2:] == [approx(0.6745 * (24 - 22)), None, "small_baseline"]

    # Running again with no new data changes nothing: no branch, no catalog, no commit
    # on main; the window, read on main, is all it did.
    before = env.contents()
    with NessieClient(env.settings) as nessie:
        main_before = nessie.reference("main").hash
        again = env.run()
        assert again.outcome == "up_to_date"
        assert nessie.reference("main").hash == main_before
        assert again.branch not in {ref.name for ref in nessie.references()}
    assert list(again.phases) == ["record", "prepare", "window"]
    assert [again.branch] not in env.query("show catalogs")
    phases = ["record", "prepare", "window", "branch", "catalog", "parse", "models", "tests",
              "merge", "cleanup"]  # fmt: skip
    assert list(report.phases) == phases
    with postgres_connection(env.settings, env.credentials) as conn:
        (recorded,) = conn.execute(
            "select phases from transform.runs where run_id = %s", (report.run_id,)
        ).fetchone()
    assert sorted(recorded) == sorted(phases)
    assert all(seconds >= 0 for seconds in recorded.values())
    # Forced through dbt anyway, every model still holds exactly the same rows.
    forced = env.run(force=True)
    assert forced.outcome == "published", forced.error
    assert forced.counts == {"bronze": 0, "silver": 0, "quarantine": 0}
    assert env.contents() == before

    record = env.query(
        "select outcome, bronze_rows, silver_rows, quarantined_rows from pg.transform.runs "
        f"where run_id = '{report.run_id}'"
    )
    assert record == [["published", 27, 20, 7]]
    nodes = env.query(
        f"select count(*), count_if(status = 'pass') from pg.transform.run_nodes "
        f"where run_id = '{report.run_id}' and resource_type in ('test', 'unit_test')"
    )
    assert nodes[0][0] == nodes[0][1] > 50


# ---------------------------------------------------------------------------------------
# Incremental runs equal a full refresh


def test_incremental_runs_equal_a_full_refresh(env):
    a, b, c = env.devices["a"], env.devices["b"], env.devices["c"]
    seqs = {"a": 0, "b": 0, "c": 0}

    def batch(round_: int) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
        out = []
        for key, identity, metric in (("a", a, "temperature"), ("b", b, "humidity"),
                                      ("c", c, "pressure")):  # fmt: skip
            for i in range(12):
                seqs[key] += 1
                # Each round moves 2 hours on; every third reading is late by 5 hours.
                minutes = 120 * round_ + 7 * i - (300 if i % 3 == 0 and round_ else 0)
                base = 1000 if metric == "pressure" else 20
                out.append((identity, reading(seqs[key], minutes, metric, base + (i * 7) % 11)))
        out.append(out[round_])  # a duplicate of an earlier reading of this round
        if round_:
            out.append((a, reading(1, 0, "temperature", 20)))  # a duplicate across runs
        out.append((a, reading(10_000 + round_, 3, "temperature", -100)))  # out of range
        return out

    total = 0
    for round_ in range(5):
        total += append_from_kafka(env.table, batch(round_), partition=round_ % 2, per_message=4)
        report = env.run()
        assert report.outcome == "published", report.error
    # Late readings make an earlier hour of a dense (12 or more: the later hours'
    # baselines change rule), and c reports fast, falls silent an hour, then comes back
    # (its baseline: the latest hour before).
    late = [(a, reading(seqs["a"] + i, 121 + i, "temperature", 20 + i % 3)) for i in range(1, 14)]
    fast = [(c, reading(seqs["c"] + i, 40 * 60 + 4 * i, "pressure", 1000 + i % 4))
            for i in range(1, 13)]  # fmt: skip
    back = [(c, reading(seqs["c"] + 13, 42 * 60 + 5, "pressure", 1009))]
    total += append_from_kafka(env.table, [*late, *fast, *back], partition=0, per_message=4)
    assert env.run().outcome == "published"
    assert total == 5 * 39 - 1 + 26
    incremental = env.contents()
    silver, quarantine = (
        len(incremental["silver.readings"]),
        len(incremental["silver.readings_quarantine"]),
    )
    assert (silver, quarantine) == (5 * 36 + 26, total - 5 * 36 - 26)
    baselines = {(d, m, h): n for d, m, h, n, *_ in incremental["internal.hour_baselines"]}
    assert baselines[(c[0], "pressure", H0 + timedelta(hours=42))] == 12

    full = env.run(full_refresh=True)
    assert full.outcome == "published", full.error
    assert full.counts["bronze"] == total
    assert env.contents() == incremental


def test_a_model_given_a_new_column_adds_it_to_its_published_table(env, tmp_path):
    """Incremental runs read their increment straight from the model's query while the
    project is unchanged; the run after a project change adds the model's new columns."""
    a = env.devices["a"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    assert env.run().outcome == "published"
    project = tmp_path / "dbt"
    shutil.copytree(env.settings.transform.project_dir, project)
    model = project / "models" / "gold" / "fct_device_hourly.sql"
    model.write_text(
        model.read_text().replace(
            "count(*) as readings,", "count(*) as readings, 2 * count(*) as readings_twice,"
        )
    )
    env.settings.transform.project_dir = project

    append_from_kafka(env.table, [(a, reading(2, 60, "temperature", 21))], partition=0)
    changed = env.run()
    assert changed.outcome == "published", changed.error
    append_from_kafka(env.table, [(a, reading(3, 120, "temperature", 22))], partition=0)
    unchanged = env.run()
    assert unchanged.outcome == "published", unchanged.error

    assert env.query(
        "select hour, readings, readings_twice from {p}gold.fct_device_hourly order by hour"
    ) == [
        [H0, 1, None],
        [H0 + timedelta(hours=1), 1, 2],
        [H0 + timedelta(hours=2), 1, 2],
    ]


def test_a_device_registered_late_gets_its_quarantined_readings_back(env):
    a = env.devices["a"]
    late = (f"dl-{env.u}", a[1], a[2])
    append_from_kafka(env.table, [
        (a, reading(1, 0, "temperature", 20)),
        (a, reading(2, 10, "temperature", 21)),
        (late, reading(1, 0, "temperature", 19)),
        (late, reading(2, 30, "temperature", 22)),
        (late, reading(2, 30, "temperature", 22)),  # sent twice
        (late, reading(3, 40, "temperature", 200)),  # out of range
    ], partition=0)  # fmt: skip
    assert env.run().outcome == "published"

    def quarantine() -> list[list[Any]]:
        return env.query(
            "select failed_rule, count(*) from {p}silver.readings_quarantine "
            f"where device_id = '{late[0]}' group by 1 order by 1"
        )

    assert quarantine() == [["unknown_device", 4]]
    with postgres_connection(env.settings, env.credentials) as conn:
        conn.autocommit = True
        registry.register(conn, late[0], tenant=late[1], site=late[2], since=SINCE)

    report = env.run()  # no new bronze rows, but the registry changed
    assert report.outcome == "published", report.error
    assert quarantine() == [["duplicate", 1], ["value_out_of_range", 1]]
    assert env.query(
        f"select seq, value from {{p}}silver.readings where device_id = '{late[0]}' order by seq"
    ) == [[1, 19.0], [2, 22.0]]
    assert env.query(
        "select hour, readings, value_sum from {p}gold.fct_device_hourly "
        f"where device_id = '{late[0]}'"
    ) == [[H0, 2, 41.0]]
    incremental = env.contents()
    assert env.run(full_refresh=True).outcome == "published"
    assert env.contents() == incremental


def test_two_year_long_backfills_both_publish(env):
    """Each backfill spans more than a year of days, so one statement writes hundreds of
    day partitions (silver and anomaly_scores): more than a Trino writer's default limit
    of 100 open partitions."""
    days = 370
    start = datetime(2024, 1, 1, tzinfo=UTC)
    tenant, site = env.devices["a"][1], env.devices["a"][2]
    for load, first_day in enumerate((start, start + timedelta(days=days))):
        devices = [(f"bf{load}{n}-{env.u}", tenant, site) for n in range(2)]
        with postgres_connection(env.settings, env.credentials) as conn:
            conn.autocommit = True
            for device in devices:
                registry.register(conn, device[0], tenant=tenant, site=site, since=start)
        rows = [
            (device, reading(h + 1, 0, "temperature", 20.0 + (h % 24) / 4,
                             ts=first_day + timedelta(hours=h)))
            for device in devices
            for h in range(days * 24)
        ]  # fmt: skip
        append_from_kafka(env.table, rows, partition=load, per_message=100)
        report = env.run()
        assert report.outcome == "published", report.error
        listed = ", ".join(f"'{d[0]}'" for d in devices)
        assert env.query(
            "select count(*), count(distinct date(ts)) from {p}silver.readings "
            f"where device_id in ({listed})"
        ) == [[2 * days * 24, days]]
        assert env.query(
            f"select count(*) from {{p}}gold.fct_device_hourly where device_id in ({listed})"
        ) == [[2 * days * 24]]
        assert env.query(
            f"select count(*) from {{p}}platinum.anomaly_scores where device_id in ({listed})"
        ) == [[2 * days * 24]]
    assert_env_accounted(env)


def test_units_are_converted_and_unknown_units_and_metrics_quarantined(env):
    """Silver holds every reading in its metric's canonical unit (°F and K as °C, kPa as
    hPa) and quarantines what it cannot compare: an unknown unit, an unknown metric, a
    converted value out of range. The quarantine keeps what arrived; reconcile accounts
    for every reading."""
    from lakehouse.reconcile.collect import Reconciler
    from lakehouse.reconcile.model import Window

    a = env.devices["a"]
    rows = [
        reading(1, 0, "temperature", 20.0),
        reading(2, 1, "temperature", 68.0, unit="°F"),
        reading(3, 2, "temperature", 293.15, unit="K"),
        reading(4, 3, "pressure", 101.3, unit="kPa"),
        reading(5, 4, "cpu_temperature", 48.5, unit="C"),
        reading(6, 5, "temperature", 3.0, unit="furlongs"),
        reading(7, 6, "radiation", 0.2, unit="uSv/h"),
        reading(8, 7, "temperature", 300.0, unit="F"),
    ]
    append_from_kafka(env.table, [(a, r) for r in rows], partition=0)
    assert env.run().outcome == "published"

    silver = env.query(
        "select seq, metric, round(value, 9), unit from {p}silver.readings "
        f"where device_id = '{a[0]}' order by seq"
    )
    assert silver == [[1, "temperature", 20.0, "C"], [2, "temperature", 20.0, "C"],
                      [3, "temperature", 20.0, "C"], [4, "pressure", 1013.0, "hPa"],
                      [5, "cpu_temperature", 48.5, "C"]]  # fmt: skip
    assert env.query(
        "select seq, failed_rule, value, unit from {p}silver.readings_quarantine "
        f"where device_id = '{a[0]}' order by seq"
    ) == [[6, "unknown_unit", 3.0, "furlongs"], [7, "unknown_metric", 0.2, "uSv/h"],
          [8, "value_out_of_range", 300.0, "F"]]  # fmt: skip
    assert env.query(
        "select readings, round(value_avg, 9) from {p}gold.fct_device_hourly "
        f"where device_id = '{a[0]}' and metric = 'temperature'"
    ) == [[3, 20.0]]
    report = Reconciler(env.settings, env.credentials).run(Window(device=a[0]))
    assert report.accounted, [d.describe() for d in report.discrepancies]
    assert report.devices[a[0]].quarantined == {
        "unknown_unit": 1, "unknown_metric": 1, "value_out_of_range": 1,
    }  # fmt: skip
    assert (report.devices[a[0]].silver, report.devices[a[0]].gold) == (5, 5)


def test_a_reading_from_a_clock_running_ahead_is_held_back_then_published(env):
    """A device clock 30 minutes fast: its reading waits in the quarantine (beyond the
    10-minute tolerance) and the first run after its time has come publishes it, with
    no new bronze rows needed."""
    from lakehouse.reconcile.collect import Reconciler
    from lakehouse.reconcile.model import Window

    a = env.devices["a"]
    now = datetime.now(UTC)
    ahead = (now + timedelta(minutes=30)).replace(microsecond=0)
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 21.0, ts=ahead))], partition=0)
    assert env.run().outcome == "published"
    held = f"from {{p}}silver.readings_quarantine where device_id = '{a[0]}'"
    assert env.query(f"select seq, failed_rule {held}") == [[1, "ts_in_future"]]
    reconciled = Reconciler(env.settings, env.credentials).run(Window(device=a[0]))
    assert reconciled.accounted and reconciled.devices[a[0]].quarantined == {"ts_in_future": 1}
    assert env.run().outcome == "up_to_date"  # its time has not come yet

    later = TransformRunner(env.settings, env.credentials, quiet=True,
                            clock=lambda: now + timedelta(minutes=25))  # fmt: skip
    assert later.run().outcome == "published"
    assert env.query(f"select count(*) {held}") == [[0]]
    assert env.query(f"select seq, value from {{p}}silver.readings where device_id = '{a[0]}'") == [
        [1, 21.0]
    ]
    assert env.query(
        f"select readings from {{p}}gold.fct_device_hourly where device_id = '{a[0]}'"
    ) == [[1]]
    reconciled = Reconciler(env.settings, env.credentials).run(Window(device=a[0]))
    assert reconciled.accounted
    assert (reconciled.devices[a[0]].silver, reconciled.devices[a[0]].quarantined) == (1, {})


def test_an_hourly_device_is_scored_and_its_outlier_flagged(env):
    """A device reporting once an hour has one reading per hour: it is scored against the
    day before it, across incremental runs, exactly as a full rebuild scores it."""
    device = (f"hourly-{env.u}", env.devices["a"][1], env.devices["a"][2])
    with postgres_connection(env.settings, env.credentials) as conn:
        conn.autocommit = True
        registry.register(conn, device[0], tenant=device[1], site=device[2], since=SINCE)
    start = H0 - timedelta(days=2)
    values = {h + 1: 20.0 + (h % 24) / 4 for h in range(48)}
    values[40] = 60.0  # the planted outlier, in the second day

    def load(seqs: range, partition: int) -> None:
        rows = [(device, reading(seq, 0, "temperature", values[seq],
                                 ts=start + timedelta(hours=seq - 1))) for seq in seqs]  # fmt: skip
        append_from_kafka(env.table, rows, partition=partition)
        assert env.run().outcome == "published"

    load(range(1, 31), partition=0)
    load(range(31, 49), partition=1)

    scores = env.query(
        "select seq, robust_z, is_anomaly from {p}platinum.anomaly_scores "
        f"where device_id = '{device[0]}' order by seq"
    )
    assert len(scores) == 48
    assert [seq for seq, z, _ in scores if z is None] == [1, 2, 3]
    assert [seq for seq, _, flagged in scores if flagged] == [40]
    incremental = env.contents()
    assert env.run(full_refresh=True).outcome == "published"
    assert env.contents() == incremental
    assert_env_accounted(env)


# ---------------------------------------------------------------------------------------
# Write-audit-publish


def test_failed_audit_leaves_main_untouched_and_keeps_the_branch(env):
    a, b = env.devices["a"], env.devices["b"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20)),
                                  (b, reading(1, 0, "temperature", 21))], partition=0)  # fmt: skip
    assert env.run().outcome == "published"
    # b disappears from the registry although silver holds its readings: the
    # relationship tests must stop the run.
    with postgres_connection(env.settings, env.credentials) as conn:
        conn.execute("delete from registry.device_tokens where device_id = %s", (b[0],))
        conn.execute("delete from registry.devices where device_id = %s", (b[0],))
    append_from_kafka(env.table, [(a, reading(2, 1, "temperature", 22))], partition=0)
    snapshots = env.snapshot_ids()
    with NessieClient(env.settings) as nessie:
        main_before = nessie.reference("main").hash

        report = env.run()

        assert report.outcome == "failed"
        failed = {n.node.split(".")[2] for n in report.failed_nodes}
        assert any(name.startswith("relationships_readings_device_id") for name in failed)
        assert env.snapshot_ids() == snapshots
        assert nessie.reference("main").hash == main_before
        assert report.branch in {ref.name for ref in nessie.references()}
        # The kept branch holds the run's work for inspection, through its own catalog.
        cursor = trino_connection(env.settings).cursor()
        cursor.execute(f'select count(*) from "{report.branch}".{env.prefix}silver.readings')
        assert cursor.fetchall() == [[3]]
        assert env.query("select count(*) from {p}silver.readings") == [[2]]
        record = env.query(
            f"select outcome, failed_nodes from pg.transform.runs where run_id = '{report.run_id}'"
        )
        assert record[0][0] == "failed" and "relationships_readings_device_id" in record[0][1]

        env.runner().discard(report.run_id)
        assert report.branch not in {ref.name for ref in nessie.references()}


def test_a_run_tests_what_it_wrote_and_the_audit_tests_every_row(env):
    a = env.devices["a"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    first = env.run()
    assert first.outcome == "published", first.error
    # The first run builds the reference tables and tests every row; unit tests are
    # the audit's (and the test suite's), not every run's.
    data_tests = [n for n in first.nodes if n.resource_type == "test"]
    assert "model.lakehouse.dim_device" in {n.node for n in first.nodes}
    assert not [n for n in first.nodes if n.resource_type == "unit_test"]

    passed = env.runner().audit()
    assert passed.outcome == "audited", passed.error
    kinds = Counter(n.resource_type for n in passed.nodes)
    assert kinds == {"test": len(data_tests), "unit_test": 6}
    assert all(n.status == "pass" for n in passed.nodes)

    # A reading no run wrote (a value that is not a number, three days back, written
    # past the transform): the next run's tests do not see it; the audit finds it.
    env.query(
        "insert into {p}silver.readings select device_id, tenant, site, 99, "
        "ts - interval '3' day, metric, nan(), unit, attrs, ingested_at, source, "
        "source_topic, source_partition, source_offset, batch_id, 'written_past_the_transform' "
        "from {p}silver.readings"
    )
    append_from_kafka(env.table, [(a, reading(2, 1, "temperature", 21))], partition=0)
    second = env.run()
    assert second.outcome == "published", second.error
    assert second.counts["silver"] == 1
    ran = {n.node for n in second.nodes}
    assert not {"model.lakehouse.dim_device", "seed.lakehouse.metric_ranges"} & ran
    assert "model.lakehouse.readings" in ran
    assert all(n.status in {"pass", "success"} for n in second.nodes)

    with NessieClient(env.settings) as nessie:
        main = nessie.reference("main").hash
        failed = env.runner().audit()
        assert failed.outcome == "audit_failed"
        assert {n.node.split(".")[2] for n in failed.failed_nodes} == {
            "lakehouse_expression_is_true_readings_value__is_finite_value_"
        }
        assert nessie.reference("main").hash == main == failed.main_before
        assert failed.branch in {ref.name for ref in nessie.references()}
    record = env.query(
        f"select outcome, failed_nodes from pg.transform.runs where run_id = '{failed.run_id}'"
    )
    assert record[0][0] == "audit_failed" and "is_finite_value" in record[0][1]
    env.runner().discard(failed.run_id)


def test_the_analysts_table_reference_lists_what_a_run_publishes(env):
    from lakehouse.docs import REFERENCE, descriptions, lake_columns, render

    a = env.devices["a"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    assert env.run().outcome == "published"
    columns = lake_columns(trino_connection(env.settings).cursor(), env.prefix)
    assert len(columns) == 13  # 10 models and 3 seeds (the work tables are in internal)
    text = render(columns, descriptions(env.settings.transform.project_dir))
    assert text == REFERENCE.read_text(), "docs/tables.md is out of date: run `make docs`"


def test_work_tables_an_older_layout_kept_in_silver_move_to_internal_with_the_next_run(env):
    """A lakehouse made before kept its work tables in silver: the next run moves them to
    `internal` on main before it branches, even with nothing new, the progress with its
    rows (bronze is not processed again), and every later run uses them there."""
    a, p = env.devices["a"], env.prefix
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    assert env.run().outcome == "published"
    catalog = iceberg_catalog(env.settings, env.credentials, s3_key="ingest")
    for table in ("bronze_progress", "run_series", "readings_checked"):
        catalog.rename_table(f"{p}internal.{table}", f"{p}silver.{table}")
    catalog.drop_table(f"{p}internal.hour_baselines")  # newer than that layout
    catalog.drop_namespace(f"{p}internal")
    progress = env.query("select stream, position from {p}silver.bronze_progress order by 1")

    moved = env.run()
    assert moved.outcome == "up_to_date", moved.error
    assert sorted(t for _, t in catalog.list_tables(f"{p}silver")) == [
        "dim_device", "dim_site", "dim_tenant", "metric_noise_floors", "metric_ranges",
        "readings", "readings_quarantine", "unit_conversions",
    ]  # fmt: skip
    assert sorted(t for _, t in catalog.list_tables(f"{p}internal")) == [
        "bronze_progress", "run_series",
    ]  # fmt: skip
    assert env.query("select stream, position from {p}internal.bronze_progress order by 1") == (
        progress
    )
    assert env.query("select count(*) from {p}internal.run_series") == [[1]]
    with postgres_connection(env.settings, env.credentials) as conn:
        (done,) = conn.execute(
            "select detail->'done' from audit.events where action = 'move_work_tables' "
            "and target = %s",
            (moved.run_id,),
        ).fetchone()
    assert len(done) == 3

    append_from_kafka(env.table, [(a, reading(2, 1, "temperature", 21))], partition=0)
    after = env.run()
    assert after.outcome == "published", after.error
    assert after.counts["bronze"] == after.counts["silver"] == 1
    assert env.query("select seq from {p}silver.readings order by seq") == [[1], [2]]
    assert env.query("select count(*) from {p}internal.run_series") == [[2]]
    assert env.run().outcome == "up_to_date"


def test_a_run_waits_for_a_server_that_is_away_and_starts_nothing(env):
    """With Nessie stopped, a run makes no branch and no run record: it says which
    server it waits for; once Nessie is back, the same work publishes."""
    a = env.devices["a"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    with postgres_connection(env.settings, env.credentials) as conn:
        before = conn.execute("select count(*) from transform.runs").fetchone()
    stopped = lakehouse("stack", "stop", "nessie")
    assert stopped.returncode == 0, stopped.stderr
    try:
        with pytest.raises(ServersAwayError) as away:
            env.run()
        assert away.value.message == "nessie not answering; no run started"
        with postgres_connection(env.settings, env.credentials) as conn:
            assert conn.execute("select count(*) from transform.runs").fetchone() == before
    finally:
        started = lakehouse("stack", "start", "nessie")
        assert started.returncode == 0, started.stderr
    report = env.run()
    assert report.outcome == "published", report.error
    assert report.counts["silver"] == 1


def test_a_second_run_is_refused_while_one_holds_the_lock(env, stack_settings, credentials):
    from lakehouse import transform_runs as runs
    from lakehouse.errors import TransformLockedError

    with postgres_connection(stack_settings, credentials) as holder:
        holder.autocommit = True
        runs.ensure_schema(holder)
        runs.acquire_lock(holder)
        with pytest.raises(TransformLockedError):
            env.run()
    # The lock went with the holder's session.
    assert env.run().outcome in {"published", "up_to_date"}


# ---------------------------------------------------------------------------------------
# Publishing while the consumer commits to bronze on main


def test_merge_succeeds_while_the_consumer_commits(env, topic_factory, consumer_log, monkeypatch):
    topic = topic_factory(partitions=3)
    monkeypatch.setenv("LAKEHOUSE_INGEST_NAMESPACE", f"{env.prefix}bronze")
    consumer = start_consumer(topic, f"g-{topic}", "--max-age", "1", log=consumer_log)
    devices = list(env.devices.values())
    total = 6_000
    producer = Producer(kafka_config(env.settings, "simulate", **{"enable.idempotence": True}))

    def produce() -> None:
        for i in range(total // 100):
            device, tenant, site = devices[i % 3]
            envelope = {
                "device_id": device, "tenant": tenant, "site": site,
                "readings": [reading(i // 3 * 100 + j + 1, (i * 100 + j) / 60, "temperature",
                                     20 + j % 5) for j in range(100)],
            }  # fmt: skip
            producer.produce(topic, orjson.dumps(envelope), key=device)
            producer.poll(0)
            time.sleep(0.5)
        producer.flush(30)

    try:
        feeder = threading.Thread(target=produce)
        feeder.start()
        deadline = time.monotonic() + 60
        while _bronze_rows(env) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # the run must start with part of the feed in bronze
        bronze_at_start = _bronze_rows(env)
        report = env.run()
        bronze_at_merge = _bronze_rows(env)
        assert report.outcome == "published", report.error
        # The consumer committed on main while the run worked on its branch.
        assert bronze_at_start < bronze_at_merge
        assert 0 < report.counts["bronze"] < total
        feeder.join()
        deadline = time.monotonic() + 120
        while _bronze_rows(env) < total and time.monotonic() < deadline:
            time.sleep(1)
        assert _bronze_rows(env) == total
    finally:
        assert stop_consumer(consumer) == 0

    final = env.run()
    assert final.outcome == "published", final.error
    assert report.counts["silver"] + final.counts["silver"] == total
    assert env.query(
        "select count(*), count(distinct (device_id, seq)) from {p}silver.readings"
    ) == [[total, total]]
    assert env.query("select count(*) from {p}silver.readings_quarantine") == [[0]]


def _bronze_rows(env: Env) -> int:
    return env.query("select count(*) from {p}bronze.readings")[0][0]


def test_the_loop_runs_as_soon_as_bronze_has_a_new_commit_until_sigterm(env, tmp_path):
    """`--every 3600 --watch 0.5`: the first run publishes at once, and a reading that
    lands later is published by a run its bronze commit starts, long before the hour is
    up; SIGTERM stops the loop cleanly."""
    import os
    import signal
    import subprocess
    import sys

    a = env.devices["a"]
    append_from_kafka(env.table, [(a, reading(1, 0, "temperature", 20))], partition=0)
    log = tmp_path / "transform.log"

    def published() -> int:
        return log.read_text().count(": published in")

    def wait_for(published_runs: int) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and published() < published_runs:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        assert published() == published_runs, log.read_text()

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", "transform", "--every", "3600",
             "--watch", "0.5", "--quiet"],
            env={**os.environ, "LAKEHOUSE_TRANSFORM_SCHEMA_PREFIX": env.prefix},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(1)
            append_from_kafka(env.table, [(a, reading(2, 1, "temperature", 21))], partition=0)
            wait_for(2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(120) == 0
    text = log.read_text()
    assert text.rstrip().endswith("stopped")
    assert "seconds by phase: record" in text
    assert env.query("select seq from {p}silver.readings order by seq") == [[1], [2]]
