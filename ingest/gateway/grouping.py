"""Requests that arrive together share one PostgreSQL round trip.

Each caller submits one item and awaits its own result; while a query for earlier
items runs, new items queue up and go together in the next one. A lone request waits
for nothing but its own round trip; under load the number of queries per second stays
flat while the requests per query grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Grouped(Generic[Item, Result]):
    def __init__(
        self, run: Callable[[list[Item]], Awaitable[list[Result]]], max_group: int = 256
    ) -> None:
        self._run = run
        self.max_group = max_group
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None  # kept so it is not garbage-collected

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as exc:  # every waiter learns of the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None
