"""Least privilege: Trino over HTTPS with passwords and roles; its pg catalog only reads."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from trino.exceptions import TrinoQueryError

from lakehouse import audit
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.tls import ca_path

pytestmark = pytest.mark.integration

REFUSED = [
    # Minting a token for any device, un-revoking one, or forging receipts.
    "insert into pg.registry.device_tokens (token_hash, device_id) "
    "values (from_hex('00'), 'any-device')",
    "update pg.registry.devices set revoked_at = null",
    "delete from pg.registry.upload_batches",
    "select count(*) from pg.registry.device_tokens",
    "select count(*) from pg.registry.upload_batches",
    "delete from pg.transform.runs",
    "create table pg.registry.mine (x integer)",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_the_pg_catalog_cannot_reach_tokens_or_receipts_or_write(stack, stack_settings, statement):
    cursor = trino_connection(stack_settings).cursor()
    with pytest.raises(TrinoQueryError) as info:
        cursor.execute(statement)
        cursor.fetchall()
    # PostgreSQL itself refuses: the catalog's role has no such privilege.
    assert info.value.message.startswith("ERROR: permission denied for "), info.value.message


def test_the_pg_catalog_reads_what_transforms_and_analysts_need(stack, stack_settings):
    cursor = trino_connection(stack_settings).cursor()
    for table in ("registry.devices", "registry.sites", "registry.tenants"):
        cursor.execute(f"select count(*) from pg.{table}")
        assert cursor.fetchall()[0][0] >= 0


# -- Trino: HTTPS, passwords, roles ---------------------------------------------------------


def add_user(name: str, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "users", "add", name, *options],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def people(stack, stack_settings, credentials):
    """An analyst and an analyst of tenant-01, plus the platform's own principals."""
    suffix = uuid.uuid4().hex[:6]
    made = {
        "analyst": (f"analyst-{suffix}", add_user(f"analyst-{suffix}", "--role", "analyst")),
        "tenant": (
            f"acme-{suffix}",
            add_user(f"acme-{suffix}", "--role", "analyst", "--tenant", "tenant-01"),
        ),
    }
    for name in ("lakehouse", "lakehouse-transform", "lakehouse-ingest", "superset"):
        made[name] = (name, credentials.trino_passwords[name])
    time.sleep(6)  # Trino re-reads its password, group and rules files every 5 s
    return made


def test_users_added_are_audited(people, stack_settings, credentials):
    name = people["tenant"][0]
    with postgres_connection(stack_settings, credentials) as conn:
        rows = conn.execute(
            "select principal, action, detail->>'role', detail->>'tenant' from audit.events "
            "where source = 'users' and target = %s",
            (name,),
        ).fetchall()
    assert rows == [(audit.actor(), "add", "analyst", "tenant-01")]


def run(settings, who, statement: str) -> list:
    name, password = who
    cursor = trino_connection(settings, user=name, password=password).cursor()
    cursor.execute(statement)
    return cursor.fetchall()


def refused(settings, who, statement: str) -> str:
    with pytest.raises(TrinoQueryError) as info:
        run(settings, who, statement)
    return info.value.message


ACCESS = [
    # (principal, statement, allowed)
    ("analyst", "select count(*) from lake.silver.readings", True),
    ("analyst", "select count(*) from lake.bronze.readings", False),
    ("analyst", "insert into lake.silver.readings_quarantine (device_id) values ('x')", False),
    ("analyst", "drop table lake.silver.readings", False),
    ("analyst", "create schema lake.mine", False),
    ("analyst", "create catalog mine using tpch", False),
    (
        "analyst",
        "insert into pg.registry.device_tokens (token_hash, device_id) "
        "values (from_hex('00'), 'any')",
        False,
    ),
    ("lakehouse-ingest", "select count(*) from lake.bronze.readings", True),
    ("lakehouse-ingest", "select count(*) from lake.silver.readings", False),
    ("lakehouse-ingest", "drop table lake.silver.readings", False),
    ("lakehouse-transform", "select count(*) from lake.bronze.readings", True),
    ("lakehouse-transform", "create catalog mine using tpch", False),
    ("lakehouse-transform", "drop catalog lake", False),
    ("lakehouse-transform", "create catalog transform_access_probe using tpch", True),
    ("lakehouse-transform", "drop catalog transform_access_probe", True),
    ("superset", "select count(*) from lake.gold.fct_device_hourly", True),
    ("superset", "select count(*) from lake.bronze.readings", False),
    ("lakehouse", "select count(*) from lake.bronze.readings", True),
    ("lakehouse", "select count(*) from pg.registry.devices", True),
]


@pytest.mark.parametrize(("who", "statement", "allowed"), ACCESS)
def test_trino_access_matrix(stack_settings, people, who, statement, allowed):
    if allowed:
        run(stack_settings, people[who], statement)
    else:
        message = refused(stack_settings, people[who], statement)
        assert message.startswith("Access Denied: "), message


def test_a_tenant_analyst_sees_exactly_its_tenants_rows(stack_settings, people, probe):
    assert run(stack_settings, people["tenant"], f"select count(*), sum(v) from {probe}") == [
        [3, 6]
    ]
    assert run(stack_settings, people["analyst"], f"select count(*) from {probe}") == [[5]]


def test_anonymous_wrong_password_and_untrusting_clients_are_refused(stack_settings, people):
    import requests
    import trino
    from trino.auth import BasicAuthentication
    from trino.exceptions import HttpError

    def attempt(verify=True, **options):
        session = requests.Session()
        session.verify = verify
        session.trust_env = False  # the machine's CA bundle variables stay out of it
        connection = trino.dbapi.connect(
            host=stack_settings.host, port=stack_settings.trino.port, http_scheme="https",
            catalog="lake", request_timeout=10, max_attempts=1, http_session=session,
            **options,
        )  # fmt: skip
        cursor = connection.cursor()
        cursor.execute("select 1")
        return cursor.fetchall()

    ca = str(ca_path(stack_settings.home))
    with pytest.raises(HttpError, match="401"):
        attempt(user="lakehouse", verify=ca)
    with pytest.raises(HttpError, match="401"):
        attempt(user="lakehouse", auth=BasicAuthentication("lakehouse", "wrong"), verify=ca)
    name, password = people["analyst"]
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        attempt(user=name, auth=BasicAuthentication(name, password))
    assert attempt(user=name, auth=BasicAuthentication(name, password), verify=ca) == [[1]]


def test_analysts_see_site_coordinates_masked_and_engineers_exactly(stack_settings, people):
    table = f"lake.silver.site_probe_{uuid.uuid4().hex[:6]}"
    engineer = people["lakehouse"]
    run(stack_settings, engineer, f"create table {table} (site varchar, tenant varchar, "
                                  "lat double, lon double)")  # fmt: skip
    try:
        run(stack_settings, engineer,
            f"insert into {table} values ('hq', 'tenant-01', 52.51234, 13.40567)")  # fmt: skip
        query = f"select lat, lon from {table}"
        assert run(stack_settings, engineer, query) == [[52.51234, 13.40567]]
        assert run(stack_settings, people["analyst"], query) == [[52.5, 13.4]]
        assert run(stack_settings, people["tenant"], query) == [[52.5, 13.4]]
    finally:
        run(stack_settings, engineer, f"drop table {table}")


def test_the_pipelines_work_tables_are_for_engineers_and_the_platform_only(
    stack_settings, people, credentials
):
    """`lake.internal` (silver's position in bronze, the latest run's checked rows, the
    series each run touched) is granted to engineers and the platform's principals:
    analysts, a tenant's or not, neither read it nor see the schema, nor does Superset,
    through which analysts query too."""
    table = f"lake.internal.work_probe_{uuid.uuid4().hex[:6]}"
    engineer = people["lakehouse"]
    run(stack_settings, engineer, "create schema if not exists lake.internal")
    run(stack_settings, engineer, f"create table {table} (tenant varchar, v integer)")
    try:
        run(stack_settings, engineer, f"insert into {table} values ('tenant-01', 1)")
        maintain = ("lakehouse-maintain", credentials.trino_passwords["lakehouse-maintain"])
        for who in (engineer, people["lakehouse-transform"], maintain):
            assert run(stack_settings, who, f"select count(*) from {table}") == [[1]]
        for who in ("analyst", "tenant", "superset"):
            message = refused(stack_settings, people[who], f"select count(*) from {table}")
            assert message == f"Access Denied: Cannot select from table {table}", (who, message)
            schemas = {row[0] for row in run(stack_settings, people[who], "show schemas from lake")}
            assert "silver" in schemas and "internal" not in schemas, (who, schemas)
    finally:
        run(stack_settings, engineer, f"drop table {table}")
