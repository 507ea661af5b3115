"""One pool connection kept by a caller whose queries never overlap.

Each grouped query (see grouping) has at most one round trip in flight, so it needs
one connection, not a pool checkout per query: the checkout costs as much CPU as the
query itself. A connection that failed goes back to the pool, which discards it if it
is broken; the next query takes another.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool


class HeldConnection:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def fetch(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = await self.pool.getconn()
            set_json_loads(orjson.loads, self._conn)
        try:
            cursor = await self._conn.execute(query, params, prepare=True)
            return await cursor.fetchall()
        except psycopg.Error:
            await self.release()
            raise

    async def execute(self, query: str, params: tuple[Any, ...]) -> None:
        """A statement that returns no rows."""
        if self._conn is None:
            self._conn = await self.pool.getconn()
            set_json_loads(orjson.loads, self._conn)
        try:
            await self._conn.execute(query, params, prepare=True)
        except psycopg.Error:
            await self.release()
            raise

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)
