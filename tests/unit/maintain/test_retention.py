from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lakehouse.branch_catalogs import reconcile_branch
from lakehouse.maintain.retention import expire_reconcile_branches
from lakehouse.nessie import Reference

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


class FakeNessie:
    """The two calls retention makes, on a list of branch names."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def references(self) -> list[Reference]:
        return [Reference(name, "0" * 16) for name in self.names]

    def delete_branch(self, name: str) -> None:
        self.names.remove(name)


def test_only_reconcile_branches_older_than_the_limit_are_deleted():
    old = reconcile_branch(NOW - timedelta(hours=7))
    fresh = reconcile_branch(NOW - timedelta(minutes=5))
    nessie = FakeNessie(["main", "transform_20261101_000000_abcdef", old, fresh])
    deleted = expire_reconcile_branches(nessie, older_than=NOW - timedelta(hours=6))  # type: ignore[arg-type]
    assert deleted == [old]
    assert nessie.names == ["main", "transform_20261101_000000_abcdef", fresh]
