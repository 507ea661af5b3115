"""Receives Trino's query events (its HTTP event listener) into `audit.events`.

One row per completed query: the principal that logged in (and the user it
impersonated, if any), what kind of statement, the tables read and written, the
outcome (`ok`, `refused` for an access denial, `failed`) and times. A statement that
defines a catalog has its string literals masked, since those carry
connection secrets. Bound to loopback; Trino presents a generated bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg import OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout

from lakehouse.config import Settings
from lakehouse.credentials import AUDIT_WRITER_ROLE, Credentials

log = logging.getLogger(__name__)

MAX_STATEMENT_CHARS = 10_000
_CATALOG_DDL = re.compile(r"^\s*(create|alter)\s+catalog\b", re.IGNORECASE)
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")

_INSERT = """
insert into audit.events (source, principal, action, target, outcome, detail, at)
values ('trino', %s, %s, %s, %s, %s, coalesce(%s::timestamptz, clock_timestamp()))
on conflict do nothing
"""
# No conflict target: naming the unique index on the query id would need SELECT on the
# log, which its writer must not have; the only other unique key is the serial id.


def redact(statement: str) -> str:
    """The statement as logged: catalog definitions lose their literals; bounded length."""
    if _CATALOG_DDL.match(statement):
        statement = _STRING_LITERAL.sub("'***'", statement)
    return statement[:MAX_STATEMENT_CHARS]


def _table(entry: dict[str, Any]) -> str:
    return ".".join(str(entry.get(part, "")) for part in ("catalogName", "schema", "table"))


def event_row(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """The audit row of a query-completed event (None for any other event)."""
    metadata, context = event.get("metadata") or {}, event.get("context") or {}
    if "queryId" not in metadata or "endTime" not in event:
        return None
    failure = event.get("failureInfo")
    error = ((failure or {}).get("errorCode") or {}).get("name")
    outcome = "ok" if failure is None else "refused" if error == "PERMISSION_DENIED" else "failed"
    io = event.get("ioMetadata") or {}
    output = _table(io["output"]) if io.get("output") else None
    user = str(context.get("user", ""))
    detail: dict[str, Any] = {
        "query_id": metadata["queryId"],
        "statement": redact(str(metadata.get("query", ""))),
        "inputs": sorted({_table(entry) for entry in io.get("inputs") or []}),
        "output": output,
        "state": metadata.get("queryState"),
        "error": error,
        "started": event.get("createTime"),
        "ended": event.get("endTime"),
    }
    # Who logged in is who acted: under impersonation (Superset for a tenant's analyst,
    # X-Trino-User) the query's user is only whom the login chose to act as.
    principal = str(context.get("principal") or user)
    if user != principal:
        detail["impersonated"] = user
    action = str(context.get("queryType") or "QUERY")
    return (principal, action, output, outcome, json.dumps(detail), event.get("createTime"))


def create_app(settings: Settings, credentials: Credentials) -> FastAPI:
    expected = f"Bearer {credentials.audit_token}".encode()
    pool = ConnectionPool(
        f"host={settings.server_host('postgres')} port={settings.postgres.port} dbname=lakehouse "
        f"user={AUDIT_WRITER_ROLE} password={credentials.database_passwords[AUDIT_WRITER_ROLE]} "
        "connect_timeout=5",
        min_size=1, max_size=2, open=False, reconnect_timeout=0,
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)  # PostgreSQL may be down now; requests answer 503 until not
        yield
        pool.close()

    def store(rows: list[tuple[Any, ...]]) -> None:
        with pool.connection(timeout=5) as conn:
            conn.cursor().executemany(_INSERT, rows)

    app = FastAPI(
        title="lakehouse audit", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=lifespan,
    )  # fmt: skip

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/trino/events")
    async def trino_events(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        events = body if isinstance(body, list) else [body]
        rows = [row for row in map(event_row, events) if row is not None]
        if rows:
            try:
                await asyncio.to_thread(store, rows)
            except (OperationalError, PoolTimeout) as exc:
                # Trino retries the delivery; the unique query id keeps it to one row.
                log.warning("audit events not stored, PostgreSQL unavailable: %s", exc)
                return JSONResponse({"error": "database unavailable"}, status_code=503)
        return Response(status_code=204)

    return app
