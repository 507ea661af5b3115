from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

from lakehouse.stack import process


def test_stale_pid_file_of_dead_process_is_removed(tmp_path):
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text(json.dumps({"pid": 999_999_999, "create_time": 0}))
    assert process.running_pid(pid_file) is None
    assert not pid_file.exists()


def test_recycled_pid_is_not_mistaken_for_ours(tmp_path):
    pid_file = tmp_path / "svc.pid"
    # Our own pid, but with another start time: a pid reused by an unrelated process.
    pid_file.write_text(json.dumps({"pid": os.getpid(), "create_time": 12345.0}))
    assert process.running_pid(pid_file) is None
    assert not pid_file.exists()


def test_garbage_pid_file_is_removed(tmp_path):
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text("not json")
    assert process.running_pid(pid_file) is None
    assert not pid_file.exists()


def test_spawn_then_terminate_gracefully(tmp_path):
    pid_file, log_file = tmp_path / "run" / "s.pid", tmp_path / "logs" / "s.log"
    pid = process.spawn(
        ["/bin/sh", "-c", "echo hello; exec sleep 60"],
        pid_file=pid_file, log_file=log_file, cwd=tmp_path,
    )  # fmt: skip
    assert process.running_pid(pid_file) == pid
    deadline = time.monotonic() + 10
    while "hello" not in process.tail(log_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.terminate(pid_file, timeout=10) is True
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not pid_file.exists()
    assert "hello" in process.tail(log_file)
    assert process.terminate(pid_file, timeout=1) is False


def test_terminate_escalates_to_sigkill(tmp_path):
    pid_file = tmp_path / "s.pid"
    pid = process.spawn(
        ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
        pid_file=pid_file, log_file=tmp_path / "s.log", cwd=tmp_path,
    )  # fmt: skip
    assert process.terminate(pid_file, timeout=1) is True
    assert process.running_pid(pid_file) is None
    assert process.exited(pid) is not None


def test_tail_returns_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log, 3) == "line 97\nline 98\nline 99\n"
    assert process.tail(tmp_path / "missing.log") == ""


def test_kafka_cluster_ids_never_start_with_a_dash():
    from lakehouse.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_pid_record_survives_a_step_of_the_system_clock(tmp_path):
    import dataclasses
    import os

    from lakehouse.stack.process import PidRecord, running_pid

    record = PidRecord.of(os.getpid())
    # The wall-clock start time moves when the clock is stepped; the boot-relative one not.
    stepped = dataclasses.replace(record, create_time=record.create_time + 3600)
    stepped.write(tmp_path / "me.pid")
    assert running_pid(tmp_path / "me.pid") == os.getpid()
    recycled = dataclasses.replace(record, start_ticks=(record.start_ticks or 0) + 1)
    recycled.write(tmp_path / "other.pid")
    assert running_pid(tmp_path / "other.pid") is None
    assert not (tmp_path / "other.pid").exists()


def test_proportional_memory_counts_shared_pages_once():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pss, rss = process.tree_pss(os.getpid()), process.tree_rss(os.getpid())
        # The child shares the interpreter's pages with this process: counted once.
        assert 0 < pss < rss
    finally:
        child.kill()
        child.wait()
