"""The device registry in PostgreSQL: tenants, sites, devices and their tokens.

A token is 256 random bits, shown once, stored only as its SHA-256 (a hash of a
high-entropy secret needs no slow KDF). Rotation keeps the old token valid for a grace
period; revocation of a device or token takes effect at the gateway within its cache
lifetime (seconds).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lakehouse import audit
from lakehouse.ddl import apply_when_changed
from lakehouse.errors import RegistryError
from lakehouse.names import checked

TOKEN_PREFIX = "lhd_"  # noqa: S105 - a prefix that marks tokens, not a secret

SCHEMA_SQL = """
create schema if not exists registry;
create table if not exists registry.tenants (
    tenant text primary key check (length(tenant) between 1 and 128),
    created_at timestamptz not null default now()
);
create table if not exists registry.sites (
    site text primary key check (length(site) between 1 and 128),
    tenant text not null references registry.tenants,
    lat double precision not null check (lat between -90 and 90),
    lon double precision not null check (lon between -180 and 180),
    created_at timestamptz not null default now()
);
create table if not exists registry.devices (
    device_id text primary key check (length(device_id) between 1 and 128),
    tenant text not null references registry.tenants,
    site text not null references registry.sites,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
create table if not exists registry.device_tokens (
    token_hash bytea primary key,
    device_id text not null references registry.devices,
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    valid_until timestamptz,
    revoked_at timestamptz
);
create index if not exists device_tokens_device on registry.device_tokens (device_id);
create table if not exists registry.upload_batches (
    device_id text not null,
    batch_id text not null,
    digest bytea not null,
    receipt jsonb not null,
    created_at timestamptz not null default now(),
    primary key (device_id, batch_id)
);
-- A batch is reserved (receipt null) before it is sent to Kafka and completed after;
-- reserved_by names the gateway process holding the reservation.
alter table registry.upload_batches alter column receipt drop not null;
alter table registry.upload_batches add column if not exists reserved_by text;
-- Maintenance deletes receipts past their retention by age: a BRIN index costs the
-- gateway's inserts next to nothing (rows arrive in created_at order).
create index if not exists upload_batches_created_at
    on registry.upload_batches using brin (created_at);
-- The highest seq the gateway accepted from each device: an agent installed afresh on a
-- device (a re-flashed SD card) numbers its readings on from it instead of from 1.
create table if not exists registry.device_sequences (
    device_id text primary key,
    max_seq bigint not null
);
-- Trino's pg catalog reads the registry's descriptive tables, never tokens or receipts.
do $$ begin
    if exists (select from pg_roles where rolname = 'trino_reader') then
        grant usage on schema registry to trino_reader;
        grant select on registry.tenants, registry.sites, registry.devices to trino_reader;
    end if;
end $$;
"""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a token speaks for."""

    device_id: str
    tenant: str
    site: str


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    tenant: str
    site: str
    created_at: datetime
    revoked_at: datetime | None
    active_tokens: int


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(424242)")
        apply_when_changed(conn, "registry", [SCHEMA_SQL])
        audit.ensure_schema(conn)


def ensure_tenant(conn: psycopg.Connection[Any], tenant: str) -> None:
    """A tenant exists before its first device (its business users may come first)."""
    checked("tenant", tenant)
    with conn.transaction():
        added = conn.execute(
            "insert into registry.tenants (tenant) values (%s) on conflict do nothing "
            "returning tenant",
            (tenant,),
        ).fetchone()
        if added:
            audit.record(conn, "registry", "add_tenant", tenant)


def register(
    conn: psycopg.Connection[Any],
    device_id: str,
    *,
    tenant: str,
    site: str,
    lat: float | None = None,
    lon: float | None = None,
    expires_in: timedelta | None = None,
    since: datetime | None = None,
) -> str:
    """Register a device (creating its tenant and site if needed); returns its token.

    `since` back-dates the device (default now): silver quarantines readings stamped
    before it, so a device whose history is loaded later needs it.
    """
    checked("device id", device_id)
    checked("tenant", tenant)
    checked("site", site)
    with conn.transaction():
        conn.execute(
            "insert into registry.tenants (tenant) values (%s) on conflict do nothing", (tenant,)
        )
        row = conn.execute("select tenant from registry.sites where site = %s", (site,)).fetchone()
        new_site = row is None
        if row is None:
            if lat is None or lon is None:
                raise RegistryError(
                    f"site {site!r} is new: its coordinates are needed",
                    fix="pass --lat and --lon",
                )
            conn.execute(
                "insert into registry.sites (site, tenant, lat, lon) values (%s, %s, %s, %s)",
                (site, tenant, lat, lon),
            )
        elif row[0] != tenant:
            raise RegistryError(f"site {site!r} belongs to tenant {row[0]!r}, not {tenant!r}")
        existing = conn.execute(
            "select 1 from registry.devices where device_id = %s", (device_id,)
        ).fetchone()
        if existing:
            raise RegistryError(
                f"device {device_id!r} is already registered",
                fix="use `lakehouse devices rotate` for a new token",
            )
        conn.execute(
            "insert into registry.devices (device_id, tenant, site, created_at) "
            "values (%s, %s, %s, coalesce(%s, now()))",
            (device_id, tenant, site, since),
        )
        token = _issue(conn, device_id, expires_in)
        audit.record(
            conn, "registry", "register", device_id,
            detail={"tenant": tenant, "site": site, "new_site": new_site},
        )  # fmt: skip
        return token


def _issue(conn: psycopg.Connection[Any], device_id: str, expires_in: timedelta | None) -> str:
    token = new_token()
    conn.execute(
        "insert into registry.device_tokens (token_hash, device_id, expires_at) "
        "values (%s, %s, now() + %s)",
        (token_hash(token), device_id, expires_in),
    )
    return token


def registered(conn: psycopg.Connection[Any], device_ids: list[str]) -> set[str]:
    """Which of `device_ids` are in the registry (revoked or not)."""
    rows = conn.execute(
        "select device_id from registry.devices where device_id = any(%s)", (device_ids,)
    ).fetchall()
    return {row[0] for row in rows}


def rotate(
    conn: psycopg.Connection[Any],
    device_id: str,
    *,
    grace: timedelta,
    expires_in: timedelta | None = None,
) -> str:
    """Issue a new token; the device's current tokens stay valid for `grace`."""
    with conn.transaction():
        _active_device(conn, device_id)
        conn.execute(
            "update registry.device_tokens set valid_until = least("
            "coalesce(valid_until, 'infinity'), now() + %s) "
            "where device_id = %s and revoked_at is null",
            (grace, device_id),
        )
        token = _issue(conn, device_id, expires_in)
        audit.record(
            conn, "registry", "rotate", device_id,
            detail={"grace_seconds": grace.total_seconds()},
        )  # fmt: skip
        return token


def revoke(conn: psycopg.Connection[Any], device_id: str) -> None:
    """Revoke a device and every token it has."""
    with conn.transaction():
        _active_device(conn, device_id)
        conn.execute(
            "update registry.devices set revoked_at = now() where device_id = %s", (device_id,)
        )
        conn.execute(
            "update registry.device_tokens set revoked_at = now() "
            "where device_id = %s and revoked_at is null",
            (device_id,),
        )
        audit.record(conn, "registry", "revoke", device_id)


def _active_device(conn: psycopg.Connection[Any], device_id: str) -> None:
    row = conn.execute(
        "select revoked_at from registry.devices where device_id = %s", (device_id,)
    ).fetchone()
    if row is None:
        raise RegistryError(f"no device {device_id!r}", fix="list them: lakehouse devices list")
    if row[0] is not None:
        raise RegistryError(f"device {device_id!r} was revoked at {row[0]:%Y-%m-%d %H:%M:%S}")


def list_devices(conn: psycopg.Connection[Any], tenant: str | None = None) -> list[DeviceRow]:
    rows = conn.execute(
        """
        select d.device_id, d.tenant, d.site, d.created_at, d.revoked_at,
               count(t.token_hash) filter (
                   where t.revoked_at is null
                     and (t.expires_at is null or t.expires_at > now())
                     and (t.valid_until is null or t.valid_until > now()))
        from registry.devices d left join registry.device_tokens t using (device_id)
        where %(tenant)s::text is null or d.tenant = %(tenant)s
        group by 1, 2, 3, 4, 5 order by d.tenant, d.device_id
        """,
        {"tenant": tenant},
    ).fetchall()
    return [DeviceRow(*row) for row in rows]


# The token hashes come as one JSON array of hex strings (cheap to send in bulk).
AUTHENTICATE_MANY_SQL = """
select t.token_hash, d.device_id, d.tenant, d.site
from registry.device_tokens t join registry.devices d using (device_id)
where t.token_hash in (select decode(h, 'hex') from jsonb_array_elements_text(%s::jsonb) as h)
  and t.revoked_at is null and d.revoked_at is null
  and (t.expires_at is null or t.expires_at > now())
  and (t.valid_until is null or t.valid_until > now())
"""
