"""Upload receipts in PostgreSQL, read and written in groups.

Every request needs one lookup (was this batch id accepted before?) and, once Kafka
acknowledged, one insert. Under load, requests that arrive together share one query
of each kind: the per-request cost of PostgreSQL stays flat as the rate grows, and a
lone request still waits for nothing but its own round trip.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

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


@dataclass
class _Group:
    pending: list[tuple[Any, asyncio.Future[Any]]] = field(default_factory=list)
    running: bool = False
    task: asyncio.Task[None] | None = None  # kept so the drain is not garbage-collected


class ReceiptStore:
    def __init__(self, pool: AsyncConnectionPool[Any], max_group: int = 256) -> None:
        self.pool = pool
        self.max_group = max_group
        self._lookups = _Group()
        self._inserts = _Group()

    async def lookup(self, device_id: str, batch_id: str) -> Stored | None:
        result: Stored | None = await self._submit(self._lookups, (device_id, batch_id),
                                                   self._run_lookups)  # fmt: skip
        return result

    async def insert(self, device_id: str, batch_id: str, digest: bytes,
                     receipt: dict[str, Any]) -> bool:  # fmt: skip
        """Store a receipt; False if one existed already (a concurrent retry won)."""
        inserted: bool = await self._submit(
            self._inserts, (device_id, batch_id, digest, receipt), self._run_inserts
        )
        return inserted

    async def _submit(self, group: _Group, item: Any, runner: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        group.pending.append((item, future))
        if not group.running:
            group.running = True
            group.task = asyncio.create_task(self._drain(group, runner))
        return await future

    async def _drain(self, group: _Group, runner: Any) -> None:
        try:
            while group.pending:
                batch = group.pending[: self.max_group]
                del group.pending[: self.max_group]
                try:
                    results = await runner([item for item, _ in batch])
                except Exception as exc:  # every waiter learns of the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            group.running = False

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
                    [Jsonb(r[3]) for r in unique],
                ),
            )
            inserted = {(row[0], row[1]) for row in await cursor.fetchall()}
        return [
            (row[0], row[1]) in inserted and first[(row[0], row[1])] == index
            for index, row in enumerate(rows)
        ]
