"""Vectorised decoding of a batch of Kafka messages with Arrow's JSON reader.

The common case, well-formed readings without attrs, is parsed and validated column
by column in C++, with no Python object per reading. Any message the vectorised path
cannot decide with certainty (attrs, unusual timestamps, a type error, a rule broken)
is handed back and decoded by `ReadingsBuilder`, the reference implementation, which
also produces every reject. Both paths give the same rows for the same input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ingest.readings import READINGS_ARROW, Limits, ReadingsBuilder, Source

_READING_FIELDS = [
    pa.field("seq", pa.int64()),
    pa.field("ts", pa.large_string()),
    pa.field("metric", pa.large_string()),
    pa.field("value", pa.float64()),
    pa.field("unit", pa.large_string()),
]
_IDENTITY_FIELDS = [
    pa.field("device_id", pa.large_string()),
    pa.field("tenant", pa.large_string()),
    pa.field("site", pa.large_string()),
]
_SINGLE = pa.schema(_IDENTITY_FIELDS + _READING_FIELDS)
_ENVELOPE = pa.schema(
    [*_IDENTITY_FIELDS, pa.field("batch_id", pa.large_string()),
     pa.field("readings", pa.list_(pa.struct(_READING_FIELDS)))]
)  # fmt: skip


@dataclass
class VectorResult:
    """Rows decided by the vectorised path, and the message indexes it handed back."""

    readings: list[pa.Table] = field(default_factory=list)
    fallback: list[int] = field(default_factory=list)
    max_event_us: int | None = None


def decode_vectorised(
    values: list[bytes | None],
    partitions: list[int],
    offsets: list[int],
    keep_readings: list[bool],
    *,
    topic: str,
    limits: Limits,
    now: datetime,
) -> VectorResult:
    result = VectorResult()
    singles: list[int] = []
    envelopes: list[int] = []
    for index, value in enumerate(values):
        if (
            not value
            or len(value) > limits.max_message_bytes
            or b"\n" in value
            or b"\r" in value
            or b'"attrs"' in value
        ):
            result.fallback.append(index)
        elif b'"readings"' in value:
            envelopes.append(index)
        else:
            singles.append(index)
    context = _Context(values, partitions, offsets, keep_readings, topic, limits, now)
    for group, envelope in ((singles, False), (envelopes, True)):
        if group:
            context.decode(group, envelope, result)
    result.fallback.sort()
    return result


@dataclass
class _Context:
    values: list[bytes | None]
    partitions: list[int]
    offsets: list[int]
    keep_readings: list[bool]
    topic: str
    limits: Limits
    now: datetime

    def decode(self, group: list[int], envelope: bool, result: VectorResult) -> None:
        payload = b"\n".join(self.values[i] or b"" for i in group)
        try:
            parsed = pajson.read_json(
                io.BytesIO(payload),
                # Blocks of a few MiB let the reader parse on every core.
                read_options=pajson.ReadOptions(block_size=4 << 20, use_threads=True),
                parse_options=pajson.ParseOptions(
                    explicit_schema=_ENVELOPE if envelope else _SINGLE,
                    unexpected_field_behavior="ignore",
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            result.fallback.extend(group)
            return
        if parsed.num_rows != len(group):
            result.fallback.extend(group)
            return
        message_index = pa.array(group, pa.int64())
        if envelope:
            readings = parsed.column("readings").combine_chunks()
            bad_list = pc.or_(pc.is_null(readings), pc.equal(pc.list_value_length(readings), 0))
            too_many = pc.greater(
                pc.list_value_length(readings), self.limits.max_readings_per_envelope
            )
            parents = pc.list_parent_indices(readings)
            flat = pc.list_flatten(readings)
            rows = pa.table(
                {
                    **{f.name: pc.take(parsed.column(f.name), parents) for f in _IDENTITY_FIELDS},
                    "batch_id": pc.take(parsed.column("batch_id"), parents),
                    **{f.name: flat.field(f.name) for f in _READING_FIELDS},
                    "_message": pc.take(message_index, parents),
                }
            )
            broken = pc.filter(message_index, pc.fill_null(pc.or_(bad_list, too_many), True))
        else:
            rows = parsed.append_column("batch_id", pa.nulls(parsed.num_rows, pa.string()))
            rows = rows.append_column("_message", message_index)
            broken = pa.array([], pa.int64())
        self._validate(rows, broken, result)

    def _validate(self, rows: pa.Table, broken: pa.Array, result: VectorResult) -> None:
        limits = self.limits
        ok = pc.and_(
            pc.and_(_present_identifier(rows["device_id"], limits),
                    _present_identifier(rows["tenant"], limits)),
            _present_identifier(rows["metric"], limits),
        )  # fmt: skip
        site = rows["site"]
        ok = pc.and_(ok, pc.or_(pc.is_null(site), _identifier_length_ok(site, limits)))
        seq, value, unit, ts = rows["seq"], rows["value"], rows["unit"], rows["ts"]
        ok = pc.and_(ok, pc.fill_null(pc.greater_equal(seq, 0), False))
        ok = pc.and_(ok, pc.fill_null(pc.is_finite(value), False))
        unit_ok = pc.fill_null(pc.less_equal(pc.utf8_length(unit), limits.max_unit_length), False)
        ok = pc.and_(ok, pc.or_(pc.is_null(unit), unit_ok))
        ok = pc.and_(ok, pc.is_valid(ts))
        failed = _plain(pc.filter(rows["_message"], pc.invert(ok)))
        suspect = pc.unique(pa.concat_arrays([failed, _plain(broken)]))
        good = rows.filter(pc.invert(pc.is_in(rows["_message"], suspect))) if len(suspect) else rows
        try:
            # Arrow's ISO 8601 parser accepts a subset of what the reference decoder
            # accepts, with the same meaning; one string outside it sends the group back.
            ts_us = pc.cast(good["ts"], pa.timestamp("us", "UTC"))
        except pa.ArrowInvalid:
            result.fallback.extend(pc.unique(rows["_message"]).to_pylist())
            return
        low = pa.scalar(self.limits.min_event_time, pa.timestamp("us", "UTC"))
        high = pa.scalar(self.now + self.limits.max_future, pa.timestamp("us", "UTC"))
        in_range = pc.and_(pc.greater_equal(ts_us, low), pc.less_equal(ts_us, high))
        out_of_range = pc.unique(_plain(pc.filter(good["_message"], pc.invert(in_range))))
        if len(out_of_range):
            keep = pc.invert(pc.is_in(good["_message"], out_of_range))
            good, ts_us = good.filter(keep), pc.filter(ts_us, keep)
            suspect = pc.unique(pa.concat_arrays([suspect, out_of_range]))
        result.fallback.extend(suspect.to_pylist())
        self._emit(good, ts_us, result)

    def _emit(self, good: pa.Table, ts_us: pa.ChunkedArray, result: VectorResult) -> None:
        if not all(self.keep_readings):
            keep = pc.take(pa.array(self.keep_readings, pa.bool_()), good["_message"])
            good, ts_us = good.filter(keep), pc.filter(ts_us, keep)
        message = good["_message"]
        n = good.num_rows
        if n == 0:
            return
        now_us = pa.scalar(self.now, pa.timestamp("us", "UTC"))
        table = pa.table(
            {
                "device_id": good["device_id"],
                "tenant": good["tenant"],
                "site": good["site"],
                "seq": good["seq"],
                "ts": ts_us,
                "metric": good["metric"],
                "value": good["value"],
                "unit": good["unit"],
                "attrs": pa.nulls(n, READINGS_ARROW.field("attrs").type),
                "ingested_at": pa.repeat(now_us, n),
                "source": pa.repeat(pa.scalar("kafka", pa.large_string()), n),
                "source_topic": pa.repeat(pa.scalar(self.topic, pa.large_string()), n),
                "source_partition": pc.take(pa.array(self.partitions, pa.int32()), message),
                "source_offset": pc.take(pa.array(self.offsets, pa.int64()), message),
                "batch_id": good["batch_id"],
                "source_file": pa.nulls(n, pa.string()),
                "source_line": pa.nulls(n, pa.int64()),
            }
        )
        result.readings.append(table.cast(READINGS_ARROW))
        newest = pc.max(ts_us).cast(pa.int64()).as_py()
        if newest is not None and (result.max_event_us is None or newest > result.max_event_us):
            result.max_event_us = newest


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A chunked array as one contiguous array (int64 message indexes)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks else pa.array([], pa.int64())
    return values


def _identifier_length_ok(column: pa.ChunkedArray, limits: Limits) -> pa.ChunkedArray:
    length = pc.utf8_length(column)
    return pc.fill_null(
        pc.and_(pc.greater_equal(length, 1), pc.less_equal(length, limits.max_identifier_length)),
        False,
    )


def _present_identifier(column: pa.ChunkedArray, limits: Limits) -> pa.ChunkedArray:
    return pc.and_(pc.is_valid(column), _identifier_length_ok(column, limits))


def decode_messages(
    values: list[bytes | None],
    partitions: list[int],
    offsets: list[int],
    keep_readings: list[bool],
    *,
    topic: str,
    limits: Limits,
    now: datetime,
) -> ReadingsBuilder:
    """Decode a batch: vectorised where possible, the rest through the reference decoder."""
    builder = ReadingsBuilder(limits, now)
    result = decode_vectorised(
        values, partitions, offsets, keep_readings, topic=topic, limits=limits, now=now
    )
    for table in result.readings:
        builder.add_table(table, result.max_event_us)
    for index in result.fallback:
        builder.keep_readings = keep_readings[index]
        builder.add_message(
            values[index], Source("kafka", topic, partitions[index], offsets[index])
        )
    builder.keep_readings = True
    return builder
