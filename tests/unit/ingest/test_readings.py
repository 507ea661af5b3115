from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.readings import REASONS, ReadingsBuilder, Source
from tests.bad_records import (
    BAD_RECORDS,
    MIXED_ENVELOPE,
    MIXED_GOOD_SEQS,
    MIXED_REJECTS,
    good_message,
)

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def test_corpus_covers_at_least_twenty_distinct_kinds():
    assert len(BAD_RECORDS) >= 20
    assert len({r.reason for r in BAD_RECORDS}) >= 15
    assert {r.reason for r in BAD_RECORDS} <= set(REASONS)


@pytest.mark.parametrize("record", BAD_RECORDS, ids=lambda r: r.name)
def test_each_bad_record_is_rejected_with_its_reason(record):
    builder = ReadingsBuilder(now=NOW)
    builder.add_message(record.payload, Source("kafka", "t", 0, 41))
    assert builder.rows == 0
    rejected = builder.rejected_table().to_pylist()
    assert len(rejected) == 1
    row = rejected[0]
    assert row["reason"] == record.reason
    assert record.detail.lower() in row["detail"].lower()
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("t", 0, 41)
    if record.payload:
        raw = row["raw"]
        expected = (
            record.payload.decode() if row["raw_encoding"] == "utf8" else record.payload.hex()
        )
        assert raw == expected


def test_bad_records_do_not_take_good_neighbours_with_them():
    builder = ReadingsBuilder(now=NOW)
    offset = 0
    for seq, record in enumerate(BAD_RECORDS, start=1):
        builder.add_message(good_message(seq), Source("kafka", "t", 0, offset))
        builder.add_message(record.payload, Source("kafka", "t", 0, offset + 1))
        offset += 2
    assert builder.rows == len(BAD_RECORDS)
    assert builder.rejected == len(BAD_RECORDS)
    readings = builder.readings_table().to_pylist()
    assert [r["seq"] for r in readings] == list(range(1, len(BAD_RECORDS) + 1))
    assert all(r["source_offset"] % 2 == 0 for r in readings)
    rejected = builder.rejected_table().to_pylist()
    assert [r["reason"] for r in rejected] == [r.reason for r in BAD_RECORDS]


def test_envelope_rejects_only_its_bad_readings():
    builder = ReadingsBuilder(now=NOW)
    builder.add_message(MIXED_ENVELOPE, Source("kafka", "t", 2, 7))
    readings = builder.readings_table().to_pylist()
    assert [r["seq"] for r in readings] == MIXED_GOOD_SEQS
    assert {(r["device_id"], r["tenant"], r["site"]) for r in readings} == {
        ("dev-env", "tenant-02", "site-002")
    }
    rejected = builder.rejected_table().to_pylist()
    assert [(r["reason"], r["item_index"]) for r in rejected] == MIXED_REJECTS
    assert all(r["device_id"] == "dev-env" for r in rejected)


def test_good_reading_columns_are_exact():
    builder = ReadingsBuilder(now=NOW)
    payload = (
        b'{"device_id":"d1","tenant":"t1","site":"s1","seq":9,"ts":"2026-11-20T12:00:00.5+01:00",'
        b'"metric":"temperature","value":3,"unit":"C","attrs":{"fw":"1.2"},"unknown":true}'
    )
    builder.add_message(payload, Source("kafka", "readings", 3, 100))
    (row,) = builder.readings_table().to_pylist()
    assert row["ts"] == datetime(2026, 11, 20, 11, 0, 0, 500000, tzinfo=UTC)
    assert row["value"] == 3.0
    assert row["attrs"] == [("fw", "1.2")]
    assert row["ingested_at"] == NOW
    assert (row["source"], row["source_partition"], row["source_offset"]) == ("kafka", 3, 100)
    assert builder.max_event_us == int(row["ts"].timestamp() * 1_000_000)


def test_replayed_messages_keep_rejects_but_not_readings():
    builder = ReadingsBuilder(now=NOW)
    builder.keep_readings = False
    builder.add_message(good_message(1), Source("kafka", "t", 0, 0))
    builder.add_message(BAD_RECORDS[5].payload, Source("kafka", "t", 0, 1))
    assert (builder.rows, builder.rejected) == (0, 1)
