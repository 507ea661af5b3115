"""One pool connection kept by a caller whose queries never overlap.

Each grouped query (see grouping) has at most one round trip in flight, so it needs
one connection, not a pool checkout per query: the checkout costs as much CPU as the
query itself. A connection that failed goes back to the pool, which discards it if it
is broken; the next query takes another. A connection left idle for a while is checked
before it is used: PostgreSQL may have restarted meanwhile, and a request should not
fail because its connection died while nobody used it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

# Idle longer than this, a connection is checked (one empty round trip) before use.
IDLE_CHECK_SECONDS = 2.0


class HeldConnection:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._used_at = 0.0

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and time.monotonic() - self._used_at > IDLE_CHECK_SECONDS:
            try:
                await self.pool.check_connection(self._conn)
            except psycopg.Error:
                await self.release()  # the pool discards it: broken
        if self._conn is None:
            self._conn = await self.pool.getconn()
            set_json_loads(orjson.loads, self._conn)
        return self._conn

    async def fetch(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        try:
            cursor = await conn.execute(query, params, prepare=True)
            rows = await cursor.fetchall()
        except psycopg.Error:
            await self.release()
            raise
        self._used_at = time.monotonic()
        return rows

    async def execute(self, query: str, params: tuple[Any, ...]) -> None:
        """A statement that returns no rows."""
        conn = await self._connection()
        try:
            await conn.execute(query, params, prepare=True)
        except psycopg.Error:
            await self.release()
            raise
        self._used_at = time.monotonic()

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)
