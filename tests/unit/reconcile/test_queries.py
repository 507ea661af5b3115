"""The SQL of a reconciliation: pinned snapshots, the window, checked names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lakehouse.errors import InvalidNameError
from lakehouse.reconcile.collect import _Queries
from lakehouse.reconcile.model import Window

TABLES = {
    "bronze": 'lake."bronze".readings for version as of 1',
    "rejected": None,
    "silver": None,
    "quarantine": None,
    "progress": None,
    "gold": None,
}


def test_a_window_filters_every_table_by_reception_time_and_names():
    window = Window(
        since=datetime(2026, 12, 1, tzinfo=UTC), until=datetime(2026, 12, 2, tzinfo=UTC),
        tenant="t-1", device="dev-1",
    )  # fmt: skip
    sql = _Queries(TABLES, window).counts()["bronze"]
    assert sql is not None
    assert "b.ingested_at >= from_iso8601_timestamp_nanos('2026-12-01T00:00:00+00:00')" in sql
    assert "b.ingested_at < from_iso8601_timestamp_nanos('2026-12-02T00:00:00+00:00')" in sql
    assert "b.device_id = 'dev-1'" in sql and "b.tenant = 't-1'" in sql
    assert "for version as of 1" in sql


def test_without_silver_every_bronze_row_waits_for_the_transform():
    queries = _Queries(TABLES, Window())
    counts = queries.counts()
    assert "false as processed" in (counts["bronze"] or "")
    assert counts["silver"] is None and counts["gold"] is None
    assert queries.reused_seqs() is None


def test_envelopes_are_matched_an_hour_beyond_the_window():
    window = Window(since=datetime(2026, 12, 1, tzinfo=UTC))
    sql = _Queries(TABLES, window).envelopes()
    assert "- interval '1' hour" in sql
    assert "bool_or(true and rows.ingested_at >= " in sql


def test_a_device_name_that_could_escape_a_literal_is_refused():
    with pytest.raises(InvalidNameError):
        _Queries(TABLES, Window(device="x' or '1'='1")).counts()
