from __future__ import annotations

import threading
import time

from lakehouse.config import Settings
from lakehouse.transform.trigger import BronzeCommits


class Bronze(BronzeCommits):
    """Bronze's metadata location on main, as Nessie would answer it poll after poll."""

    def __init__(self, answers: list[str | None]) -> None:
        super().__init__(Settings(), None)  # type: ignore[arg-type]
        self.answers = answers
        self.asked = 0

    def location(self) -> str | None:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer


def test_a_new_bronze_commit_ends_the_wait_at_the_next_poll():
    bronze = Bronze(["m1", "m1", "m1", "m2"])
    bronze.mark()
    bronze.wait(threading.Event(), longest=60, poll=0.01)
    assert bronze.asked == 4  # the mark, two polls that saw m1, the one that saw m2


def test_without_a_commit_the_wait_lasts_the_interval():
    bronze = Bronze(["m1"])
    bronze.mark()
    bronze.wait(threading.Event(), longest=0.2, poll=0.01)
    assert bronze.asked > 5


def test_an_unreadable_location_is_no_commit():
    """Nessie away (None): the loop falls back to its interval, it does not spin."""
    bronze = Bronze(["m1", None])
    bronze.mark()
    assert not bronze.moved()
    bronze = Bronze([None, None, "m1"])
    bronze.mark()
    assert not bronze.moved()
    assert bronze.moved()  # the table appeared: the first commit of bronze


def test_stop_ends_the_wait_at_once():
    bronze, stop = Bronze(["m1"]), threading.Event()
    stop.set()
    bronze.mark()
    bronze.wait(stop, longest=60, poll=10)
    assert bronze.asked == 1


def test_a_run_never_follows_the_last_at_once():
    """Bronze moved while the run went: the next run still waits one poll, so the lock
    is free long enough for maintenance waiting to compact."""
    bronze = Bronze(["m1", "m2"])
    bronze.mark()
    started = time.monotonic()
    bronze.wait(threading.Event(), longest=60, poll=0.2)
    assert time.monotonic() - started >= 0.2
    assert bronze.asked == 2
