from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from lakehouse.branch_catalogs import drop_orphan_catalogs, reconcile_branch, reconcile_made_at
from lakehouse.names import checked


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)
    )
)
def test_a_reconcile_branch_tells_when_it_was_made(now):
    name = reconcile_branch(now)
    assert checked("catalog", name) == checked("branch", name) == name
    assert reconcile_made_at(name) == now.replace(microsecond=0)


def test_other_names_are_no_reconcile_branches():
    for name in ("main", "transform_20261207_120000_abcdef", "reconcile_x", "reconcile_2026_ab"):
        assert reconcile_made_at(name) is None


def test_two_branches_of_one_second_differ():
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert len({reconcile_branch(now) for _ in range(20)}) > 1
    assert reconcile_made_at(reconcile_branch(now + timedelta(hours=1))) == now + timedelta(hours=1)


class FakeCursor:
    """Trino's catalogs, where another process makes `late` (branch first, then catalog)
    while the branches are being listed."""

    def __init__(self, catalogs: list[str]) -> None:
        self.catalogs = catalogs
        self.dropped: list[str] = []
        self.rows: list[tuple[str]] = []

    def execute(self, sql: str) -> None:
        if sql == "show catalogs":
            self.rows = [(name,) for name in self.catalogs]
        else:
            self.dropped.append(sql)
            self.rows = []

    def fetchall(self) -> list[tuple[str]]:
        return self.rows


def test_only_catalogs_whose_branch_is_gone_are_dropped_even_while_one_is_being_made():
    cursor = FakeCursor(["lake", "reconcile_old", "reconcile_live"])
    branches = {"main", "reconcile_live"}

    def listed() -> set[str]:
        # A reconcile starting now: its branch, then its catalog, after `show catalogs`.
        branches.add("reconcile_late")
        cursor.catalogs.append("reconcile_late")
        return set(branches)

    drop_orphan_catalogs(cursor, "reconcile_", listed)
    assert cursor.dropped == ['drop catalog if exists "reconcile_old"']


def test_no_branch_listing_without_a_catalog_of_the_prefix():
    def never() -> set[str]:
        raise AssertionError("listed branches for nothing")

    cursor = FakeCursor(["lake", "pg"])
    drop_orphan_catalogs(cursor, "reconcile_", never)
    assert cursor.dropped == []
