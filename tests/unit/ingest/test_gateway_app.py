"""The gateway's one error path: the fast path and FastAPI's route answer alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from psycopg import OperationalError

from ingest.gateway.app import Gateway
from ingest.gateway.auth import Authenticator
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.registry import token_hash
from tests.unit.ingest.test_gateway_auth import IDENTITY, OTHER, TOKEN, FakePool, FakeRegistry

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    """A gateway whose registry knows TOKEN; nothing else is connected."""
    credentials = Credentials("u", "p", "s", {"lakehouse": "x"}, kafka_passwords={"gateway": "x"})
    gateway = Gateway(Settings(home=tmp_path), credentials)
    registry = FakeRegistry()
    registry.valid[token_hash(TOKEN)] = IDENTITY
    gateway.auth = Authenticator(FakePool(registry))  # type: ignore[arg-type]
    return gateway


def post_both_ways(gateway: Gateway, headers: dict[str, str], body: bytes) -> list[httpx.Response]:
    """POST /v1/readings on the fast path, then through FastAPI's own route."""

    async def post(app: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/readings", headers=headers, content=body)

    async def both() -> list[httpx.Response]:
        return [await post(gateway), await post(gateway.api)]

    return asyncio.run(both())


def failing_registry(error: Exception) -> Authenticator:
    """An authenticator whose registry fails with `error`."""

    class Failing:
        async def identify(self, authorization: str | None) -> None:
            raise error

    return Failing()  # type: ignore[return-value]


def requests_counted(gateway: Gateway, status: str) -> float | None:
    sample = "lakehouse_gateway_requests_total"
    return gateway.metrics.registry.get_sample_value(sample, {"status": status})


def assert_same_problem(responses: list[httpx.Response], status: int, code: str) -> dict:
    fast, routed = responses
    assert fast.status_code == routed.status_code == status
    assert fast.content == routed.content
    assert fast.headers == routed.headers
    assert fast.headers["content-type"] == "application/problem+json"
    problem = orjson.loads(fast.content)
    assert problem["type"] == f"/problems/{code}" and problem["status"] == status
    assert problem["title"] == code.replace("-", " ")
    return problem


def test_an_unknown_token_is_the_same_401_on_both_paths(gateway):
    responses = post_both_ways(gateway, {"Authorization": f"Bearer {OTHER}", **JSON}, b"[]")
    assert_same_problem(responses, 401, "invalid-token")
    assert responses[0].headers["www-authenticate"] == 'Bearer realm="lakehouse"'
    assert requests_counted(gateway, "401") == 2


def test_an_oversized_body_is_the_same_413_on_both_paths(gateway):
    body = b"[" + b" " * gateway.config.max_body_bytes + b"]"
    responses = post_both_ways(gateway, {"Authorization": f"Bearer {TOKEN}", **JSON}, body)
    problem = assert_same_problem(responses, 413, "body-too-large")
    assert problem["detail"] == f"body of {len(body)} bytes > {gateway.config.max_body_bytes}"
    assert requests_counted(gateway, "413") == 2


def test_postgres_down_is_the_same_503_on_both_paths(gateway):
    gateway.auth = failing_registry(OperationalError("connection refused"))
    responses = post_both_ways(gateway, {"Authorization": f"Bearer {TOKEN}", **JSON}, b"[]")
    assert_same_problem(responses, 503, "database-unavailable")
    assert responses[0].headers["retry-after"] == "5"
    assert requests_counted(gateway, "503") == 2
    assert gateway.db_outage.down_since is not None


def test_an_unexpected_error_is_the_same_500_on_both_paths(gateway, caplog):
    gateway.auth = failing_registry(RuntimeError("a bug"))
    responses = post_both_ways(gateway, {"Authorization": f"Bearer {TOKEN}", **JSON}, b"[]")
    assert_same_problem(responses, 500, "internal-error")
    logged = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert len(logged) == 2 and all(r.exc_info and r.exc_info[0] is RuntimeError for r in logged)
