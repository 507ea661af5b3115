"""The vectorised decoder agrees with the reference decoder on every input."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
import pytest

from ingest.readings import Limits, ReadingsBuilder, Source
from ingest.vector_decode import decode_messages, decode_vectorised
from lakehouse.simulate import Fleet, SimulationConfig, deliveries
from tests.bad_records import BAD_RECORDS, MIXED_ENVELOPE, good_message

NOW = datetime(2026, 11, 21, tzinfo=UTC)
SORT = [("source_offset", "ascending"), ("seq", "ascending")]


def reference(values, keep=None):
    builder = ReadingsBuilder(now=NOW)
    for offset, value in enumerate(values):
        builder.keep_readings = True if keep is None else keep[offset]
        builder.add_message(value, Source("kafka", "t", offset % 3, offset))
    return builder


def vectorised(values, keep=None):
    keep = keep or [True] * len(values)
    return decode_messages(
        values, [o % 3 for o in range(len(values))], list(range(len(values))), keep,
        topic="t", limits=Limits(), now=NOW,
    )  # fmt: skip


def assert_same(values, keep=None):
    ref, vec = reference(values, keep), vectorised(values, keep)
    assert (
        vec.readings_table().sort_by(SORT).to_pylist()
        == ref.readings_table().sort_by(SORT).to_pylist()
    )
    key = [("source_offset", "ascending"), ("item_index", "ascending")]
    assert (
        vec.rejected_table().sort_by(key).to_pylist()
        == ref.rejected_table().sort_by(key).to_pylist()
    )
    assert vec.max_event_us == ref.max_event_us


def simulated(singles: bool, seed: int = 1) -> list[bytes]:
    fleet = Fleet.generate(devices=20, seed=seed)
    config = SimulationConfig(seed=seed, batch_size=8)
    out: list[bytes] = []
    for delivery in deliveries(fleet, config, 30):
        out.extend(delivery.singles() if singles else [delivery.envelope()])
    return out


@pytest.mark.parametrize("singles", [True, False])
def test_good_traffic_is_decoded_entirely_by_the_vectorised_path(singles):
    values = simulated(singles)
    n = len(values)
    result = decode_vectorised(
        values, [0] * n, list(range(n)), [True] * n, topic="t", limits=Limits(), now=NOW
    )
    assert result.fallback == []
    assert sum(t.num_rows for t in result.readings) == reference(values).rows
    assert_same(values)


def test_bad_records_mixed_with_good_ones_match_the_reference():
    values: list[bytes | None] = []
    for seq, record in enumerate(BAD_RECORDS, start=1):
        values += [good_message(seq), record.payload, MIXED_ENVELOPE]
    assert_same(values)


def test_replay_mask_matches_the_reference():
    values = [*simulated(True)[:200], BAD_RECORDS[4].payload]
    keep = [i % 2 == 0 for i in range(len(values))]
    assert_same(values, keep)


def test_random_mutations_match_the_reference():
    rng = random.Random(42)
    base = [orjson.loads(v) for v in simulated(True, seed=3)[:400]]
    mutations = [
        ("seq", -1), ("seq", "1"), ("seq", 2.5), ("seq", None), ("value", "x"),
        ("value", None), ("value", 1), ("ts", "2026-11-20 10:00:00Z"), ("ts", "bad"),
        ("ts", "2026-11-20T10:00:00.1234567Z"), ("ts", "2026-11-20T10:00:00+0100"),
        ("ts", "2099-01-01T00:00:00Z"), ("ts", "1999-12-31T23:59:59Z"), ("metric", ""),
        ("metric", "m" * 200), ("unit", "u" * 33), ("unit", 5), ("site", ""),
        ("tenant", None), ("device_id", 7), ("attrs", {"a": "b"}), ("attrs", {"a": 1}),
        ("extra", [1, 2]),
    ]  # fmt: skip
    values: list[bytes | None] = []
    for obj in base:
        if rng.random() < 0.3:
            field, value = rng.choice(mutations)
            obj = {**obj, field: value}
            if value is None:
                del obj[field]
        values.append(orjson.dumps(obj))
    assert_same(values)
