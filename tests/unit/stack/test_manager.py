from __future__ import annotations

import threading
import time

import pytest
from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import load_or_create
from lakehouse.errors import FetchError
from lakehouse.stack.manager import SERVER_NAMES, Stack


def test_status_of_a_stack_never_started(tmp_path):
    stack = Stack(Settings(home=tmp_path / "home"), Console(quiet=True))
    statuses = stack.status()
    assert [s.name for s in statuses] == [*SERVER_NAMES, "audit", "gateway", "consumer-1"]
    assert all(s.pid is None and not s.healthy for s in statuses)
    assert not (tmp_path / "home" / "credentials.json").exists()


def test_down_purge_deletes_all_state(tmp_path):
    settings = Settings(home=tmp_path / "home")
    load_or_create(settings)
    (settings.home / "minio" / "data").mkdir(parents=True)
    stack = Stack(settings, Console(quiet=True))
    assert stack.down(purge=True) == []
    assert not settings.home.exists()


class _Step:
    """A service's obtain(): waits at a barrier every step must reach together."""

    def __init__(self, barrier: threading.Barrier, failure: Exception | None = None) -> None:
        self.barrier = barrier
        self.failure = failure
        self.finished = False

    def obtain(self) -> None:
        self.barrier.wait(timeout=10)  # broken unless every step runs at once
        if self.failure is not None:
            raise self.failure
        time.sleep(0.2)
        self.finished = True


def test_servers_are_obtained_at_once_and_a_failure_waits_for_the_others(tmp_path):
    stack = Stack(Settings(home=tmp_path / "home"), Console(quiet=True))
    barrier = threading.Barrier(3)
    build, failing, download = (
        _Step(barrier),
        _Step(barrier, FetchError("downloading Kafka 4.1.1 failed (exit 1)")),
        _Step(barrier),
    )
    with pytest.raises(FetchError, match=r"downloading Kafka 4\.1\.1 failed"):
        stack._obtain([build, failing, download])  # type: ignore[list-item]
    assert build.finished and download.finished
