"""Bearer-token authentication against the registry, with a short-lived cache."""

from __future__ import annotations

import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from ingest.gateway.grouping import Grouped
from ingest.gateway.problems import Problem
from lakehouse.registry import AUTHENTICATE_MANY_SQL, TOKEN_PREFIX, DeviceIdentity, token_hash

# Revocation must reach the gateway within 5 s; entries live shorter than that.
CACHE_SECONDS = 2.0


class Authenticator:
    def __init__(self, pool: AsyncConnectionPool[Any], cache_seconds: float = CACHE_SECONDS):
        self.pool = pool
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, DeviceIdentity | None]] = {}
        # Cache misses of concurrent requests share one query.
        self._lookups: Grouped[bytes, DeviceIdentity | None] = Grouped(self._authenticate)

    async def _authenticate(self, keys: list[bytes]) -> list[DeviceIdentity | None]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(AUTHENTICATE_MANY_SQL, (keys,))
            found = {bytes(row[0]): DeviceIdentity(*row[1:]) for row in await cursor.fetchall()}
        return [found.get(key) for key in keys]

    async def identify(self, authorization: str | None) -> DeviceIdentity:
        if not authorization:
            raise _unauthorized("missing Authorization header", "missing-token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise _unauthorized("expected `Authorization: Bearer lhd_…`", "malformed-token")
        key = token_hash(token)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            identity = cached[1]
        else:
            identity = await self._lookups.submit(key)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (now, identity)
        if identity is None:
            raise _unauthorized("token is unknown, revoked or expired", "invalid-token")
        return identity


def _unauthorized(detail: str, code: str) -> Problem:
    return Problem(401, code, detail, headers={"WWW-Authenticate": 'Bearer realm="lakehouse"'})
