"""The upload gateway, run as a real process against the real registry and Kafka."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from lakehouse import registry
from lakehouse.clients import kafka_config, postgres_connection
from tests.gateway_process import start_gateway
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

GOOD = {"seq": 1, "ts": "2026-11-20T12:00:00Z", "metric": "temperature", "value": 21.5}


@pytest.fixture(scope="module")
def registry_conn(stack, stack_settings, credentials):
    conn = postgres_connection(stack_settings, credentials)
    conn.autocommit = True
    registry.ensure_schema(conn)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def tokens(registry_conn) -> dict[str, str]:
    """Tokens in every state the auth matrix needs, for devices unique to this run."""
    run = os.urandom(4).hex()
    conn = registry_conn
    made: dict[str, str] = {}

    def device(name: str, tenant: str = "tenant-01", **kwargs) -> str:
        made[f"{name}_id"] = f"gw-{name}-{run}"
        return registry.register(conn, f"gw-{name}-{run}", tenant=tenant, site=f"site-{tenant}",
                                 lat=10.0, lon=20.0, **kwargs)  # fmt: skip

    made["a"] = device("a")
    made["b"] = device("b", tenant="tenant-02")
    made["limited"] = device("limited")
    made["revoked"] = device("revoked")
    registry.revoke(conn, made["revoked_id"])
    made["expired"] = device("expired", expires_in=timedelta(seconds=-1))
    made["rotated_old"] = device("rotated")
    made["rotated_new"] = registry.rotate(conn, made["rotated_id"], grace=timedelta(seconds=-1))
    made["grace_old"] = device("grace")
    made["grace_new"] = registry.rotate(conn, made["grace_id"], grace=timedelta(hours=1))
    made["revoke_live"] = device("revokelive")
    return made


@pytest.fixture(scope="module")
def gateway(stack, stack_settings, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    proc = start_gateway(port, log, LAKEHOUSE_GATEWAY_DELIVERY_TIMEOUT_SECONDS="3")
    yield f"http://127.0.0.1:{port}", log
    proc.terminate()
    proc.wait(30)


def post(url: str, token: str | None, body, *, content_type="application/json", headers=None,
         raw: bytes | None = None) -> httpx.Response:  # fmt: skip
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        sent["Content-Type"] = content_type
    data = raw if raw is not None else orjson.dumps(body)
    return _CLIENT.post(f"{url}/v1/readings", content=data, headers=sent, timeout=30)


# One client for the module: creating one per request costs more than the request.
_CLIENT = httpx.Client()


@pytest.fixture(scope="module", autouse=True)
def _close_client():
    yield
    _CLIENT.close()


def test_accepted_batch_reaches_kafka_with_the_tokens_identity(gateway, tokens, stack_settings):
    url, _ = gateway
    response = post(
        url, tokens["a"], [GOOD, {**GOOD, "seq": 2}], headers={"Idempotency-Key": "a-1"}
    )
    assert response.status_code == 202
    receipt = response.json()
    assert receipt["accepted"] == 2 and receipt["batch_id"] == "a-1"
    consumer = Consumer(kafka_config(stack_settings, **{"group.id": "gw-check"}))
    consumer.assign([TopicPartition(receipt["topic"], receipt["partition"], receipt["offset"])])
    message = consumer.consume(1, timeout=10)[0]
    consumer.close()
    envelope = orjson.loads(message.value())
    assert (envelope["device_id"], envelope["tenant"], envelope["site"]) == (
        tokens["a_id"], "tenant-01", "site-tenant-01",
    )  # fmt: skip
    assert envelope["batch_id"] == "a-1"
    assert [r["seq"] for r in envelope["readings"]] == [1, 2]


def test_retried_batch_gets_the_same_receipt_and_no_duplicate(gateway, tokens):
    url, _ = gateway
    body = [{**GOOD, "seq": 10}]
    first = post(url, tokens["a"], body, headers={"Idempotency-Key": "retry-1"})
    again = post(url, tokens["a"], body, headers={"Idempotency-Key": "retry-1"})
    zipped = post(url, tokens["a"], None, raw=gzip.compress(orjson.dumps(body)),
                  headers={"Idempotency-Key": "retry-1", "Content-Encoding": "gzip"})  # fmt: skip
    assert first.status_code == 202
    assert (again.status_code, zipped.status_code) == (200, 200)
    assert again.json() == first.json() == zipped.json()
    other = post(url, tokens["a"], [{**GOOD, "seq": 11}], headers={"Idempotency-Key": "retry-1"})
    assert other.status_code == 409
    assert other.json()["type"].endswith("idempotency-conflict")


@pytest.mark.parametrize(
    ("case", "token_key", "authorization"),
    [
        ("no token", None, None),
        ("basic scheme", None, "Basic dXNlcjpwYXNz"),
        ("not a device token", None, "Bearer abc.def.ghi"),
        ("unknown token", None, "Bearer lhd_" + "x" * 43),
        ("revoked device", "revoked", None),
        ("rotated out after grace", "rotated_old", None),
        ("expired", "expired", None),
    ],
)
def test_auth_matrix_is_401(gateway, tokens, case, token_key, authorization):
    url, _ = gateway
    headers = {"Content-Type": "application/json"}
    if token_key:
        headers["Authorization"] = f"Bearer {tokens[token_key]}"
    elif authorization:
        headers["Authorization"] = authorization
    response = httpx.post(f"{url}/v1/readings", content=orjson.dumps([GOOD]), headers=headers)
    assert response.status_code == 401, case
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_rotation_keeps_old_token_during_grace_and_new_one_works(gateway, tokens):
    url, _ = gateway
    assert post(url, tokens["grace_old"], [GOOD]).status_code == 202
    assert post(url, tokens["grace_new"], [GOOD]).status_code == 202
    assert post(url, tokens["rotated_new"], [GOOD]).status_code == 202


def test_revocation_reaches_the_gateway_within_five_seconds(gateway, tokens, registry_conn):
    url, _ = gateway
    assert post(url, tokens["revoke_live"], [GOOD]).status_code == 202  # now cached as valid
    registry.revoke(registry_conn, tokens["revokelive_id"])
    revoked_at = time.monotonic()
    while post(url, tokens["revoke_live"], [GOOD]).status_code != 401:
        assert time.monotonic() - revoked_at < 5.0
        time.sleep(0.2)


def test_a_device_cannot_write_as_another_device_or_tenant(gateway, tokens):
    url, _ = gateway
    as_b = post(url, tokens["a"], [{**GOOD, "device_id": tokens["b_id"]}])
    as_other_tenant = post(url, tokens["a"], [{**GOOD, "tenant": "tenant-02"}])
    assert (as_b.status_code, as_other_tenant.status_code) == (403, 403)
    assert as_b.json()["type"].endswith("identity-mismatch")
    same = post(url, tokens["a"], [{**GOOD, "device_id": tokens["a_id"], "tenant": "tenant-01"}])
    assert same.status_code == 202


def _reading(**change):
    return {**GOOD, **change}


def _without(field):
    return {k: v for k, v in GOOD.items() if k != field}


BOMB = gzip.compress(b"[" + b" " * (9 << 20) + b"]")
BAD_REQUESTS = [
    # (name, body or raw bytes, extra kwargs, status, problem code, reading reason)
    ("invalid json", None, {"raw": b"[{"}, 400, "invalid-json", None),
    ("object not array", {"seq": 1}, {}, 400, "not-an-array", None),
    ("empty batch", [], {}, 400, "empty-batch", None),
    ("bad ndjson line", None, {"raw": orjson.dumps(GOOD) + b"\n{oops", "content_type":
                               "application/x-ndjson"}, 400, "invalid-json", None),
    ("NaN literal", None, {"raw": b'[{"seq":1,"ts":"2026-11-20T12:00:00Z","metric":"m",'
                                  b'"value":NaN}]'}, 400, "invalid-json", None),
    ("text/plain", [GOOD], {"content_type": "text/plain"}, 415, "unsupported-media-type", None),
    ("no content type", [GOOD], {"content_type": None}, 415, "unsupported-media-type", None),
    ("brotli", [GOOD], {"headers": {"Content-Encoding": "br"}}, 415, "unsupported-encoding",
     None),
    ("bad gzip", None, {"raw": b"\x1f\x8b\x08\x00garbage", "headers":
                        {"Content-Encoding": "gzip"}}, 400, "bad-gzip", None),
    ("truncated gzip", None, {"raw": gzip.compress(orjson.dumps([GOOD]))[:-6], "headers":
                              {"Content-Encoding": "gzip"}}, 400, "bad-gzip", None),
    ("gzip bomb", None, {"raw": BOMB, "headers": {"Content-Encoding": "gzip"}}, 413,
     "body-too-large", None),
    ("huge body", None, {"raw": b"[" + b" " * (2 << 20) + b"]"}, 413, "body-too-large", None),
    ("too many readings", [GOOD] * 5001, {}, 413, "too-many-readings", None),
    ("bad idempotency key", [GOOD], {"headers": {"Idempotency-Key": "has space"}}, 400,
     "bad-idempotency-key", None),
    ("seq as string", [_reading(seq="1")], {}, 400, "invalid-readings", "wrong_type"),
    ("negative seq", [_reading(seq=-1)], {}, 400, "invalid-readings", "negative_seq"),
    ("float seq", [_reading(seq=1.5)], {}, 400, "invalid-readings", "wrong_type"),
    ("value as string", [_reading(value="1")], {}, 400, "invalid-readings", "wrong_type"),
    ("value boolean", [_reading(value=True)], {}, 400, "invalid-readings", "wrong_type"),
    ("missing value", [_without("value")], {}, 400, "invalid-readings", "missing_field"),
    ("missing ts", [_without("ts")], {}, 400, "invalid-readings", "missing_field"),
    ("missing seq", [_without("seq")], {}, 400, "invalid-readings", "missing_field"),
    ("bad ts", [_reading(ts="soon")], {}, 400, "invalid-readings", "invalid_timestamp"),
    ("naive ts", [_reading(ts="2026-11-20T12:00:00")], {}, 400, "invalid-readings",
     "ts_without_timezone"),
    ("future ts", [_reading(ts="2099-01-01T00:00:00Z")], {}, 400, "invalid-readings",
     "ts_in_future"),
    ("ancient ts", [_reading(ts="1980-01-01T00:00:00Z")], {}, 400, "invalid-readings",
     "ts_too_old"),
    ("empty metric", [_reading(metric="")], {}, 400, "invalid-readings", "invalid_identifier"),
    ("long unit", [_reading(unit="u" * 33)], {}, 400, "invalid-readings", "unit_too_long"),
    ("attrs list", [_reading(attrs=["x"])], {}, 400, "invalid-readings", "wrong_type"),
    ("attrs number", [_reading(attrs={"fw": 2})], {}, 400, "invalid-readings",
     "attrs_not_strings"),
    ("attrs too many", [_reading(attrs={str(i): "v" for i in range(33)})], {}, 400,
     "invalid-readings", "attrs_too_large"),
    ("reading not object", [GOOD, 7], {}, 400, "invalid-readings", "reading_not_object"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_exact_status_and_problem(gateway, tokens, case):
    url, _ = gateway
    _, body, kwargs, status, code, reason = case
    response = post(url, tokens["a"], body, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{code}" and problem["status"] == status
    if reason:
        assert problem["errors"][-1]["reason"] == reason
        assert problem["errors"][-1]["index"] == len(body) - 1


def test_every_bad_reading_is_listed_with_its_index(gateway, tokens):
    url, _ = gateway
    body = [_reading(value="x"), GOOD, _reading(ts="never"), GOOD]
    problem = post(url, tokens["a"], body).json()
    assert [(e["index"], e["reason"]) for e in problem["errors"]] == [
        (0, "wrong_type"), (2, "invalid_timestamp"),
    ]  # fmt: skip


def test_rate_limit_answers_429_with_retry_after(gateway, tokens):
    url, _ = gateway
    # Empty batches are answered fast (400), and still count against the limit.
    started = time.monotonic()
    statuses = [post(url, tokens["limited"], []) for _ in range(100)]
    elapsed = time.monotonic() - started
    assert statuses[0].status_code == 400
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, f"never limited: {[r.status_code for r in statuses]} in {elapsed:.2f} s"
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].json()["type"] == "/problems/rate-limited"


def test_openapi_fuzzing_finds_no_server_error(gateway, tokens, tmp_path):
    url, _ = gateway
    result = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "30",
         "-H", f"Authorization: Bearer {tokens['b']}", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("service", "problem"), [("kafka", "kafka-unavailable"), ("postgres", "database-unavailable")]
)
def test_outage_gives_503_with_retry_after_and_recovery(gateway, tokens, stack, service, problem):
    url, _ = gateway
    key = {"Idempotency-Key": f"outage-{service}"}
    stack.service(service).stop()
    try:
        response = post(url, tokens["b"], [GOOD], headers=key)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["type"] == f"/problems/{problem}"
    finally:
        stack.up()
    deadline = time.monotonic() + 60
    while True:
        retry = post(url, tokens["b"], [GOOD], headers=key)
        if retry.status_code == 202 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert retry.status_code == 202


def test_tokens_never_appear_in_any_log(gateway, tokens, stack_settings):
    _, gateway_log = gateway
    logs = [gateway_log, *Path(stack_settings.home, "logs").glob("*.log")]
    secrets = [v for k, v in tokens.items() if not k.endswith("_id")]
    # The access log is there (one line per request) and holds no header.
    access = [line for line in gateway_log.read_text().splitlines() if " access " in line]
    assert any(" POST /v1/readings 202 " in line for line in access)
    assert any(" POST /v1/readings 401 " in line for line in access)
    for path in logs:
        text = path.read_text(errors="replace")
        for token in secrets:
            assert token not in text, f"a token leaked into {path}"
            assert token[4:20] not in text, f"part of a token leaked into {path}"
