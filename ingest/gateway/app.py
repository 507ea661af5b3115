"""The upload gateway: an ASGI application with FastAPI behind it.

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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from lakehouse_edge import rules
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from psycopg import OperationalError
from psycopg_pool import AsyncConnectionPool
from starlette.types import Receive, Scope, Send

from ingest.gateway.auth import Authenticator
from ingest.gateway.body import parse_readings, read_body
from ingest.gateway.locate import LocateFailed, find_envelope
from ingest.gateway.problems import Problem
from ingest.gateway.producer import AsyncProducer, KafkaUnavailable, MessageTooLarge
from ingest.gateway.ratelimit import RateLimiter
from ingest.gateway.receipts import ReceiptStore, Reservation
from ingest.readings import Limits, ReadingsBuilder, Rejected
from lakehouse.clients import kafka_config
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.failpoints import failpoint
from lakehouse.registry import DeviceIdentity
from lakehouse.retry import Outage
from lakehouse.stack.kafka_acl import GATEWAY_LOCATE_GROUP_PREFIX

log = logging.getLogger(__name__)
access_log = logging.getLogger("ingest.gateway.access")

_BATCH_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
KAFKA_RETRY_AFTER = 5
DATABASE_RETRY_AFTER = 5
STATEMENT_TIMEOUT_MS = 5_000
RECONNECT_FOREVER = 10 * 365 * 86_400.0
RESERVATION_MARGIN_SECONDS = 5.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lakehouse_gateway_requests", "Requests by status", ["status"], registry=self.registry
        )
        # Every status the gateway answers shows from the start (as 0), so rates and
        # alerts over them work before the first error.
        for status in ("200", "202", "400", "401", "403", "409", "413", "415", "429", "503"):
            self.requests.labels(status)
        self.readings = Counter(
            "lakehouse_gateway_readings_accepted", "Readings acknowledged by Kafka",
            registry=self.registry,
        )  # fmt: skip
        self.dependency_up = Gauge(
            "lakehouse_gateway_dependency_up",
            "1 while PostgreSQL or Kafka answers, 0 during an outage",
            ["dependency"], registry=self.registry,
        )  # fmt: skip
        for dependency in ("postgres", "kafka"):
            self.dependency_up.labels(dependency).set(1)
        self.latency = Histogram(
            "lakehouse_gateway_request_seconds", "POST /v1/readings latency",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry,
        )  # fmt: skip

    def availability(self, dependency: str) -> Callable[[bool], None]:
        gauge = self.dependency_up.labels(dependency)
        return lambda available: gauge.set(1 if available else 0)

    def problem(self, exc: Problem) -> Response:
        """The problem+json response of a client error, counted by status."""
        self.requests.labels(str(exc.status)).inc()
        return exc.response()


def _database_unavailable(exc: OperationalError, outage: Outage) -> Problem:
    """PostgreSQL (registry, receipts) down or unreachable, or no pooled connection in
    time (psycopg_pool's PoolTimeout is an OperationalError): the client retries later.
    Logged once per outage, not once per request."""
    outage.failed(exc)
    return Problem(503, "database-unavailable", "the device registry is unavailable; "
                   "readings not accepted", retry_after=DATABASE_RETRY_AFTER)  # fmt: skip


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

_UPLOAD_OPENAPI: dict[str, Any] = {
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
}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "This batch id was accepted before; the original receipt"},
    400: {"description": "Invalid body or readings (problem+json with errors)"},
    401: {"description": "Missing, malformed, unknown, revoked or expired token"},
    403: {"description": "A reading names another device or tenant"},
    409: {"description": "The batch id was used for different readings"},
    413: {"description": "Body or batch too large"},
    415: {"description": "Unsupported Content-Type or Content-Encoding"},
    429: {"description": "Rate limit exceeded; see Retry-After"},
    503: {
        "description": "Kafka or PostgreSQL unavailable, or the batch is being "
        "accepted by another request; see Retry-After"
    },
}


class Gateway:
    """The upload gateway: one ASGI application, its dependencies and its one error path.

    `POST /v1/readings` goes straight to `upload` (the fast path): FastAPI's routing and
    middleware cost more CPU per request than the upload itself (parsing, validation,
    Kafka), and one process must carry 500 devices uploading every second. Every other
    request goes through FastAPI (`api`), which also serves and describes the upload
    (OpenAPI). Errors on both paths take the same way out, `error_response`:
    problem+json, counted by status. Every request gets one access-log line (client,
    method, path, status, milliseconds; never a header, so never a token).

    The connections to PostgreSQL and Kafka are opened when the application starts
    (its lifespan) and closed when it stops.
    """

    # Opened by the lifespan, before the first request.
    pool: AsyncConnectionPool[Any]
    auth: Authenticator
    receipts: ReceiptStore
    producer: AsyncProducer

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.config = settings.gateway
        self.topic = settings.kafka.topic
        self.limits = Limits(max_future=timedelta(seconds=settings.ingest.max_future_seconds))
        self.metrics = Metrics()
        self.limiter = RateLimiter(self.config.requests_per_second, self.config.burst)
        # A reservation this old outlived any send (its gateway died): look in Kafka.
        self.stale_after = self.config.delivery_timeout_seconds + RESERVATION_MARGIN_SECONDS
        self.db_outage = Outage("PostgreSQL", log, self.metrics.availability("postgres"))
        self.kafka_outage = Outage("Kafka", log, self.metrics.availability("kafka"))
        self.kafka = kafka_config(settings, "gateway", credentials=credentials)
        self.api = self._api()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "POST" and scope["path"] == "/v1/readings":
            try:
                response = await self.upload(Request(scope, receive))
            except Exception as exc:
                response = self.error_response(exc)
            await response(scope, receive, send)
            status = response.status_code
        else:
            sent: list[int] = [0]

            async def send_and_note(message: Any) -> None:
                if message["type"] == "http.response.start":
                    sent[0] = message["status"]
                await send(message)

            await self.api(scope, receive, send_and_note)
            status = sent[0]
        client = scope.get("client") or ("-", 0)
        access_log.info(
            "%s:%s %s %s %d %.1fms", client[0], client[1], scope["method"], scope["path"],
            status, (time.perf_counter() - started) * 1000,
        )  # fmt: skip

    def error_response(self, exc: Exception) -> Response:
        """The answer to an error, on the fast path and through FastAPI alike."""
        if isinstance(exc, Problem):
            return self.metrics.problem(exc)
        if isinstance(exc, OperationalError):
            return self.metrics.problem(_database_unavailable(exc, self.db_outage))
        if isinstance(exc, RequestValidationError):
            return Problem(400, "invalid-request", str(exc.errors())[:500]).response()
        log.error("unexpected error", exc_info=exc)
        return Problem(500, "internal-error", "the gateway failed; try again later").response()

    async def _error_handler(self, _: Request, exc: Exception) -> Response:
        return self.error_response(exc)

    def _api(self) -> FastAPI:
        api = FastAPI(
            title="Lakehouse upload gateway",
            version="1",
            lifespan=self._lifespan,
            description="Devices upload readings with their own bearer token.",
        )
        for handled in (Problem, RequestValidationError, OperationalError, Exception):
            api.add_exception_handler(handled, self._error_handler)
        api.post(
            "/v1/readings",
            status_code=202,
            summary="Upload a batch of readings",
            openapi_extra=_UPLOAD_OPENAPI,
            responses=_UPLOAD_RESPONSES,
        )(self.upload)
        api.get(
            "/v1/sequence",
            summary="The highest seq accepted from this device",
            description="An agent installed afresh on a device numbers its readings on from "
            "here, so they are never taken for duplicates of the readings sent before.",
            responses={
                401: {"description": "Missing, malformed, unknown, revoked or expired token"},
                503: {"description": "PostgreSQL unavailable; see Retry-After"},
            },
        )(self.sequence)
        api.get("/healthz", summary="Liveness")(self.healthz)
        api.get(
            "/readyz",
            summary="Readiness: PostgreSQL and Kafka reachable",
            responses={503: {"description": "A dependency is unavailable"}},
        )(self.readyz)
        api.get("/metrics", summary="Prometheus metrics")(self.prometheus)
        return api

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        conninfo = (
            f"host={self.settings.server_host('postgres')} port={self.settings.postgres.port} "
            "dbname=lakehouse "
            f"user=lakehouse password={self.credentials.database_passwords['lakehouse']} "
            f"connect_timeout={DATABASE_RETRY_AFTER}"
        )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=2,
            max_size=10,
            open=False,
            # Every statement has a deadline, so a request never hangs on the database.
            kwargs={"autocommit": True, "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
            timeout=DATABASE_RETRY_AFTER,  # a request waits this long at most for a connection
            # While PostgreSQL is down the pool keeps trying to connect (with backoff).
            reconnect_timeout=RECONNECT_FOREVER,
            check=AsyncConnectionPool.check_connection,
        )
        # Not waiting: the gateway starts while PostgreSQL is down (/readyz says so and
        # uploads get 503 until it is back).
        await pool.open(wait=False)
        self.pool = pool
        self.auth = Authenticator(pool)
        self.receipts = ReceiptStore(pool, owner=f"gateway-{uuid.uuid4().hex}")
        self.producer = AsyncProducer(self.kafka, self.config.delivery_timeout_seconds)
        sweeper = asyncio.create_task(self.auth.keep_fresh(), name="token-cache")
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
            self.producer.close()
            await self.auth.close()
            await self.receipts.close()
            await pool.close()

    async def upload(self, request: Request) -> Response:
        started = time.perf_counter()
        config = self.config
        identity = await self.auth.identify(request.headers.get("authorization"))
        wait = self.limiter.retry_after(identity.device_id)
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
        _validate(items, identity, self.limits)
        readings_json = orjson.dumps(items)
        device_id = identity.device_id
        # The readings are serialised once, for the digest and the envelope alike.
        head = orjson.dumps({"device_id": device_id, "tenant": identity.tenant,
                             "site": identity.site, "batch_id": batch_id})  # fmt: skip
        envelope = head[:-1] + b',"readings":' + readings_json + b"}"
        if len(envelope) > rules.MAX_ENVELOPE_BYTES:
            raise _too_large(len(items), len(envelope))
        digest = hashlib.sha256(readings_json).digest()
        reservation = await self.receipts.reserve(device_id, batch_id, digest)
        if reservation.state == "done" and reservation.receipt is not None:
            return _replay(reservation, digest, batch_id, self.metrics)
        if reservation.state != "reserved":
            found = await self._settle_reservation(reservation, device_id, batch_id, digest)
            if found is not None:
                return found
        try:
            partition, offset = await _with_timeout(
                self.producer.send(self.topic, device_id.encode(), envelope),
                # librdkafka reports its own timeout first; this only guards the await.
                config.delivery_timeout_seconds + 2,
            )
        except MessageTooLarge:
            # Checked above; only a broker configured below the limit gets here.
            raise _too_large(len(items), len(envelope)) from None
        except KafkaUnavailable as exc:
            self.kafka_outage.failed(exc)
            # The reservation stays: a timed-out send may still have reached the broker,
            # so a retry looks for the batch in Kafka once the reservation is stale.
            raise Problem(503, "kafka-unavailable", f"readings not accepted: {exc}",
                          retry_after=KAFKA_RETRY_AFTER) from None  # fmt: skip
        receipt = _receipt(batch_id, len(items), self.topic, partition, offset)
        failpoint("gateway-after-kafka-ack")
        await self.receipts.complete(device_id, batch_id, receipt, max(i["seq"] for i in items))
        if self.db_outage.down_since is not None or self.kafka_outage.down_since is not None:
            self.db_outage.recovered()
            self.kafka_outage.recovered()
        self.metrics.readings.inc(len(items))
        self.metrics.requests.labels("202").inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(receipt, status_code=202)

    async def _settle_reservation(
        self, reservation: Reservation, device_id: str, batch_id: str, digest: bytes
    ) -> Response | None:
        """Another request holds the batch id: answer for it, or take it over (None)."""
        if reservation.digest is not None and reservation.digest != digest:
            raise _conflict(batch_id)
        if reservation.state == "unknown" or reservation.age < self.stale_after:
            raise Problem(503, "batch-in-progress", f"batch {batch_id!r} is being accepted by "
                          "another request; retry for its receipt", retry_after=1)  # fmt: skip
        # Its gateway died between Kafka and PostgreSQL: did the batch reach Kafka?
        since = time.time() - reservation.age
        try:
            found = await asyncio.to_thread(
                find_envelope, self.kafka, self.topic, device_id, batch_id, since,
            )  # fmt: skip
        except LocateFailed as exc:
            self.kafka_outage.failed(exc)
            raise Problem(503, "kafka-unavailable", f"readings not accepted: {exc}",
                          retry_after=KAFKA_RETRY_AFTER) from None  # fmt: skip
        if found is None:
            if not await self.receipts.take_over(device_id, batch_id, self.stale_after):
                raise Problem(503, "batch-in-progress", f"batch {batch_id!r} is being "
                              "accepted by another request", retry_after=1)  # fmt: skip
            return None
        log.info("batch %s of %s was in Kafka already (%d/%d); receipt restored",
                 batch_id, device_id, found[0], found[1])  # fmt: skip
        seqs = await asyncio.to_thread(_seqs_in_envelope, self.kafka, self.topic, found)
        receipt = _receipt(batch_id, len(seqs), self.topic, found[0], found[1])
        await self.receipts.complete(device_id, batch_id, receipt, max(seqs))
        self.metrics.requests.labels("200").inc()
        return JSONResponse(receipt, status_code=200)

    async def sequence(self, request: Request) -> dict[str, Any]:
        identity = await self.auth.identify(request.headers.get("authorization"))
        return {"device_id": identity.device_id,
                "max_seq": await self.receipts.max_seq(identity.device_id)}  # fmt: skip

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(self) -> Response:
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("select 1")
        except Exception:  # any failure means not ready
            raise Problem(503, "not-ready", "PostgreSQL unavailable", retry_after=5) from None
        if not await self.producer.available():
            raise Problem(503, "not-ready", "Kafka unavailable", retry_after=5)
        return JSONResponse({"status": "ready"})

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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


def _replay(reservation: Reservation, digest: bytes, batch_id: str, metrics: Metrics) -> Response:
    if reservation.digest != digest:
        raise _conflict(batch_id)
    metrics.requests.labels("200").inc()
    return JSONResponse(reservation.receipt, status_code=200)


def _too_large(readings: int, size: int) -> Problem:
    """A batch whose Kafka message would exceed the limit: the device splits it."""
    fits = max(1, readings * rules.MAX_ENVELOPE_BYTES // size)
    return Problem(413, "batch-too-large",
                   f"the batch makes a message of {size} bytes > {rules.MAX_ENVELOPE_BYTES}; "
                   f"send at most {fits} of these readings per batch")  # fmt: skip


def _conflict(batch_id: str) -> Problem:
    return Problem(409, "idempotency-conflict",
                   f"batch id {batch_id!r} was already used for different readings")  # fmt: skip


def _receipt(
    batch_id: str, accepted: int, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    return {
        "batch_id": batch_id, "accepted": accepted, "topic": topic,
        "partition": partition, "offset": offset,
        "received_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip


def _seqs_in_envelope(config: dict[str, Any], topic: str, at: tuple[int, int]) -> list[int]:
    """The seqs of the readings in the envelope at (partition, offset) of the topic."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": f"{GATEWAY_LOCATE_GROUP_PREFIX}{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 3})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, at[0], at[1])])
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                readings = orjson.loads(message.value() or b"{}").get("readings") or []
                return [int(r["seq"]) for r in readings]
        raise LocateFailed("the envelope could not be read back")
    finally:
        consumer.close()


async def _with_timeout(awaitable: Any, seconds: float) -> Any:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise KafkaUnavailable(f"no acknowledgement within {seconds:.0f} s") from None
