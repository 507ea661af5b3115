"""Bearer-token authentication against the registry, from a cache kept fresh.

A token is looked up in the registry the first time it is seen (the lookups of
concurrent requests share one query). From then on a background sweep re-reads every
token in use once a second, all in one query, so requests do not wait on the registry.
An entry the sweep has not confirmed for `cache_seconds` is looked up again before it
is trusted, so revocation, expiry and the end of a rotation's grace period reach the
gateway within about a second, and within `cache_seconds` if the sweep stalls (the
registry promises 5 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest.gateway.grouping import Grouped
from ingest.gateway.held import HeldConnection
from ingest.gateway.problems import Problem
from lakehouse.registry import AUTHENTICATE_MANY_SQL, TOKEN_PREFIX, DeviceIdentity, token_hash

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
REFRESH_SECONDS = 1.0
IDLE_SECONDS = 60.0  # tokens unused this long leave the cache
MAX_ENTRIES = 100_000
SWEEP_CHUNK = 5_000


@dataclass
class _Entry:
    identity: DeviceIdentity | None  # None: unknown, revoked or expired
    checked: float  # monotonic time the registry was asked
    used: float


class Authenticator:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        cache_seconds: float = CACHE_SECONDS,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.refresh_seconds = refresh_seconds
        self._cache: dict[bytes, _Entry] = {}
        self._conn = HeldConnection(pool)
        self._lookups: Grouped[bytes, DeviceIdentity | None] = Grouped(self._authenticate)

    async def identify(self, authorization: str | None) -> DeviceIdentity:
        if not authorization:
            raise _unauthorized("missing Authorization header", "missing-token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise _unauthorized("expected `Authorization: Bearer lhd_…`", "malformed-token")
        key = token_hash(token)
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is None or now - entry.checked >= self.cache_seconds:
            identity = await self._lookups.submit(key)
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            entry = self._cache[key] = _Entry(identity, now, now)
        else:
            entry.used = now
        if entry.identity is None:
            raise _unauthorized("token is unknown, revoked or expired", "invalid-token")
        return entry.identity

    async def keep_fresh(self) -> None:
        """Re-read the tokens in use every `refresh_seconds`, for the gateway's lifetime."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except psycopg.Error as exc:
                # Unconfirmed entries age out and are looked up per request meanwhile.
                log.warning("could not refresh the token cache: %s", exc)

    async def refresh(self) -> None:
        """One sweep: forget idle entries and aged refusals, re-check the identities."""
        now = time.monotonic()
        for key in [
            key
            for key, entry in self._cache.items()
            if now - entry.used > IDLE_SECONDS
            or (entry.identity is None and now - entry.checked >= self.cache_seconds)
        ]:
            del self._cache[key]
        keys = [key for key, entry in self._cache.items() if entry.identity is not None]
        for start in range(0, len(keys), SWEEP_CHUNK):
            chunk = keys[start : start + SWEEP_CHUNK]
            async with self.pool.connection() as conn:
                cursor = await conn.execute(AUTHENTICATE_MANY_SQL, (_hex_array(chunk),))
                found = _identities(await cursor.fetchall())
            for key in chunk:
                entry = self._cache.get(key)
                if entry is not None and entry.checked < now:  # not re-read since
                    entry.identity = found.get(key)
                    entry.checked = now

    async def close(self) -> None:
        await self._conn.release()

    async def _authenticate(self, keys: list[bytes]) -> list[DeviceIdentity | None]:
        found = _identities(await self._conn.fetch(AUTHENTICATE_MANY_SQL, (_hex_array(keys),)))
        return [found.get(key) for key in keys]


def _identities(rows: list[tuple[Any, ...]]) -> dict[bytes, DeviceIdentity]:
    """Rows of AUTHENTICATE_MANY_SQL by token hash."""
    return {bytes(row[0]): DeviceIdentity(*row[1:]) for row in rows}


def _hex_array(keys: list[bytes]) -> str:
    return orjson.dumps([key.hex() for key in keys]).decode()


def _unauthorized(detail: str, code: str) -> Problem:
    return Problem(401, code, detail, headers={"WWW-Authenticate": 'Bearer realm="lakehouse"'})
