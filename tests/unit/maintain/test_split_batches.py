from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from lakehouse.maintain.rewrite import split_batches


@dataclass(frozen=True)
class File:
    file_size_in_bytes: int
    record_count: int


@dataclass(frozen=True)
class Task:
    file: File


def tasks(*sizes: tuple[int, int]) -> list[Task]:
    return [Task(File(size, rows)) for size, rows in sizes]


def test_a_batch_ends_at_the_row_bound_even_when_its_bytes_are_far_below_theirs():
    given_ = tasks((10, 300), (10, 300), (10, 300), (10, 300), (10, 300))
    batches = split_batches(given_, max_bytes=1_000, max_rows=700)
    assert [len(b) for b in batches] == [2, 2]  # the fifth file would be alone: left out


def test_a_batch_ends_at_the_byte_bound():
    given_ = tasks((400, 1), (400, 1), (400, 1))
    assert [len(b) for b in split_batches(given_, max_bytes=1_000, max_rows=700)] == [2]


def test_a_file_above_the_bounds_is_never_rewritten_alone():
    assert split_batches(tasks((5_000, 5_000)), max_bytes=1_000, max_rows=700) == []


@given(
    st.lists(st.tuples(st.integers(1, 500), st.integers(1, 500)), max_size=40),
    st.integers(1, 2_000),
    st.integers(1, 2_000),
)
def test_every_batch_keeps_order_holds_two_files_or_more_and_stays_within_bounds(
    sizes, max_bytes, max_rows
):
    given_ = tasks(*sizes)
    batches = split_batches(given_, max_bytes=max_bytes, max_rows=max_rows)
    flat = [t for b in batches for t in b]
    positions = [i for i, t in enumerate(given_) if any(t is f for f in flat)]
    assert [given_[i] for i in positions] == flat and positions == sorted(positions)
    for batch in batches:
        assert len(batch) >= 2
        assert sum(t.file.file_size_in_bytes for t in batch) <= max_bytes
        assert sum(t.file.record_count for t in batch) <= max_rows
