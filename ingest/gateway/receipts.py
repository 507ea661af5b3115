"""Upload receipts in PostgreSQL: a batch id is reserved before Kafka, completed after.

Every request first reserves its (device, batch id) with the batch's digest; the
reservation that wins sends the envelope to Kafka and then completes the row with
the receipt. A retry finds either the receipt (replayed as 200), or a reservation in
progress (503, retry shortly), or a reservation whose gateway died between Kafka and
PostgreSQL: then Kafka itself is searched for the envelope (see locate) before it is
sent again, so a batch is never in Kafka twice. Reservations and completions are
grouped across concurrent requests (see grouping); a group travels as one JSON
parameter, which psycopg adapts far more cheaply than arrays of Python values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from psycopg_pool import AsyncConnectionPool

from ingest.gateway.grouping import Grouped
from ingest.gateway.held import HeldConnection

Key = tuple[str, str]

_RESERVE = """
with k as (
    select * from jsonb_to_recordset(%s::jsonb)
        as k(i int, device_id text, batch_id text, digest text, owner text)
), ins as (
    insert into registry.upload_batches (device_id, batch_id, digest, receipt, reserved_by)
    select device_id, batch_id, decode(digest, 'hex'), null, owner from k
    on conflict do nothing
    returning device_id, batch_id
)
select k.i, ins.device_id is not null, b.digest, b.receipt,
       extract(epoch from now() - b.created_at)::float8
from k
left join ins using (device_id, batch_id)
left join registry.upload_batches b
    on ins.device_id is null and b.device_id = k.device_id and b.batch_id = k.batch_id
"""
_COMPLETE = """
with r as (
    select * from jsonb_to_recordset(%s::jsonb)
        as r(device_id text, batch_id text, receipt jsonb, max_seq bigint)
), completed as (
    update registry.upload_batches b set receipt = r.receipt, reserved_by = null
    from r where b.device_id = r.device_id and b.batch_id = r.batch_id
)
insert into registry.device_sequences (device_id, max_seq)
select device_id, max(max_seq) from r group by device_id order by device_id
on conflict (device_id) do update
    set max_seq = greatest(registry.device_sequences.max_seq, excluded.max_seq)
"""
_TAKE_OVER = """
update registry.upload_batches set reserved_by = %s, created_at = now()
where device_id = %s and batch_id = %s and receipt is null
  and created_at < now() - make_interval(secs => %s)
returning 1
"""


@dataclass(frozen=True)
class Reservation:
    """What reserving a batch id found.

    `reserved`: this request holds the batch id and sends the batch. `done`: a receipt
    exists (`receipt`). `pending`: another request holds it since `age` seconds.
    `unknown`: a concurrent reservation not yet visible; the client retries shortly.
    """

    state: Literal["reserved", "done", "pending", "unknown"]
    digest: bytes | None = None
    receipt: dict[str, Any] | None = None
    age: float = 0.0


class ReceiptStore:
    def __init__(self, pool: AsyncConnectionPool[Any], owner: str, max_group: int = 256) -> None:
        self._pool = pool
        self.owner = owner
        self._reserve_conn = HeldConnection(pool)
        self._complete_conn = HeldConnection(pool)
        self._reservations: Grouped[tuple[str, str, bytes], Reservation] = Grouped(
            self._run_reservations, max_group
        )
        self._completions: Grouped[tuple[str, str, dict[str, Any], int], None] = Grouped(
            self._run_completions, max_group
        )

    async def reserve(self, device_id: str, batch_id: str, digest: bytes) -> Reservation:
        return await self._reservations.submit((device_id, batch_id, digest))

    async def complete(
        self, device_id: str, batch_id: str, receipt: dict[str, Any], max_seq: int
    ) -> None:
        """Store the receipt of a batch Kafka acknowledged, and the device's highest seq."""
        await self._completions.submit((device_id, batch_id, receipt, max_seq))

    async def max_seq(self, device_id: str) -> int | None:
        """The highest seq accepted from the device (None before its first batch)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "select max_seq from registry.device_sequences where device_id = %s",
                (device_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def take_over(self, device_id: str, batch_id: str, older_than: float) -> bool:
        """Take a stale reservation (its gateway died); False if someone else did."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_TAKE_OVER, (self.owner, device_id, batch_id, older_than))
            return await cursor.fetchone() is not None

    async def close(self) -> None:
        await self._reserve_conn.release()
        await self._complete_conn.release()

    async def _run_reservations(self, items: list[tuple[str, str, bytes]]) -> list[Reservation]:
        # Two identical keys in one group: only the first may reserve.
        first: dict[Key, int] = {}
        for index, (device_id, batch_id, _) in enumerate(items):
            first.setdefault((device_id, batch_id), index)
        payload = _json(
            [
                {"i": i, "device_id": items[i][0], "batch_id": items[i][1],
                 "digest": items[i][2].hex(), "owner": self.owner}
                for i in sorted(first.values())
            ]
        )  # fmt: skip
        rows = await self._reserve_conn.fetch(_RESERVE, (payload,))
        by_index: dict[int, Reservation] = {}
        for index, reserved, digest, receipt, age in rows:
            if reserved:
                by_index[index] = Reservation("reserved")
            elif digest is None:
                by_index[index] = Reservation("unknown")
            elif receipt is None:
                by_index[index] = Reservation("pending", bytes(digest), None, float(age))
            else:
                by_index[index] = Reservation("done", bytes(digest), receipt, float(age))
        results: list[Reservation] = []
        for index, (device_id, batch_id, digest) in enumerate(items):
            winner = first[(device_id, batch_id)]
            if winner == index:
                results.append(by_index[index])
            else:  # the same batch twice at once: the other one is sending it
                results.append(Reservation("pending", digest, None, 0.0))
        return results

    async def _run_completions(
        self, items: list[tuple[str, str, dict[str, Any], int]]
    ) -> list[None]:
        payload = _json(
            [{"device_id": d, "batch_id": b, "receipt": r, "max_seq": m} for d, b, r, m in items]
        )
        await self._complete_conn.execute(_COMPLETE, (payload,))
        return [None] * len(items)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
