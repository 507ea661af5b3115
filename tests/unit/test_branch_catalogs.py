from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from lakehouse.branch_catalogs import reconcile_branch, reconcile_made_at
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
