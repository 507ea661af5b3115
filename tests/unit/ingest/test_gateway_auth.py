"""The gateway's token cache: who is asked when, and how fast a revocation lands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.adapt import AdaptersMap

from ingest.gateway import auth as auth_module
from ingest.gateway.auth import Authenticator
from ingest.gateway.problems import Problem
from lakehouse.registry import DeviceIdentity, token_hash

TOKEN = "lhd_" + "a" * 43
OTHER = "lhd_" + "b" * 43
IDENTITY = DeviceIdentity("dev-1", "tenant-1", "site-1")


class FakeRegistry:
    """Answers the authentication query from a dict; counts the queries."""

    def __init__(self) -> None:
        self.valid: dict[bytes, DeviceIdentity] = {}
        self.queries = 0
        self.adapters = AdaptersMap(psycopg.adapters)

    async def execute(self, query: str, params: tuple[str], prepare: bool = False) -> FakeRegistry:
        self.queries += 1
        keys = [bytes.fromhex(h) for h in orjson.loads(params[0])]
        self._rows = [(key, *vars(self.valid[key]).values()) for key in keys if key in self.valid]
        return self

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class FakePool:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    async def getconn(self) -> FakeRegistry:
        return self.registry

    async def putconn(self, conn: FakeRegistry) -> None:
        pass

    async def check_connection(self, conn: FakeRegistry) -> None:
        pass  # the registry stays up

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeRegistry]:
        yield self.registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth_module.time, "monotonic", clock.monotonic)
    return clock


def _authenticator(registry: FakeRegistry) -> Authenticator:
    return Authenticator(FakePool(registry), cache_seconds=2.0)  # type: ignore[arg-type]


def _status(authenticator: Authenticator, token: str) -> int | DeviceIdentity:
    try:
        return asyncio.run(authenticator.identify(f"Bearer {token}"))
    except Problem as exc:
        return exc.status


@pytest.fixture
def seen(clock: Clock) -> tuple[FakeRegistry, Authenticator]:
    """A registry that knows TOKEN, and an authenticator that has seen it once."""
    registry = FakeRegistry()
    registry.valid[token_hash(TOKEN)] = IDENTITY
    authenticator = _authenticator(registry)
    assert _status(authenticator, TOKEN) == IDENTITY
    return registry, authenticator


def test_first_sight_asks_the_registry_then_the_cache_answers(
    seen: tuple[FakeRegistry, Authenticator], clock: Clock
) -> None:
    registry, authenticator = seen
    clock.now += 1.9
    assert _status(authenticator, TOKEN) == IDENTITY
    assert registry.queries == 1


def test_the_sweep_keeps_tokens_in_use_fresh_without_request_lookups(
    seen: tuple[FakeRegistry, Authenticator], clock: Clock
) -> None:
    registry, authenticator = seen
    for _ in range(10):
        clock.now += 1.0
        asyncio.run(authenticator.refresh())
        assert _status(authenticator, TOKEN) == IDENTITY
    assert registry.queries == 1 + 10  # one lookup, then one query per sweep


def test_a_revocation_lands_with_the_next_sweep(
    seen: tuple[FakeRegistry, Authenticator], clock: Clock
) -> None:
    registry, authenticator = seen
    del registry.valid[token_hash(TOKEN)]
    clock.now += 1.0
    asyncio.run(authenticator.refresh())
    assert _status(authenticator, TOKEN) == 401


def test_without_sweeps_an_entry_is_looked_up_again_after_cache_seconds(
    seen: tuple[FakeRegistry, Authenticator], clock: Clock
) -> None:
    registry, authenticator = seen
    del registry.valid[token_hash(TOKEN)]
    clock.now += 2.0
    assert _status(authenticator, TOKEN) == 401
    assert registry.queries == 2


def test_refusals_are_remembered_for_cache_seconds_and_not_swept(clock: Clock) -> None:
    registry = FakeRegistry()
    authenticator = _authenticator(registry)
    assert _status(authenticator, OTHER) == 401
    clock.now += 1.0
    asyncio.run(authenticator.refresh())  # nothing valid to re-check: no query
    assert _status(authenticator, OTHER) == 401
    assert registry.queries == 1
    registry.valid[token_hash(OTHER)] = IDENTITY  # registered meanwhile
    clock.now += 1.0
    asyncio.run(authenticator.refresh())  # the aged refusal is forgotten
    assert _status(authenticator, OTHER) == IDENTITY
    assert registry.queries == 2


def test_idle_tokens_leave_the_cache(
    seen: tuple[FakeRegistry, Authenticator], clock: Clock
) -> None:
    registry, authenticator = seen
    clock.now += auth_module.IDLE_SECONDS + 1
    asyncio.run(authenticator.refresh())
    assert registry.queries == 1  # the idle token was dropped, not re-checked
    assert _status(authenticator, TOKEN) == IDENTITY
    assert registry.queries == 2
