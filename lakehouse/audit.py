"""The audit log: who changed what, in PostgreSQL's `audit.events`.

Registry changes (tenants added, devices registered, tokens rotated, devices revoked)
write one row each in the same transaction as the change, so the log has exactly the
changes that happened; users added and transform publishes (a Nessie merge) write
theirs right after the change. Rows never carry a secret: a token or password is
neither an argument nor a detail here.

Platform teams read it with `lakehouse audit show` (filters by source, principal,
outcome and time), or query it as the `lakehouse` role, for example
`select at, principal, action, target from audit.events order by id desc limit 20`.
A Trino query's principal is the one that logged in; the user it impersonated, if
any, is `detail->>'impersonated'`.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from lakehouse.ddl import apply_when_changed
from lakehouse.errors import ConfigError

SCHEMA_SQL = """
create schema if not exists audit;
create table if not exists audit.events (
    id bigserial primary key,
    at timestamptz not null default clock_timestamp(),
    source text not null,
    principal text not null,
    action text not null,
    target text,
    outcome text not null default 'ok',
    detail jsonb not null default '{}'
);
create index if not exists events_at on audit.events (at);
-- Trino retries a delivery whose answer it did not get: one row per query, still.
create unique index if not exists events_trino_query on audit.events ((detail->>'query_id'))
    where source = 'trino';
-- The receiver of Trino's events appends; it can neither read nor change the log.
grant usage on schema audit to audit_writer;
grant insert on audit.events to audit_writer;
grant usage on sequence audit.events_id_seq to audit_writer;
"""


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    apply_when_changed(conn, "audit", [SCHEMA_SQL])


def actor() -> str:
    """Who is acting: the operating-system user (services run as the stack's own user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        return f"uid:{os.getuid()}"


def record(
    conn: psycopg.Connection[Any],
    source: str,
    action: str,
    target: str | None = None,
    *,
    detail: dict[str, Any] | None = None,
    principal: str | None = None,
    outcome: str = "ok",
) -> None:
    """Write one event (inside the caller's transaction, if it has one)."""
    conn.execute(
        "insert into audit.events (source, principal, action, target, outcome, detail) "
        "values (%s, %s, %s, %s, %s, %s)",
        (source, principal or actor(), action, target, outcome, json.dumps(detail or {})),
    )


_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_instant(value: str, now: datetime | None = None) -> datetime:
    """`15m`, `2h`, `7d` (that long ago) or an ISO 8601 instant (UTC if no offset)."""
    match = _DURATION.match(value.strip())
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"cannot read {value!r} as a time", fix="use 15m, 2h, 7d or 2026-12-02T10:00:00Z"
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EventFilter:
    """Which events `lakehouse audit show` lists (every field optional)."""

    source: str | None = None
    principal: str | None = None
    outcome: str | None = None
    since: datetime | None = None


def latest(conn: psycopg.Connection[Any], only: EventFilter, limit: int) -> list[tuple[Any, ...]]:
    """The latest events that pass `only`, newest first: at, source, principal, action,
    target, outcome, and the statement (Trino) or the details (everything else)."""
    return conn.execute(
        "select at, source, principal, action, coalesce(target, ''), outcome, "
        "coalesce(detail->>'statement', detail::text) "
        "from audit.events "
        "where (%(source)s::text is null or source = %(source)s) "
        "and (%(principal)s::text is null or principal = %(principal)s) "
        "and (%(outcome)s::text is null or outcome = %(outcome)s) "
        "and (%(since)s::timestamptz is null or at >= %(since)s) "
        "order by id desc limit %(limit)s",
        {**asdict(only), "limit": limit},
    ).fetchall()
