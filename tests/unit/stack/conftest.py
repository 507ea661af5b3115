from __future__ import annotations

import pytest
from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import load_or_create
from lakehouse.stack.service import StackContext


@pytest.fixture
def ctx(tmp_path) -> StackContext:
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache")
    return StackContext(
        settings, load_or_create(settings), Console(file=None, force_terminal=False)
    )


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A directory that replaces PATH, for fake tools."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))

    def add(name: str, script: str):
        tool = directory / name
        tool.write_text(f"#!/bin/sh\n{script}\n")
        tool.chmod(0o755)
        return tool

    return add
