"""Reconciliation results: seq ranges, totals, the verdict and the JSON document."""

from __future__ import annotations

from datetime import UTC, datetime

from lakehouse.reconcile.model import Discrepancy, Report, Window, format_ranges, seq_ranges


def test_seqs_become_merged_inclusive_ranges():
    assert seq_ranges([9, 1, 2, 3, 7, 10, 2]) == [(1, 3), (7, 7), (9, 10)]
    assert seq_ranges([]) == []


def test_long_range_lists_are_cut_with_a_count():
    ranges = [(n * 10, n * 10) for n in range(10)]
    assert format_ranges(ranges, limit=3) == "0, 10, 20 (+7 more)"
    assert format_ranges([(1, 3), (5, 5)]) == "1-3, 5"


def test_totals_add_every_stage_and_reason():
    report = Report(Window())
    a, b = report.device("a"), report.device("b")
    a.bronze, a.silver, a.quarantined = 10, 8, {"duplicate": 1, "ts_in_future": 1}
    b.bronze, b.silver, b.rejected, b.quarantined = 5, 4, {"wrong_type": 1}, {"duplicate": 0}
    total = report.totals()
    assert (total.bronze, total.silver) == (15, 12)
    assert total.quarantined == {"duplicate": 1, "ts_in_future": 1}
    assert total.rejected == {"wrong_type": 1}
    assert total.duplicates_removed == 1


def test_the_verdict_names_what_is_not_accounted_for():
    report = Report(Window(since=datetime(2026, 12, 1, tzinfo=UTC)))
    report.device("a").bronze = 3
    assert report.accounted
    assert report.verdict() == (
        "every reading accounted for exactly once: 3 in bronze across 1 device(s)"
    )
    finding = Discrepancy("lost_before_bronze", "a", 2, ((4, 5),), "batch b1 at r[0]@7")
    report.discrepancies.append(finding)
    assert not report.accounted
    assert report.verdict() == "NOT accounted for: 2 reading(s) in 1 finding(s)"
    assert finding.describe() == (
        "a: 2 reading(s) seq 4-5 accepted by the gateway and consumed from Kafka, "
        "not in bronze (batch b1 at r[0]@7)"
    )
    document = report.as_json()
    assert document["accounted"] is False
    assert document["window"]["since"] == "2026-12-01T00:00:00+00:00"
    assert document["discrepancies"] == [{
        "kind": "lost_before_bronze", "device_id": "a", "readings": 2,
        "seq_ranges": [[4, 5]], "detail": "batch b1 at r[0]@7",
    }]  # fmt: skip
