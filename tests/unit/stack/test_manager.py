from __future__ import annotations

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import load_or_create
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
