"""A corpus of bad records, each with the reason it must be rejected for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

GOOD_TS = "2026-11-20T12:00:00Z"


def reading(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device_id": "dev-bad",
        "tenant": "tenant-01",
        "site": "site-001",
        "seq": 1,
        "ts": GOOD_TS,
        "metric": "temperature",
        "value": 21.5,
        "unit": "C",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def without(field: str) -> dict[str, Any]:
    return reading(**{field: _DROP})


def envelope(readings: Any, **overrides: Any) -> dict[str, Any]:
    body = {"device_id": "dev-env", "tenant": "tenant-02", "site": "site-002", "readings": readings}
    body.update(overrides)
    return body


@dataclass(frozen=True)
class BadRecord:
    name: str
    payload: bytes | None
    reason: str
    detail: str  # a substring the detail must contain


def _j(value: Any) -> bytes:
    return orjson.dumps(value)


BAD_RECORDS: list[BadRecord] = [
    BadRecord("null payload", None, "empty_message", "no payload"),
    BadRecord("zero bytes", b"", "empty_message", "no payload"),
    BadRecord("oversized", b'{"pad":"' + b"x" * (1 << 20) + b'"}', "message_too_large", "bytes >"),
    BadRecord("invalid utf-8", b'{"device_id":"\xff\xfe"}', "invalid_utf8", "utf-8"),
    BadRecord("truncated json", b'{"device_id": "d1", "seq":', "invalid_json", ""),
    BadRecord("json array", b"[1, 2, 3]", "not_an_object", "list"),
    BadRecord("json string", b'"hello"', "not_an_object", "str"),
    BadRecord(
        "NaN literal",
        b'{"device_id":"d","tenant":"t","seq":1,"ts":"'
        + GOOD_TS.encode()
        + b'","metric":"m","value":NaN}',
        "non_finite_value",
        "NaN",
    ),
    BadRecord(
        "Infinity literal",
        b'{"device_id":"d","tenant":"t","seq":1,"ts":"'
        + GOOD_TS.encode()
        + b'","metric":"m","value":-Infinity}',
        "non_finite_value",
        "Infinity",
    ),
    BadRecord(
        "overflowing number",
        _j(reading()).replace(b"21.5", b"1e400"),
        "non_finite_value",
        "overflows",
    ),
    BadRecord("missing device_id", _j(without("device_id")), "missing_field", "device_id"),
    BadRecord("missing tenant", _j(without("tenant")), "missing_field", "tenant"),
    BadRecord("missing seq", _j(without("seq")), "missing_field", "seq"),
    BadRecord("missing ts", _j(without("ts")), "missing_field", "ts"),
    BadRecord("missing value", _j(without("value")), "missing_field", "value"),
    BadRecord("seq as string", _j(reading(seq="7")), "wrong_type", "seq must be an integer"),
    BadRecord("seq as float", _j(reading(seq=1.5)), "wrong_type", "seq must be an integer"),
    BadRecord("negative seq", _j(reading(seq=-3)), "negative_seq", "-3"),
    BadRecord("value as string", _j(reading(value="21.5")), "wrong_type", "value must be a number"),
    BadRecord("value as boolean", _j(reading(value=True)), "wrong_type", "got boolean"),
    BadRecord("device_id as number", _j(reading(device_id=42)), "wrong_type", "device_id"),
    BadRecord("empty metric", _j(reading(metric="")), "invalid_identifier", "metric"),
    BadRecord("ts as number", _j(reading(ts=1700000000)), "wrong_type", "ts must be a string"),
    BadRecord("ts not a date", _j(reading(ts="yesterday")), "invalid_timestamp", "yesterday"),
    BadRecord(
        "ts without offset",
        _j(reading(ts="2026-11-20T12:00:00")),
        "ts_without_timezone",
        "no offset",
    ),
    BadRecord(
        "ts far in the future", _j(reading(ts="2099-01-01T00:00:00Z")), "ts_in_future", "clock skew"
    ),
    BadRecord(
        "ts far in the past",
        _j(reading(ts="1990-01-01T00:00:00Z")),
        "ts_too_old",
        "before 2000-01-01",
    ),
    BadRecord("unit too long", _j(reading(unit="u" * 40)), "unit_too_long", "40"),
    BadRecord("attrs as list", _j(reading(attrs=["a"])), "wrong_type", "attrs must be an object"),
    BadRecord("attrs non-string value", _j(reading(attrs={"fw": 3})), "attrs_not_strings", "fw"),
    BadRecord(
        "attrs too many",
        _j(reading(attrs={f"k{i}": "v" for i in range(40)})),
        "attrs_too_large",
        "40 entries",
    ),
    BadRecord("attrs too big", _j(reading(attrs={"blob": "x" * 5000})), "attrs_too_large", "bytes"),
    BadRecord(
        "envelope readings not array", _j(envelope({"seq": 1})), "bad_envelope", "non-empty array"
    ),
    BadRecord("envelope readings empty", _j(envelope([])), "bad_envelope", "non-empty array"),
    BadRecord(
        "envelope without tenant", _j(envelope([reading()], tenant=None)), "missing_field", "tenant"
    ),
    BadRecord(
        "envelope too many readings", _j(envelope([{}] * 10_001)), "bad_envelope", "10001 readings"
    ),
]

# An envelope with good and bad readings: the bad ones are rejected one by one.
MIXED_ENVELOPE = _j(
    envelope(
        [
            {"seq": 1, "ts": GOOD_TS, "metric": "humidity", "value": 50.0},
            "not an object",
            {"seq": 2, "ts": GOOD_TS, "metric": "humidity", "value": "high"},
            {"seq": 3, "ts": GOOD_TS, "metric": "humidity", "value": 51.0, "extra": "ignored"},
        ]
    )
)
MIXED_REJECTS = [("reading_not_object", 1), ("wrong_type", 2)]
MIXED_GOOD_SEQS = [1, 3]


def good_message(seq: int) -> bytes:
    return _j(reading(device_id="dev-good", seq=seq, value=float(seq)))
