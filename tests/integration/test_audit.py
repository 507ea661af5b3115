"""The audit log: each registry change once, with its principal, and never a secret."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from trino.exceptions import TrinoQueryError

from lakehouse import audit, registry
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.credentials import AUDIT_WRITER_ROLE
from lakehouse.errors import RegistryError

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(registry_conn):
    return registry_conn


def _events(conn, *targets: str) -> list[tuple]:
    return conn.execute(
        "select source, principal, action, target, outcome from audit.events "
        "where target = any(%s) order by id",
        (list(targets),),
    ).fetchall()


def test_registry_changes_are_logged_once_each_without_secrets(conn, unique):
    tenant, site, device = f"audit-t-{unique}", f"audit-s-{unique}", f"audit-d-{unique}"
    first = registry.register(conn, device, tenant=tenant, site=site, lat=1.0, lon=2.0)
    second = registry.rotate(conn, device, grace=timedelta(minutes=5))
    registry.revoke(conn, device)
    with pytest.raises(RegistryError):
        registry.revoke(conn, device)  # refused: nothing changed, nothing logged
    with pytest.raises(RegistryError):
        registry.rotate(conn, device, grace=timedelta(0))

    me = audit.actor()
    assert _events(conn, device, tenant) == [
        ("registry", me, "register", device, "ok"),
        ("registry", me, "rotate", device, "ok"),
        ("registry", me, "revoke", device, "ok"),
    ]
    logged = conn.execute(
        "select string_agg(e::text, ' ') from audit.events e where target = %s", (device,)
    ).fetchone()[0]
    for token in (first, second):
        assert token not in logged
        assert registry.token_hash(token).hex() not in logged


def test_a_new_tenant_is_logged_once(conn, unique):
    tenant = f"audit-only-{unique}"
    registry.ensure_tenant(conn, tenant)
    registry.ensure_tenant(conn, tenant)
    assert _events(conn, tenant) == [("registry", audit.actor(), "add_tenant", tenant, "ok")]


def test_a_failed_change_leaves_no_event(conn, unique):
    device = f"audit-x-{unique}"
    with pytest.raises(RegistryError):  # a new site needs coordinates
        registry.register(conn, device, tenant=f"audit-t-{unique}", site=f"nowhere-{unique}")
    assert _events(conn, device) == []


def _trino_events(conn, marker: str, expected: int, timeout: float = 60) -> list[tuple]:
    """Trino's events whose statement carries `marker`, once `expected` of them arrived."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute(
            "select principal, action, target, outcome, detail->>'error' from audit.events "
            "where source = 'trino' and detail->>'statement' like %s order by outcome",
            (f"%{marker}%",),
        ).fetchall()
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_trino_queries_are_logged_once_with_principal_and_outcome(
    conn, stack_settings, credentials, unique
):
    ingest = "lakehouse-ingest"
    password = credentials.trino_passwords[ingest]
    cursor = trino_connection(stack_settings, user=ingest, password=password).cursor()
    marker = f"audit-probe-{unique}"
    cursor.execute(f"select count(*) /* {marker} ok */ from lake.bronze.readings")
    cursor.fetchall()
    with pytest.raises(TrinoQueryError):
        cursor.execute(f"create catalog refused_{unique} /* {marker} refused */ using tpch")
        cursor.fetchall()

    rows = _trino_events(conn, marker, 2)
    time.sleep(2)  # a duplicate delivery would show by now
    assert (
        _trino_events(conn, marker, 2)
        == rows
        == [
            (ingest, "SELECT", None, "ok", None),
            (ingest, "DATA_DEFINITION", None, "refused", "PERMISSION_DENIED"),
        ]
    )
    leaked = conn.execute(
        "select count(*) from audit.events where strpos(detail::text, %s) > 0", (password,)
    ).fetchone()
    assert leaked == (0,)


def test_the_receivers_role_can_only_append_to_the_log(conn, stack_settings, credentials, unique):
    import psycopg
    from psycopg import errors

    writer = postgres_connection(stack_settings, credentials, role=AUDIT_WRITER_ROLE,
                                 dbname="lakehouse")  # fmt: skip
    writer.autocommit = True
    with writer:
        writer.execute(
            "insert into audit.events (source, principal, action, detail) "
            "values ('trino', 'probe', 'SELECT', %s)",
            (f'{{"query_id": "probe-{unique}"}}',),
        )
        for statement in (
            "select count(*) from audit.events",
            "update audit.events set outcome = 'ok'",
            "delete from audit.events",
            "truncate audit.events",
            "select count(*) from registry.device_tokens",
            "select count(*) from registry.devices",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                writer.execute(statement)
        with pytest.raises(psycopg.Error):
            writer.execute("create table audit.mine (x int)")
    rows = conn.execute(
        "select principal, action from audit.events where detail->>'query_id' = %s",
        (f"probe-{unique}",),
    ).fetchall()
    assert rows == [("probe", "SELECT")]
