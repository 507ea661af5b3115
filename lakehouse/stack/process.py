"""Detached processes with pid files that survive the CLI and detect stale pids."""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

# Children started by this interpreter, kept so their exit status can be collected.
_children: dict[int, subprocess.Popen[bytes]] = {}
# Services are meant to outlive the command that started them.
warnings.filterwarnings("ignore", r"subprocess \d+ is still running", ResourceWarning)


@atexit.register
def _reap_children() -> None:
    """Collect children that exited (stopped by another CLI run, say) before we exit."""
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            del _children[pid]


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: enough to tell our process from a recycled pid."""

    pid: int
    create_time: float
    # Start in clock ticks after boot (Linux): unlike create_time, which is derived from
    # the wall clock, a step of the system clock does not change it.
    start_ticks: int | None = None

    @classmethod
    def of(cls, pid: int) -> PidRecord:
        return cls(pid=pid, create_time=psutil.Process(pid).create_time(),
                   start_ticks=start_ticks(pid))  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            data = json.loads(path.read_text())
            ticks = data.get("start_ticks")
            return cls(
                pid=int(data["pid"]),
                create_time=float(data["create_time"]),
                start_ticks=None if ticks is None else int(ticks),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(
            {"pid": self.pid, "create_time": self.create_time, "start_ticks": self.start_ticks}
        ))  # fmt: skip

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it is gone or the pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if self.start_ticks is not None:
                if start_ticks(self.pid) != self.start_ticks:
                    return None
            elif abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (None where /proc has no such field)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; field 3 follows the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None


def running_pid(pid_file: Path) -> int | None:
    """Pid of the live process recorded in `pid_file`; removes the file if stale."""
    record = PidRecord.read(pid_file)
    if record is None:
        if pid_file.exists():
            pid_file.unlink(missing_ok=True)
        return None
    if record.process() is None:
        log.info("removing stale pid file %s (pid %d)", pid_file, record.pid)
        pid_file.unlink(missing_ok=True)
        return None
    return record.pid


def spawn(
    command: list[str],
    *,
    pid_file: Path,
    log_file: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> int:
    """Start `command` in its own session, output appended to `log_file`.

    The process gets `env` and nothing else (callers start from `base_env`).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(env or {})
    with log_file.open("ab") as out:
        out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    _children[proc.pid] = proc
    PidRecord.of(proc.pid).write(pid_file)
    return proc.pid


# Passed on from the parent's environment when set: locale, time zone, search path.
_BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ")


def base_env(home: Path) -> dict[str, str]:
    """The environment every child gets: a few basics, HOME set to its state directory."""
    env = {key: os.environ[key] for key in _BASE_VARIABLES if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    return env


def started_at(pid: int) -> float | None:
    """Unix time a process started, None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def uptime(pid: int) -> float | None:
    """Seconds since a process started, None if it is gone."""
    start = started_at(pid)
    return None if start is None else max(time.time() - start, 0.0)


def exited(pid: int) -> int | None:
    """Exit code of a process we spawned, None while it runs.

    For a process started by an earlier CLI run the code is unknown: -1 once it is gone.
    """
    child = _children.get(pid)
    if child is not None:
        code = child.poll()
        if code is not None:
            del _children[pid]
        return code
    return None if psutil.pid_exists(pid) and _not_zombie(pid) else -1


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate(pid_file: Path, timeout: float) -> bool:
    """SIGTERM the recorded process group, SIGKILL after `timeout`. True if one was running."""
    pid = running_pid(pid_file)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid) is not None or not _not_zombie(pid):
            break
        time.sleep(0.2)
    else:
        log.warning("pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, timeout)
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)
    pid_file.unlink(missing_ok=True)
    return True


def signal_process(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to one process (not its group); nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str | None:
    """A readable description of the process listening on `port`, if it can be found."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another process"
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({proc.name()})"
                return f"pid {conn.pid}"
    return None


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file, or an empty string if it does not exist."""
    try:
        with path.open("r", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return ""


def _tree(pid: int, *, children: bool = True) -> list[psutil.Process]:
    """A process and (unless told not to) its children; empty once it is gone."""
    try:
        proc = psutil.Process(pid)
        return [proc, *(proc.children(recursive=True) if children else ())]
    except psutil.Error:
        return []


def tree_pss(pid: int) -> int:
    """Proportional resident memory in bytes of a process and its children: each shared
    page is divided among the processes that map it, so PostgreSQL's shared buffers,
    resident in every backend, count once in the sum."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += member.memory_full_info().pss
    return total


def tree_rss(pid: int, *, children: bool = True) -> int:
    """Resident memory in bytes of a process and (unless told not to) its children."""
    total = 0
    for member in _tree(pid, children=children):
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total
