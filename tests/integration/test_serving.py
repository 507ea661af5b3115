"""The PostgreSQL serving layer on the real stack: what a publish copies, that it is one
transaction, and that row-level security holds against what a tenant can try.

The module works under its own prefix (`s<id>_bronze` … in the lake, `s<id>_serving` in
PostgreSQL) with tenants of its own, so nothing else the test stack holds is touched.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from lakehouse_testing.bronze_writer import append_from_kafka, create_environment, drop_environment

from lakehouse import registry
from lakehouse.clients import iceberg_catalog, postgres_connection, trino_connection
from lakehouse.errors import UnsafeServingRoleError
from lakehouse.serving import roles
from lakehouse.serving.publish import ServingPublisher, describe
from lakehouse.serving.tables import TABLES
from lakehouse.transform.runner import TransformRunner

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 10, 1, tzinfo=UTC)
H0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@dataclass
class Served:
    settings: Any
    credentials: Any
    prefix: str
    schema: str
    table: Any
    tenants: dict[str, str]
    devices: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)

    def run(self, **kwargs: bool) -> Any:
        report = TransformRunner(self.settings, self.credentials, quiet=True).run(**kwargs)
        assert report.outcome == "published", report.error
        assert report.serving_error is None
        return report

    def append(self, key: str, hour: int, values: list[float], metric: str = "temperature"):
        identity = self.devices[key]
        readings = []
        for i, value in enumerate(values):
            self.seq[key] = self.seq.get(key, 0) + 1
            ts = H0 + timedelta(hours=hour, minutes=i)
            readings.append(
                (identity, {"seq": self.seq[key], "ts": ts.isoformat(), "metric": metric,
                            "value": value})
            )  # fmt: skip
        append_from_kafka(self.table, readings, partition=0)

    def owner(self) -> psycopg.Connection[Any]:
        conn = postgres_connection(self.settings, self.credentials)
        conn.autocommit = True
        return conn

    def login(self, role: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.settings.host, port=self.settings.postgres.port, user=role,
            password=roles.role_password(self.credentials, role), dbname="lakehouse",
            autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.settings.host, port=self.settings.postgres.port,
            user=self.settings.postgres.superuser,
            password=self.credentials.postgres_superuser_password, dbname="lakehouse",
            autocommit=True,
        )  # fmt: skip

    def gold_counts(self, table: Any) -> dict[str, int]:
        """Rows per tenant of a serving table's source, read through Trino."""
        cursor = trino_connection(self.settings).cursor()
        cursor.execute(
            f'select tenant, count(*) from lake."{self.prefix}{table.layer}"."{table.source}" '
            f"as s where {table.where} group by tenant"
        )
        return {tenant: count for tenant, count in cursor.fetchall()}


@pytest.fixture(scope="module")
def served(stack, stack_settings, credentials) -> Iterator[Served]:
    u = uuid.uuid4().hex[:8]
    prefix = f"s{u}_"
    settings = stack_settings.model_copy(deep=True)
    settings.transform.schema_prefix = prefix
    settings.serving.schema_name = f"s{u}_serving"
    catalog = iceberg_catalog(settings, credentials, s3_key="ingest")
    table = create_environment(catalog, prefix)
    tenants = {"a": f"acme-{u}", "b": f"globex-{u}"}
    env = Served(settings, credentials, prefix, settings.serving.schema_name, table, tenants)
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        for key, tenant, site, lat in (("a1", "a", "north", 52.5), ("a2", "a", "north", 52.5),
                                       ("b1", "b", "south", 48.1)):  # fmt: skip
            identity = (f"{key}-{u}", tenants[tenant], f"{site}-{u}")
            registry.register(conn, identity[0], tenant=identity[1], site=identity[2],
                              lat=lat, lon=13.4, since=SINCE)  # fmt: skip
            env.devices[key] = identity
    # Two hours of three devices, one outlier for the anomaly table: judged against the
    # hour before it, 8 readings (fewer flag nothing).
    env.append("a1", 0, [20, 21, 22, 21, 20, 21, 22, 21])
    env.append("a2", 0, [30, 31, 30])
    env.append("b1", 0, [10, 11, 10, 12])
    env.append("a1", 1, [22, 90])
    env.append("b1", 1, [13])
    env.run()
    yield env
    with env.owner() as conn:
        conn.execute(f"drop schema if exists {env.schema} cascade")
    drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), prefix)


def test_serving_holds_exactly_what_gold_and_platinum_hold(served):
    with served.owner() as conn:
        for table in TABLES:
            rows = conn.execute(
                f"select tenant, count(*) from {served.schema}.{table.name} group by tenant"
            ).fetchall()
            assert dict(rows) == served.gold_counts(table), table.name
        hourly = conn.execute(
            f"select device_id, hour, readings, value_max from {served.schema}.device_hourly "
            "where metric = 'temperature' order by device_id, hour"
        ).fetchall()
        flagged = conn.execute(
            f"select device_id, seq, value from {served.schema}.anomalies"
        ).fetchall()
        record = conn.execute(
            "select serving from transform.runs where schema_prefix = %s", (served.prefix,)
        ).fetchone()
    a1, a2, b1 = (served.devices[k][0] for k in ("a1", "a2", "b1"))
    assert [(d, h.astimezone(UTC), n, m) for d, h, n, m in hourly] == [
        (a1, H0, 8, 22.0), (a1, H0 + timedelta(hours=1), 2, 90.0),
        (a2, H0, 3, 31.0),
        (b1, H0, 4, 12.0), (b1, H0 + timedelta(hours=1), 1, 13.0),
    ]  # fmt: skip
    assert flagged == [(a1, 10, 90.0)]
    assert record is not None and record[0]["full_refresh"] is True
    assert record[0]["tables"]["device_hourly"] == {"deleted": 0, "inserted": 5}


def test_a_tenant_sees_its_own_rows_and_nothing_else(served):
    for key, tenant in served.tenants.items():
        with served.login(roles.tenant_role(tenant)) as conn:
            for table in TABLES:
                rows = dict(
                    conn.execute(
                        f"select tenant, count(*) from {served.schema}.{table.name} group by tenant"
                    ).fetchall()
                )
                expected = served.gold_counts(table).get(tenant, 0)
                assert rows == ({tenant: expected} if expected else {}), (key, table.name)
            total = conn.execute(
                f"select sum(readings) from {served.schema}.device_hourly"
            ).fetchone()
            assert total is not None
            assert total[0] == {"a": 13, "b": 5}[key]


def _other_tenant_rows(conn: psycopg.Connection[Any], schema: str, tenant: str) -> int:
    row = conn.execute(
        f"select count(*) from {schema}.device_hourly where tenant <> %s", (tenant,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_what_a_tenant_tries_fails_or_shows_only_its_own_rows(served):
    schema = served.schema
    mine, other = served.tenants["a"], served.tenants["b"]
    me, them = roles.tenant_role(mine), roles.tenant_role(other)
    refused = {
        f'set role "{them}"': psycopg.errors.InsufficientPrivilege,
        f"set role {roles.ALL_TENANTS_ROLE}": psycopg.errors.InsufficientPrivilege,
        f'set session authorization "{them}"': psycopg.errors.InsufficientPrivilege,
        f"select set_config('role', '{them}', false)": psycopg.errors.InsufficientPrivilege,
        f"select set_config('session_authorization', '{them}', false)": (
            psycopg.errors.InsufficientPrivilege
        ),
        f"create view {schema}.mine as select * from {schema}.device_hourly": (
            psycopg.errors.InsufficientPrivilege
        ),
        f"alter table {schema}.device_hourly disable row level security": (
            psycopg.errors.InsufficientPrivilege
        ),
        f"create policy open on {schema}.device_hourly using (true)": (
            psycopg.errors.InsufficientPrivilege
        ),
        f"insert into {schema}.tenant_roles values ('{me}', '{other}')": (
            psycopg.errors.InsufficientPrivilege
        ),
    }
    with served.login(me) as conn:
        for statement, error in refused.items():
            with pytest.raises(error, check=lambda _: True):
                conn.execute(statement)
                pytest.fail(f"a tenant could run: {statement}")
            assert _other_tenant_rows(conn, schema, mine) == 0, statement
        # What it may do changes nothing it sees.
        conn.execute(f"grant select on {schema}.device_hourly to public")  # "no privileges"
        assert _other_tenant_rows(conn, schema, mine) == 0
        # A group it belongs to: identity stays the login role, and so do its rows.
        conn.execute(f"set role {roles.READER_ROLE}")
        assert conn.execute(f"select count(*) from {schema}.device_hourly").fetchone() == (3,)
        assert _other_tenant_rows(conn, schema, mine) == 0
        conn.execute("reset role")
        conn.execute("set search_path = pg_temp, public")
        conn.execute(f"create temp view mine as select * from {schema}.device_hourly")
        conn.execute(
            "create function pg_temp.everything() returns setof bigint language sql "
            f"security definer as $$ select readings from {schema}.device_hourly $$"
        )
        assert conn.execute("select count(*) from mine where tenant <> %s", (mine,)).fetchone() == (
            0,
        )
        assert conn.execute("select sum(e) from pg_temp.everything() as e").fetchone() == (13,)
        assert conn.execute(f"select {schema}.current_tenant()").fetchone() == (mine,)
        conn.execute("reset all")
        assert _other_tenant_rows(conn, schema, mine) == 0


def test_the_start_check_names_each_unsafe_role(served):
    intruder = roles.tenant_role(f"intruder-{uuid.uuid4().hex[:6]}")
    publisher = ServingPublisher(served.settings, served.credentials)
    admin = served.superuser()
    try:
        admin.execute(f'create role "{intruder}" login superuser')
        with pytest.raises(UnsafeServingRoleError, match=f"{intruder} is a superuser"):
            publisher.prepare()
        admin.execute(f'alter role "{intruder}" nosuperuser bypassrls')
        with pytest.raises(UnsafeServingRoleError, match=f"{intruder} has BYPASSRLS"):
            publisher.prepare()
        admin.execute(f'alter role "{intruder}" nobypassrls')
        admin.execute(f'grant {roles.OWNER_ROLE} to "{intruder}"')
        with pytest.raises(UnsafeServingRoleError, match=f"{intruder} owns serving table"):
            publisher.prepare()
        admin.execute(f'revoke {roles.OWNER_ROLE} from "{intruder}"')
        assert publisher.prepare() == sorted(
            row[0] for row in admin.execute("select tenant from registry.tenants")
        )
    finally:
        admin.execute(f'drop role if exists "{intruder}"')
        admin.close()


def test_a_publish_gives_every_tenant_its_login_and_restores_a_lost_one(served):
    newcomer = f"initech-{uuid.uuid4().hex[:6]}"
    role = roles.tenant_role(newcomer)
    publisher = ServingPublisher(served.settings, served.credentials)
    tenant_sql = f"select {served.schema}.current_tenant()"
    admin = served.superuser()
    try:
        with served.owner() as conn:
            registry.ensure_tenant(conn, newcomer)
        assert publisher.publish().outcome == "up_to_date"
        with served.login(role) as conn:
            assert conn.execute(tenant_sql).fetchone() == (newcomer,)
        admin.execute(f'drop role "{role}"')
        assert publisher.publish().outcome == "up_to_date"
        with served.login(role) as conn:
            assert conn.execute(tenant_sql).fetchone() == (newcomer,)
        # Unchanged tenants: the next publish leaves the roles as they are.
        admin.execute(f'alter role "{role}" connection limit 7')
        publisher.publish()
        assert admin.execute(
            "select rolconnlimit from pg_roles where rolname = %s", (role,)
        ).fetchone() == (7,)
    finally:
        with served.owner() as conn:
            conn.execute("delete from registry.tenants where tenant = %s", (newcomer,))
        admin.execute(f'drop role if exists "{role}"')
        admin.close()


def test_a_publish_is_one_transaction_and_only_touches_what_the_run_changed(served):
    schema = served.schema
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            with served.login(roles.ALL_TENANTS_ROLE) as conn:
                while not stop.is_set():
                    row = conn.execute(
                        f"select (select coalesce(sum(readings), 0) from {schema}.device_hourly),"
                        f" (select coalesce(sum(readings), 0) from {schema}.site_daily)"
                    ).fetchone()
                    assert row is not None
                    seen.add((int(row[0]), int(row[1])))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    with served.owner() as conn:
        before = conn.execute(f"select * from {schema}.device_hourly").fetchall()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        served.append("b1", 3, [14, 15])  # a new hour of one device
        report = served.run()
        full = ServingPublisher(served.settings, served.credentials).publish(full_refresh=True)
    finally:
        stop.set()
        watcher.join(30)
    assert not errors, errors
    # Every snapshot a reader saw is whole: hourly and daily totals agree, old or new.
    assert seen <= {(18, 18), (20, 20)} and (20, 20) in seen, seen
    assert report.serving is not None and report.serving.full_refresh is False
    changes = {name: (c.deleted, c.inserted) for name, c in report.serving.tables.items()}
    assert changes["device_hourly"] == (0, 1)
    assert changes["site_daily"] == (1, 1)  # the day of (south, temperature) again
    assert changes["anomalies"] == (0, 0)
    assert full.full_refresh and full.tables["device_hourly"].inserted == 6
    with served.owner() as conn:
        after = conn.execute(f"select * from {schema}.device_hourly").fetchall()
    assert len(after) == len(before) + 1 and set(before) <= set(after)
    assert ServingPublisher(served.settings, served.credentials).publish().outcome == "up_to_date"


def test_a_publish_before_any_transform_run_says_there_is_nothing_to_serve(
    stack, stack_settings, credentials
):
    u = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(deep=True)
    settings.transform.schema_prefix = f"e{u}_"
    settings.serving.schema_name = f"e{u}_serving"
    try:
        report = ServingPublisher(settings, credentials).publish()
        assert report.outcome == "nothing_published"
        assert describe(report) == (
            "nothing to serve yet: no transform run has published gold and platinum "
            "(`lakehouse transform run` builds them)"
        )
    finally:
        with postgres_connection(settings, credentials) as conn:
            conn.autocommit = True
            conn.execute(f"drop schema if exists {settings.serving.schema_name} cascade")
