"""Tenant isolation tried as an attacker would: look-alike names, other users' queries,
metadata tables, impersonation in the audit log, access taken away, and Superset's
business users (statistics functions, other schemas, other tenants' users and objects)."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
import requests
import trino
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trino.auth import BasicAuthentication
from trino.exceptions import HttpError, TrinoQueryError

from lakehouse import audit
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.serving import roles
from lakehouse.serving.tables import TABLES
from lakehouse.tls import ca_path
from tests.integration.conftest import lakehouse
from tests.integration.test_superset import SupersetClient

pytestmark = pytest.mark.integration

REFRESH = 6  # Trino re-reads its password, group and rules files every 5 s


def add(name: str, *options: str) -> str:
    result = lakehouse("users", "add", name, *options)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def connect(settings, login: str, password: str, as_user: str | None = None):
    """A Trino connection logged in as `login`, acting as `as_user` (X-Trino-User)."""
    session = requests.Session()
    session.verify = str(ca_path(settings.home))
    session.trust_env = False
    return trino.dbapi.connect(
        host=settings.host, port=settings.trino.port, http_scheme="https", catalog="lake",
        user=as_user or login, auth=BasicAuthentication(login, password),
        request_timeout=30, max_attempts=1, http_session=session,
    )  # fmt: skip


def run(connection, statement: str) -> list:
    cursor = connection.cursor()
    cursor.execute(statement)
    return cursor.fetchall()


def refused(connection, statement: str) -> str:
    with pytest.raises(TrinoQueryError) as info:
        run(connection, statement)
    return info.value.message


@pytest.fixture(scope="module")
def lookalikes(stack):
    """`q<id>.x` of tenant-01 and `q<id>ax` of tenant-02: the first name, read as a
    pattern, matches the second."""
    u = uuid.uuid4().hex[:6]
    dotted, plain = f"q{u}.x", f"q{u}ax"
    made = {
        "tenant-01": (dotted, add(dotted, "--role", "analyst", "--tenant", "tenant-01")),
        "tenant-02": (plain, add(plain, "--role", "analyst", "--tenant", "tenant-02")),
    }
    time.sleep(REFRESH)
    return made


def test_a_lookalike_name_gets_only_its_own_tenants_rows(stack_settings, lookalikes, probe):
    for tenant, expected in (("tenant-01", [[3, 6]]), ("tenant-02", [[2, 9]])):
        name, password = lookalikes[tenant]
        assert run(connect(stack_settings, name, password),
                   f"select count(*), sum(v) from {probe}") == expected  # fmt: skip


def test_superset_impersonating_a_lookalike_gets_only_its_tenants_rows(
    stack_settings, credentials, lookalikes, probe
):
    name, _ = lookalikes["tenant-02"]
    connection = connect(stack_settings, "superset", credentials.trino_passwords["superset"], name)
    assert run(connection, f"select count(*), sum(v) from {probe}") == [[2, 9]]


# What a regular expression reads as more than itself, and what it would then match.
_SPECIAL = {".": "a", "+": "", "*": "", "|": "", "[": "a"}


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stem=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=5),
    special=st.sampled_from(sorted(_SPECIAL)),
)
@example(stem="p", special=".")  # every run tries an accepted name, whatever is drawn
def test_generated_lookalike_names_never_reach_another_tenant(stack_settings, probe, stem, special):
    """A name holding a character patterns treat specially is either refused with the
    rule it breaks, or, accepted, gets its own tenant's rows only, beside the name it
    would match as a pattern, which gets the other tenant's rows only."""
    u = uuid.uuid4().hex[:6]
    special_name = f"g{u}{stem}{special}x"
    # The name `special_name` would match were it read as a regular expression.
    matched = f"g{u}{stem}{_SPECIAL[special]}x" if special != "|" else f"g{u}{stem}"
    made = lakehouse("users", "add", special_name, "--role", "analyst", "--tenant", "tenant-01")
    if special != ".":
        assert made.returncode == 1
        assert made.stderr.splitlines()[0] == f"error: invalid principal {special_name!r}"
        listed = lakehouse("users", "list")
        assert special_name not in listed.stdout
        return
    assert made.returncode == 0, made.stderr
    other = add(matched, "--role", "analyst", "--tenant", "tenant-02")
    try:
        time.sleep(REFRESH)
        for name, password, expected in (
            (special_name, made.stdout.strip(), [[3, 6]]),
            (matched, other, [[2, 9]]),
        ):
            assert run(connect(stack_settings, name, password),
                       f"select count(*), sum(v) from {probe}") == expected  # fmt: skip
    finally:
        for name in (special_name, matched):
            lakehouse("users", "remove", name)


def test_a_name_differing_only_in_separators_is_refused(lookalikes):
    dotted, _ = lookalikes["tenant-01"]
    result = lakehouse("users", "add", dotted.replace(".", "-"), "--role", "analyst",
                       "--tenant", "tenant-02")  # fmt: skip
    assert result.returncode == 1
    assert "only in its separators" in " ".join(result.stderr.split())  # wrapped at 80


def test_a_tenant_analyst_reads_no_metadata_tables_and_no_one_elses_tasks(
    stack_settings, lookalikes, probe
):
    name, password = lookalikes["tenant-01"]
    connection = connect(stack_settings, name, password)
    schema, table = probe.rsplit(".", 1)
    for statement in (
        f'select * from {schema}."{table}$files"',
        f'select * from {schema}."{table}$partitions"',
        "select * from system.runtime.tasks",
    ):
        message = refused(connection, statement)
        assert message.startswith("Access Denied: "), (statement, message)


def test_a_tenant_analyst_gets_no_statistics_and_cannot_turn_them_on(
    stack_settings, lookalikes, probe
):
    """SHOW STATS and EXPLAIN's estimates are whole-table figures the row filter does not
    touch: off for everyone, and only an engineer may turn them on."""
    engineer = trino_connection(stack_settings)
    assert run(engineer, f"show stats for {probe}")[-1][4] is None
    run(engineer, "set session lake.statistics_enabled = true")
    summary = run(engineer, f"show stats for {probe}")
    assert summary[-1][4] == 5.0  # row_count over both tenants
    assert [row[5:] for row in summary if row[0] == "v"] == [["1", "5"]]  # both tenants' bounds
    name, password = lookalikes["tenant-01"]
    connection = connect(stack_settings, name, password)
    stats = run(connection, f"show stats for {probe}")
    assert [row[0] for row in stats] == ["tenant", "v", None]
    assert [value for row in stats for value in row[1:]] == [None] * 18
    plan = run(connection, f"explain select * from {probe}")[0][0]
    assert "rows: 5 " not in plan and "rows: ?" in plan
    message = refused(connection, "set session lake.statistics_enabled = true")
    assert message == "Access Denied: Cannot set catalog session property statistics_enabled"


# -- queries: one's own only ------------------------------------------------------------


@pytest.fixture(scope="module")
def analysts(stack):
    u = uuid.uuid4().hex[:6]
    made = {who: (f"{who}-{u}", add(f"{who}-{u}", "--role", "analyst")) for who in ("ann", "ben")}
    time.sleep(REFRESH)
    return made


def test_analysts_see_only_their_own_queries_and_engineers_all(stack_settings, analysts):
    marker = f"own-query-{uuid.uuid4().hex[:8]}"
    ann = connect(stack_settings, *analysts["ann"])
    ben = connect(stack_settings, *analysts["ben"])
    run(ann, f"select 1 /* {marker} */")
    lookup = (
        "select query_id, query from system.runtime.queries "
        f"where query like '%{marker} */' and query not like '%runtime.queries%'"
    )
    mine = run(ann, lookup)
    assert len(mine) == 1 and marker in mine[0][1]
    assert run(ben, lookup) == []
    assert [row[0] for row in run(trino_connection(stack_settings, catalog="system"), lookup)] == [
        mine[0][0]
    ]
    message = refused(ben, f"call system.runtime.kill_query(query_id => '{mine[0][0]}')")
    assert message.startswith("Access Denied: "), message


# -- the audit log names who logged in ----------------------------------------------------


def test_a_refused_impersonated_query_is_logged_under_the_login(
    stack_settings, credentials, lookalikes
):
    name, _ = lookalikes["tenant-02"]
    marker = f"audit-imp-{uuid.uuid4().hex[:8]}"
    connection = connect(stack_settings, "superset", credentials.trino_passwords["superset"], name)
    refused(connection, f"select count(*) /* {marker} */ from lake.bronze.readings")
    deadline = time.monotonic() + 60
    with postgres_connection(stack_settings, credentials) as conn:
        while True:
            rows = conn.execute(
                "select principal, outcome, detail->>'impersonated' from audit.events "
                "where source = 'trino' and detail->>'statement' like %s",
                (f"%{marker}%",),
            ).fetchall()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert rows == [("superset", "refused", name)]
    # A terminal wide enough for the statement column.
    shown = lakehouse("audit", "show", "--principal", "superset", "--outcome", "refused",
                      "--since", "10m", "--limit", "50",
                      env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert marker in shown.stdout


# -- access taken away ----------------------------------------------------------------------


def logs_in(settings, name: str, password: str) -> bool:
    try:
        run(connect(settings, name, password), "select 1")
    except HttpError as exc:
        assert "401" in str(exc)
        return False
    return True


def test_trino_users_are_disabled_enabled_reset_and_removed_within_seconds(
    stack_settings, credentials
):
    name = f"leaver-{uuid.uuid4().hex[:6]}"
    password = add(name, "--role", "analyst", "--tenant", "tenant-01")
    time.sleep(REFRESH)
    assert logs_in(stack_settings, name, password)

    assert lakehouse("users", "disable", name).returncode == 0
    time.sleep(REFRESH)
    assert not logs_in(stack_settings, name, password)
    impersonating = connect(
        stack_settings, "superset", credentials.trino_passwords["superset"], name
    )
    assert refused(impersonating, "select 1").startswith("Access Denied: ")

    assert lakehouse("users", "enable", name).returncode == 0
    time.sleep(REFRESH)
    assert logs_in(stack_settings, name, password)

    reset = lakehouse("users", "reset", name)
    assert reset.returncode == 0, reset.stderr
    time.sleep(REFRESH)
    assert not logs_in(stack_settings, name, password)
    assert logs_in(stack_settings, name, reset.stdout.strip())

    assert lakehouse("users", "remove", name).returncode == 0
    time.sleep(REFRESH)
    assert not logs_in(stack_settings, name, reset.stdout.strip())
    listed = lakehouse("users", "list", "--json")
    assert name not in listed.stdout

    with postgres_connection(stack_settings, credentials) as conn:
        actions = conn.execute(
            "select principal, action from audit.events where source = 'users' "
            "and target = %s order by id",
            (name,),
        ).fetchall()
    me = audit.actor()
    assert actions == [(me, a) for a in ("add", "disable", "enable", "reset", "remove")]


def test_a_disabled_superset_users_open_session_stops_working(stack, stack_settings):
    name = f"bizleaver-{uuid.uuid4().hex[:6]}"
    password = add(name, "--tenant", "tenant-01")
    url = f"http://{stack_settings.host}:{stack_settings.superset.port}"
    with (
        httpx.Client(base_url=url, timeout=60) as http,
        _browser_session(url, name, password) as browser,
    ):
        login = http.post(
            "/api/v1/security/login",
            json={"username": name, "password": password, "provider": "db"},
        )
        assert login.status_code == 200, login.text
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        assert http.get("/api/v1/me/").status_code == 200
        assert browser.get("/api/v1/me/").status_code == 200

        assert lakehouse("users", "disable", name, "--kind", "superset").returncode == 0
        assert http.get("/api/v1/me/").status_code == 401  # the token issued before
        assert browser.get("/api/v1/me/").status_code == 401  # the session cookie too

        assert lakehouse("users", "remove", name, "--kind", "superset").returncode == 0
        again = http.post(
            "/api/v1/security/login",
            json={"username": name, "password": password, "provider": "db"},
        )
        assert again.status_code == 401


@contextmanager
def _browser_session(url: str, name: str, password: str) -> Iterator[httpx.Client]:
    """A client logged in through the login form, as a browser is: a session cookie."""
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as browser:
        form = browser.get("/login/")
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.text)
        assert csrf, "no CSRF token on the login form"
        signed_in = browser.post(
            "/login/", data={"username": name, "password": password, "csrf_token": csrf[1]}
        )
        assert signed_in.status_code == 302 and "session" in browser.cookies, signed_in.text
        yield browser


# -- Superset's business users: no statistics, no other schema, no other tenant -------------


@pytest.fixture(scope="module")
def business(stack, stack_settings, credentials):
    """A business user of each of two new tenants (`a`, `b`), logged in, and the admin."""
    u = uuid.uuid4().hex[:6]
    url = f"http://{stack_settings.host}:{stack_settings.superset.port}"
    tenants = {"a": f"acme-{u}", "b": f"globex-{u}"}
    users = {key: f"biz-{key}-{u}" for key in tenants}
    clients = {
        key: SupersetClient(url, users[key], add(users[key], "--tenant", tenants[key]))
        for key in tenants
    }
    clients["admin"] = SupersetClient(
        url, stack_settings.superset.admin_user, credentials.superset_admin_password
    )
    yield {"tenants": tenants, "users": users, "clients": clients}
    for client in clients.values():
        client.close()


def serving_id(client: SupersetClient) -> int:
    response = client.http.get("/api/v1/database/")
    assert response.status_code == 200, response.text
    return next(r["id"] for r in response.json()["result"] if r["database_name"] == "Serving")


def new_chart(client: SupersetClient, name: str, dashboards: list[int] | None = None) -> int:
    response = client.http.post("/api/v1/chart/", json={
        "slice_name": name, "viz_type": "table", "datasource_type": "table",
        "datasource_id": client.datasets()["sites"], "dashboards": dashboards or [],
        "params": json.dumps({"viz_type": "table", "query_mode": "raw", "all_columns": ["site"]}),
    })  # fmt: skip
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_a_serving_role_can_call_no_statistics_function_and_reach_no_other_database(
    stack_settings, credentials, business
):
    statements = {
        "select pg_stat_get_live_tuples('serving.sites'::regclass)":
            "permission denied for function pg_stat_get_live_tuples",
        "select n_live_tup from pg_stat_user_tables":
            "permission denied for function pg_stat_get_live_tuples",
        "select pg_relation_size('serving.sites')":
            "permission denied for function pg_relation_size",
        "select query_to_xml('explain select * from serving.sites', true, false, '')":
            "permission denied for function query_to_xml",
        "select reltuples from pg_class where oid = 'serving.sites'::regclass":
            "permission denied for table pg_class",
        "select * from pg_class": "permission denied for table pg_class",
    }  # fmt: skip
    logins = [roles.tenant_role(t) for t in business["tenants"].values()]
    for role in (*logins, roles.ANONYMOUS_ROLE, roles.ALL_TENANTS_ROLE):
        params = {
            "host": stack_settings.server_host("postgres"), "port": stack_settings.postgres.port,
            "user": role, "password": roles.role_password(credentials, role), "autocommit": True,
        }  # fmt: skip
        with psycopg.connect(dbname="lakehouse", **params) as conn:
            for statement, error in statements.items():
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
                    conn.execute(statement)
                assert str(info.value) == error, (role, statement)
            # What a catalog query still needs works; only the counts are gone.
            assert conn.execute(
                "select relname from pg_class where oid = 'serving.sites'::regclass"
            ).fetchall() == [("sites",)]
            usable = conn.execute(
                "select nspname from pg_namespace where has_schema_privilege(oid, 'usage') "
                "and nspname not in ('pg_catalog', 'information_schema') order by 1"
            ).fetchall()
            assert usable == [("serving",)], role
        for database in ("superset", "nessie", "postgres"):
            with pytest.raises(psycopg.OperationalError) as refused_connect:
                psycopg.connect(dbname=database, **params)
            assert f'permission denied for database "{database}"' in str(refused_connect.value)


def test_a_chart_column_calling_a_statistics_function_is_refused(business):
    client = business["clients"]["a"]
    response = client.chart_data(
        client.datasets()["sites"], [], "MAX(pg_stat_get_live_tuples('serving.sites'::regclass))"
    )
    assert response.status_code == 400, response.text
    assert response.json() == {
        "message": "Error: permission denied for function pg_stat_get_live_tuples\n"
    }


def test_a_business_user_sees_the_serving_schema_only(business):
    client = business["clients"]["a"]
    database = serving_id(client)
    schemas = client.http.get(f"/api/v1/database/{database}/schemas/")
    assert schemas.status_code == 200, schemas.text
    assert schemas.json()["result"] == ["serving"]
    for schema in ("registry", "audit", "transform", "maintenance", "public"):
        tables = client.http.get(
            f"/api/v1/database/{database}/tables/", params={"q": f"(schema_name:{schema})"}
        )
        assert tables.status_code == 200, (schema, tables.text)
        assert tables.json() == {"count": 0, "result": []}, schema
    served = client.http.get(
        f"/api/v1/database/{database}/tables/", params={"q": "(schema_name:serving)"}
    )
    assert {t.name for t in TABLES} <= {row["value"] for row in served.json()["result"]}
    metadata = client.http.get(
        f"/api/v1/database/{database}/table_metadata/",
        params={"name": "device_tokens", "schema": "registry"},
    )
    assert metadata.status_code == 404, metadata.text
    assert metadata.json() == {"errors": [{
        "message": "No such table", "error_type": "TABLE_NOT_FOUND_ERROR", "level": "error",
        "extra": None,
    }]}  # fmt: skip
    admin = business["clients"]["admin"]
    assert "registry" in admin.http.get(f"/api/v1/database/{database}/schemas/").json()["result"]


def test_the_owners_list_holds_the_users_own_tenant_only(business):
    for key in ("a", "b"):
        client = business["clients"][key]
        for resource in ("chart", "dashboard", "dataset"):
            response = client.http.get(f"/api/v1/{resource}/related/owners")
            assert response.status_code == 200, response.text
            listed = response.json()["result"]
            assert [r["text"] for r in listed] == [
                f"{business['users'][key]} {business['tenants'][key]}"
            ], resource
            assert [r["extra"]["email"] for r in listed] == [
                f"{business['users'][key]}@{business['tenants'][key]}.lakehouse.invalid"
            ]


def test_another_tenants_chart_is_not_found(business):
    globex, acme = business["clients"]["b"], business["clients"]["a"]
    chart = new_chart(globex, f"globex-only-{uuid.uuid4().hex[:6]}")
    assert globex.http.get(f"/api/v1/chart/{chart}").status_code == 200
    assert acme.http.get(f"/api/v1/chart/{chart}").status_code == 404
    listed = acme.http.get("/api/v1/chart/", params={"q": "(page_size:100)"})
    assert listed.status_code == 200
    assert chart not in [row["id"] for row in listed.json()["result"]]
    # The platform's own charts stay shared.
    assert "Sites" in [row["slice_name"] for row in listed.json()["result"]]


def test_business_users_change_no_theme(business):
    globex, acme = business["clients"]["b"], business["clients"]["a"]
    admin = business["clients"]["admin"]
    made = globex.http.post("/api/v1/theme/", json={"theme_name": "globex", "json_data": "{}"})
    assert made.status_code == 403, made.text
    name = f"shared-{uuid.uuid4().hex[:6]}"
    made = admin.http.post("/api/v1/theme/", json={"theme_name": name, "json_data": "{}"})
    assert made.status_code == 201, made.text
    theme = made.json()["id"]
    renamed = acme.http.put(f"/api/v1/theme/{theme}", json={"theme_name": "acme was here"})
    assert renamed.status_code == 403, renamed.text
    assert acme.http.delete(f"/api/v1/theme/{theme}").status_code == 403
    kept = admin.http.get(f"/api/v1/theme/{theme}")
    assert kept.status_code == 200 and kept.json()["result"]["theme_name"] == name
    assert admin.http.delete(f"/api/v1/theme/{theme}").status_code == 200


def test_a_chart_cannot_be_attached_to_another_tenants_dashboard(business):
    globex, acme = business["clients"]["b"], business["clients"]["a"]
    u = uuid.uuid4().hex[:6]
    made = globex.http.post(
        "/api/v1/dashboard/", json={"dashboard_title": f"globex-{u}", "published": True}
    )
    assert made.status_code == 201, made.text
    dashboard = made.json()["id"]
    new_chart(globex, f"globex-{u}", dashboards=[dashboard])
    assert acme.http.get(f"/api/v1/dashboard/{dashboard}").status_code == 404
    chart = new_chart(acme, f"acme-{u}")
    attached = acme.http.put(f"/api/v1/chart/{chart}", json={"dashboards": [dashboard]})
    assert attached.status_code == 422, attached.text
    assert attached.json() == {"message": {"dashboards": ["Dashboards do not exist"]}}
    charts = business["clients"]["admin"].http.get(f"/api/v1/dashboard/{dashboard}/charts")
    assert [c["slice_name"] for c in charts.json()["result"]] == [f"globex-{u}"]
