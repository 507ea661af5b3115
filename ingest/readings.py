"""Decode and validate readings into Arrow columns; anything invalid becomes a reject.

One message is either a single reading that names its device and tenant,

    {"device_id": "d1", "tenant": "t1", "site": "s1", "seq": 7,
     "ts": "2026-11-21T10:00:00Z", "metric": "temperature", "value": 21.5}

or a batch envelope, as the upload gateway produces it,

    {"device_id": "d1", "tenant": "t1", "site": "s1", "batch_id": "…",
     "readings": [{"seq": 7, "ts": "…", "metric": "…", "value": 21.5}, …]}

Each rejected record carries a reason code (`REASONS`) and a detail; a bad reading in
an envelope rejects only itself. Unknown fields are ignored (see lakehouse.contracts).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from lakehouse_edge import rules

from lakehouse.contracts import READINGS_SCHEMA, REJECTED_SCHEMA

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

REASONS = {
    "empty_message": "the message has no payload",
    "message_too_large": "the message exceeds the size limit",
    "invalid_utf8": "the payload is not valid UTF-8",
    "invalid_json": "the payload is not valid JSON",
    "not_an_object": "the payload is not a JSON object",
    "bad_envelope": "`readings` is not a non-empty array within the size limit",
    "reading_not_object": "a reading in the envelope is not a JSON object",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a known field has the wrong JSON type",
    "non_finite_value": "value is NaN or infinite",
    "invalid_timestamp": "ts is not an RFC 3339 timestamp",
    "ts_without_timezone": "ts has no UTC offset",
    "ts_in_future": "ts is further in the future than the allowed clock skew",
    "ts_too_old": "ts is before the earliest accepted event time",
    "negative_seq": "seq is negative",
    "invalid_identifier": "device_id, tenant, site or metric is empty or too long",
    "unit_too_long": "unit is longer than allowed",
    "attrs_not_strings": "attrs keys and values must be strings",
    "attrs_too_large": "attrs has too many entries or too many bytes",
}


@dataclass(frozen=True)
class Limits:
    """What a reading may look like beyond its types (the agent's rules, shared)."""

    max_message_bytes: int = rules.MAX_ENVELOPE_BYTES
    max_readings_per_envelope: int = 10_000
    max_identifier_length: int = rules.MAX_IDENTIFIER_LENGTH
    max_unit_length: int = rules.MAX_UNIT_LENGTH
    max_attrs: int = rules.MAX_ATTRS
    max_attrs_bytes: int = rules.MAX_ATTRS_BYTES
    max_future: timedelta = timedelta(days=1)
    min_event_time: datetime = rules.MIN_EVENT_TIME


@dataclass(frozen=True)
class Source:
    """Where a record came from (lineage columns of bronze)."""

    kind: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    batch_id: str | None = None
    file: str | None = None
    line: int | None = None


_UPLOAD = Source("upload")


class Rejected(Exception):
    """A record that breaks the contract: reason code plus detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ReadingsBuilder:
    """Accumulates readings as column lists and rejects as rows, then builds Arrow tables."""

    limits: Limits = field(default_factory=Limits)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self._cols: dict[str, list[Any]] = {f.name: [] for f in READINGS_SCHEMA.fields}
        self._rejected: list[dict[str, Any]] = []
        self._max_ts = (self.now + self.limits.max_future - _EPOCH) // _MICRO
        self._min_ts = (self.limits.min_event_time - _EPOCH) // _MICRO
        self._now_us = (self.now - _EPOCH) // _MICRO
        self.max_event_us: int | None = None
        # False while replaying messages whose readings a table already holds.
        self.keep_readings = True
        self._tables: list[pa.Table] = []
        self._table_rows = 0

    @property
    def rows(self) -> int:
        return len(self._cols["seq"]) + self._table_rows

    def add_table(self, table: pa.Table, max_event_us: int | None) -> None:
        """Add readings already decoded and validated elsewhere (vectorised path)."""
        self._tables.append(table)
        self._table_rows += table.num_rows
        if max_event_us is not None and (
            self.max_event_us is None or max_event_us > self.max_event_us
        ):
            self.max_event_us = max_event_us

    @property
    def rejected(self) -> int:
        return len(self._rejected)

    # -- messages ---------------------------------------------------------------------
    def add_message(self, raw: bytes | None, source: Source) -> None:
        """Decode one Kafka message (single reading or envelope)."""
        try:
            payload = self._parse(raw)
            if "readings" in payload:
                self._add_envelope(payload, raw or b"", source)
            else:
                identity = self.identity(payload)
                self._add_reading(payload, identity, source)
        except Rejected as exc:
            self.reject(raw, exc, source, payload_identity(raw))

    def _parse(self, raw: bytes | None) -> dict[str, Any]:
        if not raw:
            raise Rejected("empty_message", "no payload (null or zero bytes)")
        if len(raw) > self.limits.max_message_bytes:
            raise Rejected(
                "message_too_large", f"{len(raw)} bytes > {self.limits.max_message_bytes}"
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _classify_json_error(raw, exc) from None
        if not isinstance(payload, dict):
            raise Rejected("not_an_object", f"top-level JSON is {type(payload).__name__}")
        return payload

    def identity(self, obj: dict[str, Any]) -> tuple[str, str, str | None]:
        """(device_id, tenant, site) of a single reading or envelope; raises Rejected."""
        device = self._identifier(obj, "device_id", required=True)
        tenant = self._identifier(obj, "tenant", required=True)
        site = self._identifier(obj, "site", required=False)
        assert device is not None and tenant is not None  # required=True guarantees it
        return device, tenant, site

    def _identifier(self, obj: dict[str, Any], name: str, *, required: bool) -> str | None:
        value = obj.get(name)
        if value is None:
            if required:
                raise Rejected("missing_field", name)
            return None
        if not isinstance(value, str):
            raise Rejected("wrong_type", f"{name} must be a string, got {_json_type(value)}")
        if not value or len(value) > self.limits.max_identifier_length:
            raise Rejected("invalid_identifier", f"{name} must have 1-128 characters")
        return value

    def _add_envelope(self, payload: dict[str, Any], raw: bytes, source: Source) -> None:
        readings = payload["readings"]
        if not isinstance(readings, list) or not readings:
            raise Rejected("bad_envelope", "readings must be a non-empty array")
        if len(readings) > self.limits.max_readings_per_envelope:
            raise Rejected(
                "bad_envelope",
                f"{len(readings)} readings > {self.limits.max_readings_per_envelope}",
            )
        identity = self.identity(payload)
        batch_id = payload.get("batch_id")
        if batch_id is not None and not isinstance(batch_id, str):
            raise Rejected("wrong_type", "batch_id must be a string")
        if batch_id and source.batch_id is None:
            source = Source(source.kind, source.topic, source.partition, source.offset, batch_id)
        for index, reading in enumerate(readings):
            try:
                if not isinstance(reading, dict):
                    raise Rejected(
                        "reading_not_object", f"readings[{index}] is {_json_type(reading)}"
                    )
                self._add_reading(reading, identity, source)
            except Rejected as exc:
                self.reject(orjson.dumps(reading), exc, source, identity, item_index=index)

    # -- readings ---------------------------------------------------------------------
    def validate(self, reading: Any, identity: tuple[str, str, str | None]) -> None:
        """Check one reading against the contract without keeping it; raises Rejected."""
        if not isinstance(reading, dict):
            raise Rejected("reading_not_object", f"reading is {_json_type(reading)}")
        keep, self.keep_readings = self.keep_readings, False
        try:
            self._add_reading(reading, identity, _UPLOAD)
        finally:
            self.keep_readings = keep

    def add_reading(
        self, reading: dict[str, Any], identity: tuple[str, str, str | None], source: Source
    ) -> bool:
        """Validate and add one reading whose identity is already known. False if rejected."""
        try:
            self._add_reading(reading, identity, source)
            return True
        except Rejected as exc:
            self.reject(orjson.dumps(reading, default=str), exc, source, identity)
            return False

    def _add_reading(
        self, r: dict[str, Any], identity: tuple[str, str, str | None], source: Source
    ) -> None:
        seq = r.get("seq")
        if seq is None:
            raise Rejected("missing_field", "seq")
        if type(seq) is not int:
            raise Rejected("wrong_type", f"seq must be an integer, got {_json_type(seq)}")
        if seq < 0 or seq >= 1 << 63:
            raise Rejected("negative_seq" if seq < 0 else "wrong_type", f"seq {seq} out of range")
        ts_us = self._timestamp(r.get("ts"))
        metric = self._identifier(r, "metric", required=True)
        value = r.get("value")
        if value is None:
            raise Rejected("missing_field", "value")
        if type(value) is int:
            value = float(value)
        elif type(value) is not float:
            raise Rejected("wrong_type", f"value must be a number, got {_json_type(value)}")
        if not math.isfinite(value):
            raise Rejected("non_finite_value", f"value is {value}")
        unit = r.get("unit")
        if unit is not None:
            if not isinstance(unit, str):
                raise Rejected("wrong_type", f"unit must be a string, got {_json_type(unit)}")
            if len(unit) > self.limits.max_unit_length:
                raise Rejected("unit_too_long", f"unit has {len(unit)} characters")
        attrs = r.get("attrs")
        if attrs is not None:
            attrs = self._attrs(attrs)
        if not self.keep_readings:
            return

        c = self._cols
        c["device_id"].append(identity[0])
        c["tenant"].append(identity[1])
        c["site"].append(identity[2])
        c["seq"].append(seq)
        c["ts"].append(ts_us)
        c["metric"].append(metric)
        c["value"].append(value)
        c["unit"].append(unit)
        c["attrs"].append(attrs)
        c["ingested_at"].append(self._now_us)
        c["source"].append(source.kind)
        c["source_topic"].append(source.topic)
        c["source_partition"].append(source.partition)
        c["source_offset"].append(source.offset)
        c["batch_id"].append(source.batch_id)
        c["source_file"].append(source.file)
        c["source_line"].append(source.line)
        if self.max_event_us is None or ts_us > self.max_event_us:
            self.max_event_us = ts_us

    def _timestamp(self, ts: Any) -> int:
        if ts is None:
            raise Rejected("missing_field", "ts")
        if not isinstance(ts, str):
            raise Rejected("wrong_type", f"ts must be a string, got {_json_type(ts)}")
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise Rejected("invalid_timestamp", f"ts {ts[:64]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise Rejected("ts_without_timezone", f"ts {ts[:64]!r} has no offset")
        micros = (parsed - _EPOCH) // _MICRO
        if micros > self._max_ts:
            raise Rejected("ts_in_future", f"ts {ts[:64]} is beyond the allowed clock skew")
        if micros < self._min_ts:
            raise Rejected(
                "ts_too_old", f"ts {ts[:64]} is before {self.limits.min_event_time:%Y-%m-%d}"
            )
        return micros

    def _attrs(self, attrs: Any) -> list[tuple[str, str]]:
        if not isinstance(attrs, dict):
            raise Rejected("wrong_type", f"attrs must be an object, got {_json_type(attrs)}")
        if len(attrs) > self.limits.max_attrs:
            raise Rejected("attrs_too_large", f"{len(attrs)} entries > {self.limits.max_attrs}")
        size = 0
        for key, value in attrs.items():
            if not isinstance(value, str):
                raise Rejected("attrs_not_strings", f"attrs[{key!r}] is {_json_type(value)}")
            size += len(key) + len(value)
        if size > self.limits.max_attrs_bytes:
            raise Rejected("attrs_too_large", f"{size} bytes > {self.limits.max_attrs_bytes}")
        return list(attrs.items())

    # -- rejects ----------------------------------------------------------------------
    def reject(
        self,
        raw: bytes | None,
        error: Rejected,
        source: Source,
        identity: tuple[str | None, str | None, str | None] | None = None,
        item_index: int | None = None,
    ) -> None:
        text, encoding = _raw_text(raw)
        self._rejected.append(
            {
                "raw": text,
                "raw_encoding": encoding,
                "reason": error.reason,
                "detail": error.detail[:1000],
                "device_id": identity[0] if identity else None,
                "tenant": identity[1] if identity else None,
                "ingested_at": self._now_us,
                "source": source.kind,
                "source_topic": source.topic,
                "source_partition": source.partition,
                "source_offset": source.offset,
                "batch_id": source.batch_id,
                "source_file": source.file,
                "source_line": source.line,
                "item_index": item_index,
            }
        )

    # -- output -----------------------------------------------------------------------
    def readings_table(self) -> pa.Table:
        decoded = pa.Table.from_pydict(self._cols, schema=READINGS_ARROW)
        if not self._tables:
            return decoded
        return pa.concat_tables([*self._tables, decoded])

    def rejected_table(self) -> pa.Table:
        return pa.Table.from_pylist(self._rejected, schema=REJECTED_ARROW)


def payload_identity(raw: bytes | None) -> tuple[str | None, str | None, str | None] | None:
    """Best-effort device and tenant of an unparseable record, for the rejected row."""
    if not raw:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    device, tenant = obj.get("device_id"), obj.get("tenant")
    return (
        device if isinstance(device, str) else None,
        tenant if isinstance(tenant, str) else None,
        None,
    )


def _classify_json_error(raw: bytes, exc: orjson.JSONDecodeError) -> Rejected:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected("invalid_utf8", str(err)[:200])
    if "infinity" in str(exc):
        return Rejected("non_finite_value", "a number overflows a double")
    # orjson refuses NaN/Infinity literals outright; tell that case apart for the sender.
    try:
        json.loads(raw, parse_constant=_refuse_constant)
    except _NonFinite as nf:
        return Rejected("non_finite_value", f"literal {nf.args[0]} is not valid JSON")
    except ValueError:
        pass
    return Rejected("invalid_json", str(exc)[:200])


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _NonFinite(name)


def _raw_text(raw: bytes | None) -> tuple[str | None, str]:
    if raw is None:
        return None, "utf8"
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return raw.hex(), "hex"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _arrow_schema(schema: Any) -> pa.Schema:
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(schema)


READINGS_ARROW = _arrow_schema(READINGS_SCHEMA)
REJECTED_ARROW = _arrow_schema(REJECTED_SCHEMA)
