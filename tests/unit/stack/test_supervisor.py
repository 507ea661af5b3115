"""The supervisor with real (tiny) processes: restarts, crash loops, health, stop order."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from lakehouse.config import Settings, SupervisorSettings
from lakehouse.stack.logrotate import rotate_if_large
from lakehouse.stack.service import Service, StackContext
from lakehouse.stack.supervisor import Supervisor, hold_file

# Appends its name to a file when it is told to stop, then exits.
_SLEEPER = """
import signal, sys, time
name, record = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(record, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(name, "started", flush=True)
while True:
    time.sleep(0.1)
"""


def fake_service(name: str, kind: str, command: list[str], healthy: Path | None = None):
    class Fake(Service):
        def __init__(self, ctx: StackContext) -> None:
            super().__init__(ctx)

        @property
        def ports(self) -> list[int]:
            return []

        @property
        def url(self) -> str:
            return ""

        @property
        def start_timeout(self) -> float:
            return 10.0

        def obtain(self) -> None:
            pass

        def configure(self) -> None:
            self.state_dir.mkdir(parents=True, exist_ok=True)

        def command(self) -> list[str]:
            return command

        def ready(self) -> bool:
            return healthy is None or healthy.exists()

        def run_as(self) -> str | None:
            return None

    Fake.name = name  # type: ignore[misc]
    Fake.kind = kind  # type: ignore[assignment,misc]
    return Fake


def _free_port() -> int:
    # Not the stack's own port: a stack may be running on this machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def make_supervisor(tmp_path):
    running: list[tuple[Supervisor, threading.Thread]] = []

    def make(*service_types, **policy) -> Supervisor:
        settings = Settings(
            home=tmp_path / "home",
            cache_dir=tmp_path / "cache",
            stop_timeout=5,
            supervisor=SupervisorSettings(**{
                "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2,
                "health_interval_seconds": 0.2, "metrics_port": _free_port(), **policy,
            }),
        )  # fmt: skip
        ctx = StackContext(settings, None, None)  # type: ignore[arg-type]
        supervisor = Supervisor(settings, [t(ctx) for t in service_types])
        thread = threading.Thread(target=supervisor.run, daemon=True)
        thread.start()
        running.append((supervisor, thread))
        return supervisor

    yield make
    for supervisor, thread in running:
        supervisor.stopping.set()
        thread.join(30)


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def sleeper(name: str, record: Path, kind: str = "service", healthy: Path | None = None):
    return fake_service(name, kind, [sys.executable, "-c", _SLEEPER, name, str(record)], healthy)


def test_a_broken_service_is_restarted_at_most_max_restarts_times_then_failed(
    make_supervisor, tmp_path
):
    broken = fake_service(
        "broken", "service",
        [sys.executable, "-c", "import sys; print('invalid setting: port=-1'); sys.exit(3)"],
        healthy=tmp_path / "never",
    )  # fmt: skip
    supervisor = make_supervisor(broken, max_restarts=2)
    state = supervisor.state.services[0]
    wait_until(lambda: state.state == "failed")
    assert state.failures == 3
    assert state.restarts == 0
    assert state.last_exit is not None
    assert state.last_exit.startswith("exited with code 3 during start")
    assert state.last_exit.endswith("gave up after 3 failures in a row")
    assert state.last_error is not None and "invalid setting: port=-1" in state.last_error
    time.sleep(0.5)
    assert state.failures == 3, "a failed service is not started again"


def test_an_exited_service_is_restarted_with_its_restart_counted(make_supervisor, tmp_path):
    supervisor = make_supervisor(sleeper("worker", tmp_path / "stops"))
    state = supervisor.state.services[0]
    wait_until(lambda: state.state == "running")
    first = state.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: state.state == "running" and state.pid not in (None, first))
    assert state.restarts == 1
    assert state.last_exit == "killed by SIGKILL"


def test_a_service_failing_its_health_checks_is_killed_and_restarted(make_supervisor, tmp_path):
    healthy = tmp_path / "healthy"
    healthy.touch()
    supervisor = make_supervisor(
        sleeper("hung", tmp_path / "stops", healthy=healthy),
        health_failures=2,
        backoff_initial_seconds=3.0,
    )
    state = supervisor.state.services[0]
    wait_until(lambda: state.state == "running")
    first = state.pid
    healthy.unlink()  # the process lives on but stops answering
    wait_until(lambda: state.state == "backoff")
    assert state.last_exit == "no answer to health checks for 0.4 s; killed"
    assert state.pid is None and state.healthy is False
    healthy.touch()
    wait_until(lambda: state.state == "running" and state.pid != first)
    assert state.restarts == 1


def test_hold_stops_a_service_and_keeps_it_stopped_until_released(make_supervisor, tmp_path):
    supervisor = make_supervisor(sleeper("held", tmp_path / "stops"))
    state = supervisor.state.services[0]
    wait_until(lambda: state.state == "running")
    hold = hold_file(supervisor.settings, "held")
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()
    wait_until(lambda: state.state == "held")
    assert (tmp_path / "stops").read_text() == "held\n"
    time.sleep(0.5)
    assert state.state == "held" and state.pid is None
    hold.unlink()
    wait_until(lambda: state.state == "running")
    assert state.restarts == 0


def test_stop_goes_in_reverse_order_services_before_servers(make_supervisor, tmp_path):
    record = tmp_path / "stops"
    supervisor = make_supervisor(
        sleeper("db", record, kind="server"),
        sleeper("catalog", record, kind="server"),
        sleeper("consumer", record),
        sleeper("gateway", record),
    )
    wait_until(lambda: all(s.state == "running" for s in supervisor.state.services))
    supervisor.stopping.set()
    wait_until(lambda: supervisor.state.phase == "stopped", timeout=30)
    assert record.read_text().split() == ["gateway", "consumer", "catalog", "db"]
    assert all(s.state == "stopped" and s.pid is None for s in supervisor.state.services)


def test_logs_rotate_by_size_keeping_a_bounded_number(tmp_path):
    log = tmp_path / "svc.log"
    for round_ in range(5):
        log.write_text(f"round {round_}\n" * 200)
        assert rotate_if_large(log, max_bytes=1000, backups=2)
        assert log.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svc.log", "svc.log.1", "svc.log.2"]
    assert (tmp_path / "svc.log.1").read_text().startswith("round 4")
    assert (tmp_path / "svc.log.2").read_text().startswith("round 3")
    assert not rotate_if_large(log, max_bytes=1000, backups=2)


def test_a_service_left_running_by_an_earlier_supervisor_is_adopted(make_supervisor, tmp_path):
    worker = sleeper("orphan", tmp_path / "stops")
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache")
    orphan = worker(StackContext(settings, None, None))  # type: ignore[arg-type]
    orphan.state_dir.mkdir(parents=True)
    pid = orphan.spawn()
    supervisor = make_supervisor(worker)
    state = supervisor.state.services[0]
    wait_until(lambda: state.state == "running")
    assert state.pid == pid
    assert state.restarts == 0
