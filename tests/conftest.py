"""Shared fixtures: the real stack is brought up once per session and reused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.stack.manager import Stack


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    """The running stack; started here if it was not, and then stopped at the end."""
    stack = Stack(stack_settings, Console(stderr=True))
    running_before = {s.name for s in stack.status() if s.pid is not None}
    stack.up()
    yield stack
    for service in reversed(stack.services()):
        if service.name not in running_before:
            service.stop()


@pytest.fixture(scope="session")
def credentials(stack: Stack, stack_settings: Settings) -> Credentials:
    return load(stack_settings)


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps table, topic and branch names of one test apart."""
    return uuid.uuid4().hex[:10]
