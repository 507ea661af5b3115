"""FastAPI application of the upload gateway.

Partial batches: a request with any bad reading is rejected whole (400), and the
problem lists the index and reason of every bad reading; nothing of it reaches Kafka.
The device fixes or drops those readings and sends again. Accepting part of a batch
would make retries ambiguous, and one batch id must always mean one set of readings.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from psycopg import OperationalError
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.gateway.auth import Authenticator
from ingest.gateway.body import parse_readings, read_body
from ingest.gateway.problems import Problem
from ingest.gateway.producer import AsyncProducer, KafkaUnavailable
from ingest.gateway.ratelimit import RateLimiter
from ingest.gateway.receipts import ReceiptStore
from ingest.readings import Limits, ReadingsBuilder, Rejected
from lakehouse.clients import kafka_config
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.registry import DeviceIdentity

log = logging.getLogger(__name__)
access_log = logging.getLogger("ingest.gateway.access")

_BATCH_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
KAFKA_RETRY_AFTER = 5
DATABASE_RETRY_AFTER = 5


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lakehouse_gateway_requests", "Requests by status", ["status"], registry=self.registry
        )
        self.readings = Counter(
            "lakehouse_gateway_readings_accepted", "Readings acknowledged by Kafka",
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "lakehouse_gateway_request_seconds", "POST /v1/readings latency",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry,
        )  # fmt: skip

    def problem(self, exc: Problem) -> Response:
        """The problem+json response of a client error, counted by status."""
        self.requests.labels(str(exc.status)).inc()
        return exc.response()


def _database_unavailable(exc: OperationalError) -> Problem:
    """PostgreSQL (registry, receipts) down or unreachable, or no pooled connection in
    time (psycopg_pool's PoolTimeout is an OperationalError): the client retries later."""
    log.warning("PostgreSQL unavailable: %s", exc)
    return Problem(503, "database-unavailable", "the device registry is unavailable; "
                   "readings not accepted", retry_after=DATABASE_RETRY_AFTER)  # fmt: skip


def _internal_error() -> Response:
    log.exception("unexpected error")
    return Problem(500, "internal-error", "the gateway failed; try again later").response()


def create_app(settings: Settings, credentials: Credentials) -> FastAPI:
    config = settings.gateway
    limits = Limits(max_future=timedelta(seconds=settings.ingest.max_future_seconds))
    metrics = Metrics()
    limiter = RateLimiter(config.requests_per_second, config.burst)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        conninfo = (
            f"host={settings.host} port={settings.postgres.port} dbname=lakehouse "
            f"user=lakehouse password={credentials.database_passwords['lakehouse']}"
        )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=2,
            max_size=10,
            open=False,
            kwargs={"autocommit": True},
            timeout=DATABASE_RETRY_AFTER,  # a request waits this long at most for a connection
        )
        await pool.open(wait=True, timeout=30)
        state["pool"] = pool
        auth = state["auth"] = Authenticator(pool)
        receipts = state["receipts"] = ReceiptStore(pool)
        state["producer"] = AsyncProducer(kafka_config(settings))
        sweeper = asyncio.create_task(auth.keep_fresh(), name="token-cache")
        # Every request allocates thousands of short-lived objects; with the default
        # thresholds the cyclic collector runs several times per request and keeps
        # walking the long-lived objects of the app. Freeze those, collect less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        try:
            yield
        finally:
            sweeper.cancel()
            state["producer"].close()
            await auth.close()
            await receipts.close()
            await pool.close()

    app = FastAPI(
        title="Lakehouse upload gateway",
        version="1",
        lifespan=lifespan,
        description="Devices upload readings with their own bearer token.",
    )

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> Response:
        return metrics.problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return Problem(400, "invalid-request", str(exc.errors())[:500]).response()

    @app.exception_handler(OperationalError)
    async def _database(_: Request, exc: OperationalError) -> Response:
        return metrics.problem(_database_unavailable(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        return _internal_error()

    @app.post(
        "/v1/readings",
        status_code=202,
        summary="Upload a batch of readings",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "array", "items": _READING}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": _BATCH_ID.pattern},
                },
            ],
        },
        responses={
            200: {"description": "This batch id was accepted before; the original receipt"},
            400: {"description": "Invalid body or readings (problem+json with errors)"},
            401: {"description": "Missing, malformed, unknown, revoked or expired token"},
            403: {"description": "A reading names another device or tenant"},
            409: {"description": "The batch id was used for different readings"},
            413: {"description": "Body or batch too large"},
            415: {"description": "Unsupported Content-Type or Content-Encoding"},
            429: {"description": "Rate limit exceeded; see Retry-After"},
            503: {"description": "Kafka or PostgreSQL unavailable; see Retry-After"},
        },
    )
    async def upload(request: Request) -> Response:
        started = time.perf_counter()
        identity = await state["auth"].identify(request.headers.get("authorization"))
        wait = limiter.retry_after(identity.device_id)
        if wait is not None:
            raise Problem(429, "rate-limited", "too many requests for this device",
                          retry_after=wait)  # fmt: skip
        batch_id = request.headers.get("idempotency-key") or uuid.uuid4().hex
        if not _BATCH_ID.match(batch_id):
            raise Problem(400, "bad-idempotency-key", "Idempotency-Key must match "
                          + _BATCH_ID.pattern)  # fmt: skip
        body = await read_body(request, config.max_body_bytes, config.max_decompressed_bytes)
        items = parse_readings(body, request.headers.get("content-type", ""))
        if not items:
            raise Problem(400, "empty-batch", "the batch holds no readings")
        if len(items) > config.max_readings:
            raise Problem(
                413, "too-many-readings", f"{len(items)} readings > {config.max_readings}"
            )
        _validate(items, identity, limits)
        readings_json = orjson.dumps(items)
        digest = hashlib.sha256(readings_json).digest()
        receipts: ReceiptStore = state["receipts"]
        previous = await receipts.lookup(identity.device_id, batch_id)
        if previous is not None:
            return _replay(previous, digest, batch_id, metrics)
        # The readings are serialised once, for the digest and the envelope alike.
        head = orjson.dumps({"device_id": identity.device_id, "tenant": identity.tenant,
                             "site": identity.site, "batch_id": batch_id})  # fmt: skip
        envelope = head[:-1] + b',"readings":' + readings_json + b"}"
        try:
            partition, offset = await _with_timeout(
                state["producer"].send(settings.kafka.topic, identity.device_id.encode(), envelope),
                config.delivery_timeout_seconds,
            )
        except KafkaUnavailable as exc:
            raise Problem(503, "kafka-unavailable", f"readings not accepted: {exc}",
                          retry_after=KAFKA_RETRY_AFTER) from None  # fmt: skip
        receipt = {
            "batch_id": batch_id, "accepted": len(items), "topic": settings.kafka.topic,
            "partition": partition, "offset": offset,
            "received_at": datetime.now(UTC).isoformat(),
        }  # fmt: skip
        if not await receipts.insert(identity.device_id, batch_id, digest, receipt):
            # A concurrent retry of the same batch stored its receipt first.
            stored = await receipts.lookup(identity.device_id, batch_id)
            if stored is not None:
                return _replay(stored, digest, batch_id, metrics)
        metrics.readings.inc(len(items))
        metrics.requests.labels("202").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(receipt, status_code=202)

    app.state.upload = upload
    app.state.metrics = metrics

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: PostgreSQL and Kafka reachable",
             responses={503: {"description": "A dependency is unavailable"}})  # fmt: skip
    async def readyz() -> Response:
        try:
            async with state["pool"].connection(timeout=2) as conn:
                await conn.execute("select 1")
        except Exception:  # any failure means not ready
            raise Problem(503, "not-ready", "PostgreSQL unavailable", retry_after=5) from None
        if not await state["producer"].available():
            raise Problem(503, "not-ready", "Kafka unavailable", retry_after=5)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def with_upload_fast_path(app: FastAPI) -> ASGIApp:
    """`POST /v1/readings` straight to its handler; everything else through FastAPI.

    FastAPI's routing and middleware cost more CPU per request than the upload itself
    (parsing, validation, Kafka), and one process must carry 500 devices uploading every
    second. The handler, its errors (problem+json, metrics) and the OpenAPI description
    are the same on both paths. Every request gets one access-log line (client, method,
    path, status, milliseconds; never a header, so never a token).
    """
    upload = app.state.upload
    metrics: Metrics = app.state.metrics

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "POST" and scope["path"] == "/v1/readings":
            try:
                response = await upload(Request(scope, receive))
            except Problem as exc:
                response = metrics.problem(exc)
            except OperationalError as exc:
                response = metrics.problem(_database_unavailable(exc))
            except Exception:
                response = _internal_error()
            await response(scope, receive, send)
            status = response.status_code
        else:
            sent: list[int] = [0]

            async def send_and_note(message: Any) -> None:
                if message["type"] == "http.response.start":
                    sent[0] = message["status"]
                await send(message)

            await app(scope, receive, send_and_note)
            status = sent[0]
        client = scope.get("client") or ("-", 0)
        access_log.info(
            "%s:%s %s %s %d %.1fms", client[0], client[1], scope["method"], scope["path"],
            status, (time.perf_counter() - started) * 1000,
        )  # fmt: skip

    return asgi


_READING = {
    "type": "object",
    "required": ["seq", "ts", "metric", "value"],
    "properties": {
        "seq": {"type": "integer", "minimum": 0},
        "ts": {"type": "string", "format": "date-time"},
        "metric": {"type": "string", "minLength": 1, "maxLength": 128},
        "value": {"type": "number"},
        "unit": {"type": "string", "maxLength": 32},
        "attrs": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _validate(items: list[Any], identity: DeviceIdentity, limits: Limits) -> None:
    checker = ReadingsBuilder(limits)
    ident = (identity.device_id, identity.tenant, identity.site)
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            for field, own in (("device_id", identity.device_id), ("tenant", identity.tenant)):
                if field in item and item[field] != own:
                    raise Problem(403, "identity-mismatch",
                                  f"readings[{index}].{field} names another {field}; "
                                  "the token decides who is writing")  # fmt: skip
        try:
            checker.validate(item, ident)
        except Rejected as exc:
            errors.append({"index": index, "reason": exc.reason, "detail": exc.detail})
    if errors:
        raise Problem(400, "invalid-readings",
                      f"{len(errors)} of {len(items)} readings break the contract; "
                      "nothing was accepted", errors=errors[:100])  # fmt: skip


def _replay(
    stored: tuple[bytes, dict[str, Any]], digest: bytes, batch_id: str, metrics: Metrics
) -> Response:
    if stored[0] != digest:
        raise Problem(409, "idempotency-conflict",
                      f"batch id {batch_id!r} was already used for different readings")  # fmt: skip
    metrics.requests.labels("200").inc()
    return JSONResponse(stored[1], status_code=200)


async def _with_timeout(awaitable: Any, seconds: float) -> Any:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise KafkaUnavailable(f"no acknowledgement within {seconds:.0f} s") from None
