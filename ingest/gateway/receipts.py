"""Upload receipts in PostgreSQL, read and written in groups.

Every request needs one lookup (was this batch id accepted before?) and, once Kafka
acknowledged, one insert; both are grouped across concurrent requests (see grouping).
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ingest.gateway.grouping import Grouped

Key = tuple[str, str]
Stored = tuple[bytes, dict[str, Any]]

_LOOKUP = """
select b.device_id, b.batch_id, b.digest, b.receipt
from registry.upload_batches b
join unnest(%s::text[], %s::text[]) as k(device_id, batch_id) using (device_id, batch_id)
"""
_INSERT = """
insert into registry.upload_batches (device_id, batch_id, digest, receipt)
select * from unnest(%s::text[], %s::text[], %s::bytea[], %s::jsonb[])
on conflict do nothing
returning device_id, batch_id
"""


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class ReceiptStore:
    def __init__(self, pool: AsyncConnectionPool[Any], max_group: int = 256) -> None:
        self.pool = pool
        self._lookups: Grouped[Key, Stored | None] = Grouped(self._run_lookups, max_group)
        self._inserts: Grouped[tuple[str, str, bytes, dict[str, Any]], bool] = Grouped(
            self._run_inserts, max_group
        )

    async def lookup(self, device_id: str, batch_id: str) -> Stored | None:
        return await self._lookups.submit((device_id, batch_id))

    async def insert(self, device_id: str, batch_id: str, digest: bytes,
                     receipt: dict[str, Any]) -> bool:  # fmt: skip
        """Store a receipt; False if one existed already (a concurrent retry won)."""
        return await self._inserts.submit((device_id, batch_id, digest, receipt))

    async def _run_lookups(self, keys: list[Key]) -> list[Stored | None]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(_LOOKUP, ([k[0] for k in keys], [k[1] for k in keys]))
            found = {(row[0], row[1]): (bytes(row[2]), row[3]) for row in await cursor.fetchall()}
        return [found.get(key) for key in keys]

    async def _run_inserts(self, rows: list[tuple[str, str, bytes, dict[str, Any]]]) -> list[bool]:
        # Two identical keys in one group: only the first may insert.
        first: dict[Key, int] = {}
        for index, row in enumerate(rows):
            first.setdefault((row[0], row[1]), index)
        unique = [rows[i] for i in sorted(first.values())]
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                _INSERT,
                (
                    [r[0] for r in unique],
                    [r[1] for r in unique],
                    [r[2] for r in unique],
                    [Jsonb(r[3], dumps=_dumps) for r in unique],
                ),
            )
            inserted = {(row[0], row[1]) for row in await cursor.fetchall()}
        return [
            (row[0], row[1]) in inserted and first[(row[0], row[1])] == index
            for index, row in enumerate(rows)
        ]
