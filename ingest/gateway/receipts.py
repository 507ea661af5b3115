"""Upload receipts in PostgreSQL, read and written in groups.

Every request needs one lookup (was this batch id accepted before?) and, once Kafka
acknowledged, one insert; both are grouped across concurrent requests (see grouping).
A group travels as one JSON parameter: psycopg adapts a JSON string far more cheaply
than arrays of Python values.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from ingest.gateway.grouping import Grouped
from ingest.gateway.held import HeldConnection

Key = tuple[str, str]
Stored = tuple[bytes, dict[str, Any]]

_LOOKUP = """
select b.device_id, b.batch_id, b.digest, b.receipt
from jsonb_to_recordset(%s::jsonb) as k(device_id text, batch_id text)
join registry.upload_batches b using (device_id, batch_id)
"""
_INSERT = """
insert into registry.upload_batches (device_id, batch_id, digest, receipt)
select r.device_id, r.batch_id, decode(r.digest, 'hex'), r.receipt
from jsonb_to_recordset(%s::jsonb) as r(device_id text, batch_id text, digest text, receipt jsonb)
on conflict do nothing
returning device_id, batch_id
"""


class ReceiptStore:
    def __init__(self, pool: AsyncConnectionPool[Any], max_group: int = 256) -> None:
        self._lookup_conn = HeldConnection(pool)
        self._insert_conn = HeldConnection(pool)
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

    async def close(self) -> None:
        await self._lookup_conn.release()
        await self._insert_conn.release()

    async def _run_lookups(self, keys: list[Key]) -> list[Stored | None]:
        rows = await self._lookup_conn.fetch(
            _LOOKUP, (_json([{"device_id": k[0], "batch_id": k[1]} for k in keys]),)
        )
        found = {(row[0], row[1]): (bytes(row[2]), row[3]) for row in rows}
        return [found.get(key) for key in keys]

    async def _run_inserts(self, rows: list[tuple[str, str, bytes, dict[str, Any]]]) -> list[bool]:
        # Two identical keys in one group: only the first may insert.
        first: dict[Key, int] = {}
        for index, row in enumerate(rows):
            first.setdefault((row[0], row[1]), index)
        unique = [rows[i] for i in sorted(first.values())]
        payload = _json(
            [
                {"device_id": r[0], "batch_id": r[1], "digest": r[2].hex(), "receipt": r[3]}
                for r in unique
            ]
        )
        stored = await self._insert_conn.fetch(_INSERT, (payload,))
        inserted = {(row[0], row[1]) for row in stored}
        return [
            (row[0], row[1]) in inserted and first[(row[0], row[1])] == index
            for index, row in enumerate(rows)
        ]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
