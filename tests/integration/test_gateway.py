"""The upload gateway, run as a real process against the real registry and Kafka."""

from __future__ import annotations

import gzip
import os
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from lakehouse_testing.gateway_process import start_gateway
from lakehouse_testing.lake import free_port

from lakehouse import registry
from lakehouse.clients import kafka_config
from tests.integration.conftest import assert_accounted

pytestmark = pytest.mark.integration

GOOD = {"seq": 1, "ts": "2026-11-20T12:00:00Z", "metric": "temperature", "value": 21.5}


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
    made["c"] = device("c")
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
    consumer = Consumer(kafka_config(stack_settings, "admin", **{"group.id": "gw-check"}))
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
def test_outage_gives_503_with_retry_after_and_recovery(
    gateway, tokens, stack, stack_settings, service, problem
):
    url, _ = gateway
    key = {"Idempotency-Key": f"outage-{service}"}
    stack.hold(service)  # stopped, and kept stopped by the supervisor
    try:
        response = post(url, tokens["b"], [GOOD], headers=key)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["type"] == f"/problems/{problem}"
    finally:
        stack.release(service)
    deadline = time.monotonic() + 60
    while True:
        retry = post(url, tokens["b"], [GOOD], headers=key)
        if retry.status_code in (200, 202) or time.monotonic() > deadline:
            break
        time.sleep(1)
    # 200 when an earlier retry reached Kafka but could not store its receipt.
    assert retry.status_code in (200, 202), retry.text
    found = envelopes_with_batch(stack_settings, tokens["b_id"], f"outage-{service}")
    assert found == [(retry.json()["partition"], retry.json()["offset"])]


def test_uploads_after_postgres_restarted_while_the_gateway_was_idle_are_accepted(
    gateway, tokens, stack
):
    url, _ = gateway
    run = os.urandom(3).hex()
    first = post(url, tokens["b"], [GOOD], headers={"Idempotency-Key": f"idle-{run}-0"})
    assert first.status_code == 202  # the gateway now holds connections to PostgreSQL
    stack.hold("postgres")
    stack.release("postgres")
    # Nothing was sent meanwhile: the next uploads are the first to find the connections
    # dead, and none of them may pay for it.
    for n in (1, 2, 3):
        again = post(url, tokens["b"], [GOOD], headers={"Idempotency-Key": f"idle-{run}-{n}"})
        assert again.status_code == 202, again.text


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


def envelopes_with_batch(settings, device_id: str, batch_id: str) -> list[tuple[int, int]]:
    """(partition, offset) of every envelope of the device's batch in the readings topic."""
    consumer = Consumer(kafka_config(settings, "admin", **{"group.id": f"gw-scan-{batch_id}",
                                                  "enable.partition.eof": True}))  # fmt: skip
    topic = settings.kafka.topic
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    remaining, found = set(partitions), []
    deadline = time.monotonic() + 60
    while remaining and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=1):
            if message.error() is not None:
                remaining.discard(message.partition())
                continue
            if message.key() == device_id.encode():
                envelope = orjson.loads(message.value())
                if envelope["batch_id"] == batch_id:
                    found.append((message.partition(), message.offset()))
    consumer.close()
    assert not remaining, "the topic could not be read to its end"
    return found


def test_a_gateway_killed_between_kafka_and_its_receipt_sends_the_batch_once(
    stack, stack_settings, credentials, tokens, tmp_path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body, key = [{**GOOD, "seq": 900}], {"Idempotency-Key": "crash-after-ack"}
    crashing = start_gateway(
        port, tmp_path / "gateway.log", LAKEHOUSE_GATEWAY_DELIVERY_TIMEOUT_SECONDS="3",
        LAKEHOUSE_FAILPOINT="gateway-after-kafka-ack",
    )  # fmt: skip
    with pytest.raises(httpx.TransportError):
        post(url, tokens["c"], body, headers=key)
    assert crashing.wait(30) == -9
    restarted = start_gateway(port, tmp_path / "gateway.log",
                              LAKEHOUSE_GATEWAY_DELIVERY_TIMEOUT_SECONDS="3")  # fmt: skip
    try:
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = post(url, tokens["c"], body, headers=key)
            statuses.append(response.status_code)
            if response.status_code != 503:
                break
            assert response.json()["type"] == "/problems/batch-in-progress"
            time.sleep(1)
        assert statuses[-1] == 200, statuses
        receipt = response.json()
        found = envelopes_with_batch(stack_settings, tokens["c_id"], "crash-after-ack")
        assert found == [(receipt["partition"], receipt["offset"])]
        assert receipt["accepted"] == 1
        assert post(url, tokens["c"], body, headers=key).json() == receipt
        counts = assert_accounted(stack_settings, credentials, tokens["c_id"])
        assert counts.receipted == counts.bronze
    finally:
        restarted.terminate()
        restarted.wait(30)


def test_concurrent_retries_of_one_batch_send_it_once(gateway, tokens, stack_settings, credentials):
    url, _ = gateway
    body, key = [{**GOOD, "seq": 950}], {"Idempotency-Key": "concurrent-1"}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(url, tokens["c"], body, headers=key), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1, statuses
    assert set(statuses) <= {200, 202, 503}
    receipt = next(r.json() for r in responses if r.status_code == 202)
    assert post(url, tokens["c"], body, headers=key).json() == receipt
    found = envelopes_with_batch(stack_settings, tokens["c_id"], "concurrent-1")
    assert found == [(receipt["partition"], receipt["offset"])]
    counts = assert_accounted(stack_settings, credentials, tokens["c_id"])
    assert counts.receipted == counts.bronze


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakehouse gateway test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path


def accepts(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_a_gateway_on_every_address_leaves_the_other_servers_on_loopback(
    stack, stack_settings, tmp_path
):
    port = free_port()
    proc = start_gateway(port, tmp_path / "gateway.log", LAKEHOUSE_GATEWAY_HOST="0.0.0.0")
    try:
        # 127.0.0.2 stands for the machine's LAN address here: not where servers bind.
        assert accepts("127.0.0.2", port)
        # The loops that the test stack leaves to the tests, and the demo fleet it does
        # not run, serve no metrics of their own.
        idle = {
            "transform metrics": stack_settings.supervisor.transform_every == 0,
            "maintain metrics": stack_settings.supervisor.maintain_every == 0,
            "demo metrics": not stack_settings.demo,
        }
        for name, server_port in stack_settings.ports().items():
            if idle.get(name):
                continue
            assert accepts("127.0.0.1", server_port), name
            assert not accepts("127.0.0.2", server_port), f"{name} answers beyond loopback"
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_gateway_with_tls_serves_https_only(stack, tokens, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", "gateway", "--port", str(port),
             "--tls-cert", str(cert), "--tls-key", str(key)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not accepts("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.3)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            response = client.post(
                f"https://127.0.0.1:{port}/v1/readings", json=[{**GOOD, "seq": 990}],
                headers={"Authorization": f"Bearer {tokens['c']}"}, timeout=30,
            )  # fmt: skip
        assert response.status_code == 202, response.text
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_gateway_starts_while_postgres_is_down_and_recovers_by_itself(stack, tokens, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.hold("postgres")
    try:
        with (tmp_path / "gateway.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lakehouse", "gateway", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not accepts("127.0.0.1", port):
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["detail"] == "PostgreSQL unavailable"
        upload = post(
            url, tokens["c"], [{**GOOD, "seq": 970}], headers={"Idempotency-Key": "pg-down"}
        )
        assert upload.status_code == 503, upload.text
        assert upload.json()["type"] == "/problems/database-unavailable"
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'lakehouse_gateway_dependency_up{dependency="postgres"} 0.0' in metrics
    finally:
        stack.release("postgres")
    try:
        deadline = time.monotonic() + 60
        while True:
            upload = post(url, tokens["c"], [{**GOOD, "seq": 970}],
                          headers={"Idempotency-Key": "pg-down"})  # fmt: skip
            if upload.status_code in (200, 202) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert upload.status_code == 202, upload.text
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'lakehouse_gateway_dependency_up{dependency="postgres"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(30)
