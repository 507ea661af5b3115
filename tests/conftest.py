"""Shared fixtures: the real stack is brought up once per session and reused.

The tests' stack has a home and ports of its own, so a lakehouse started with
`make up` on the same machine is never touched. The variables are set before any
settings are built, and subprocesses of the tests inherit them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from lakehouse.config import Settings, isolate_process
from lakehouse.credentials import Credentials, load
from lakehouse.stack.manager import Stack

# Ports from 21000 up (PostgreSQL 21000, MinIO 21001, … Trino 21005; see
# lakehouse.config.ISOLATED_PORTS); a user's exported LAKEHOUSE_* variables are dropped
# first. TEST_FIRST_PORT moves the block, so two checkouts' suites can run side by side
# (each keeps its own home under its checkout).
TEST_ENVIRONMENT = isolate_process(
    Path(__file__).resolve().parent.parent / ".lakehouse-test",
    first_port=int(os.environ.get("TEST_FIRST_PORT", "21000")),
)


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    """The running stack; started here if it was not, and then stopped at the end."""
    stack = Stack(stack_settings, Console(stderr=True))
    supervised_before = stack.supervisor_pid() is not None
    stack.up()
    yield stack
    if not supervised_before:
        stack.down()


@pytest.fixture(scope="session")
def credentials(stack: Stack, stack_settings: Settings) -> Credentials:
    return load(stack_settings)


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps table, topic and branch names of one test apart."""
    return uuid.uuid4().hex[:10]
