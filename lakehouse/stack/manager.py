"""Bring the whole stack up in dependency order, report its status, and stop it."""

from __future__ import annotations

import fcntl
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import credentials_path, load, load_or_create
from lakehouse.errors import ConfigError, StackError
from lakehouse.stack.kafka import Kafka
from lakehouse.stack.minio import Minio
from lakehouse.stack.nessie import Nessie
from lakehouse.stack.postgres import Postgres
from lakehouse.stack.service import Service, ServiceStatus, StackContext
from lakehouse.stack.trino import Trino

log = logging.getLogger(__name__)

# Start order; each service only depends on the ones before it.
SERVICE_TYPES: tuple[type[Service], ...] = (Postgres, Minio, Nessie, Kafka, Trino)
SERVICE_NAMES = tuple(service.name for service in SERVICE_TYPES)


class Stack:
    """The native stack under one home directory."""

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=True)
        self._services: list[Service] | None = None
        # Seconds each service took to become ready in the last `up`.
        self.start_seconds: dict[str, float] = {}

    def _context(self, *, create_credentials: bool) -> StackContext:
        credentials = load_or_create(self.settings) if create_credentials else load(self.settings)
        return StackContext(self.settings, credentials, self.console)

    def services(self, *, create_credentials: bool = False) -> list[Service]:
        if self._services is None:
            ctx = self._context(create_credentials=create_credentials)
            self._services = [service_type(ctx) for service_type in SERVICE_TYPES]
        return self._services

    def service(self, name: str) -> Service:
        for service in self.services():
            if service.name == name:
                return service
        raise ConfigError(
            f"unknown service {name!r}", fix=f"use one of: {', '.join(SERVICE_NAMES)}"
        )

    @property
    def initialised(self) -> bool:
        return credentials_path(self.settings).exists()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_file = self.settings.home / "run" / "stack.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with lock_file.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StackError(
                    "another `lakehouse stack` command is changing this stack right now",
                    fix="wait for it to finish",
                ) from exc
            yield

    def up(self) -> list[ServiceStatus]:
        """Obtain, configure, start and bootstrap every service not already running."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            services = self.services(create_credentials=True)
            # Fail on a taken port before spending minutes on downloads and builds.
            for service in services:
                if service.pid() is None:
                    service.check_ports()
            for service in services:
                service.obtain()
            for service in services:
                self._bring_up(service)
        return self.status()

    def _bring_up(self, service: Service) -> None:
        started = time.monotonic()
        pid = service.pid()
        if pid is not None:
            service.wait_ready(pid)
            action = "already running"
        else:
            service.configure()
            pid = service.start()
            action = "started"
        service.bootstrap()
        elapsed = time.monotonic() - started
        self.start_seconds[service.name] = elapsed
        self.console.print(f"[green]✓[/] {service.name:<9} {action} (pid {pid}) in {elapsed:.1f} s")

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every running service (reverse order); `purge` also deletes all state."""
        stopped: list[str] = []
        if self.initialised:
            with self._lock():
                for service in reversed(self.services()):
                    if service.stop():
                        stopped.append(service.name)
                        self.console.print(f"[yellow]■[/] {service.name} stopped")
        if purge:
            _remove_tree(self.settings.home)
            self.console.print(f"deleted {self.settings.home}")
        return stopped

    def status(self) -> list[ServiceStatus]:
        if not self.initialised:
            return [
                ServiceStatus(name, None, port, "", False)
                for name, port in zip(SERVICE_NAMES, _first_ports(self.settings), strict=True)
            ]
        return [service.status() for service in self.services()]


def _first_ports(settings: Settings) -> list[int]:
    return [
        settings.postgres.port,
        settings.minio.port,
        settings.nessie.port,
        settings.kafka.port,
        settings.trino.port,
    ]


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
