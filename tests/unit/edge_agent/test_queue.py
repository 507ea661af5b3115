from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from lakehouse_edge import queue as queue_module
from lakehouse_edge.queue import DurableQueue, QueueFull


def test_seq_survives_reopen_and_inflight_returns_with_its_batch_id(tmp_path):
    path = str(tmp_path / "q.db")
    queue = DurableQueue(path)
    assert [queue.put({"metric": "m", "value": i}) for i in range(5)] == [1, 2, 3, 4, 5]
    batch = queue.next_batch(3)
    assert batch is not None and batch.seqs == [1, 2, 3]
    queue.close()  # power loss while the batch is in flight

    reopened = DurableQueue(path)
    assert reopened.counts()["inflight"] == 0 and reopened.counts()["ready"] == 5
    again = reopened.next_batch(100)
    assert again is not None
    assert (again.batch_id, again.seqs) == (batch.batch_id, [1, 2, 3])  # resent as-is
    reopened.ack(again)
    rest = reopened.next_batch(100)
    assert rest is not None and rest.seqs == [4, 5] and rest.batch_id != batch.batch_id
    assert reopened.put({"metric": "m", "value": 9}) == 6


def test_a_reader_beside_the_agent_leaves_its_inflight_batch_alone(tmp_path):
    """`status` opens the queue while the agent uploads: the batch stays inflight, so
    the agent does not send its readings twice."""
    path = str(tmp_path / "q.db")
    agent = DurableQueue(path)
    for i in range(3):
        agent.put({"metric": "m", "value": i})
    batch = agent.next_batch(2)
    assert batch is not None
    reader = DurableQueue(path, recover=False)
    assert (reader.counts()["inflight"], reader.counts()["ready"]) == (2, 1)
    again = agent.next_batch(10)
    assert again is not None and again.seqs == [3]
    reader.close()
    agent.close()


OPENER = """
import sys
from lakehouse_edge.queue import DurableQueue
DurableQueue(sys.argv[1], recover=sys.argv[2] == "run").close()
"""


def test_processes_opening_a_new_queue_at_once_all_open_it(tmp_path):
    """The agent and `status` calls start together on a fresh state directory: each
    creates the queue or finds it made, none fails half way through its schema."""
    for attempt in range(5):
        path = str(tmp_path / f"q{attempt}.db")
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, path, role], stderr=subprocess.PIPE, text=True
            )
            for role in ("run", "status", "status", "status", "status", "status")
        ]
        outputs = [(proc.communicate(timeout=60)[1], proc.returncode) for proc in openers]
        failures = [(err, code) for err, code in outputs if code != 0]
        assert failures == []
        queue = DurableQueue(path)
        assert queue.put({"metric": "m", "value": 1.0}) == 1
        queue.close()


def test_release_keeps_the_batch_and_fail_parks_it(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"))
    for i in range(4):
        queue.put({"metric": "m", "value": i})
    first = queue.next_batch(2)
    queue.release(first)
    assert queue.next_batch(10).batch_id == first.batch_id
    queue.fail(first, "idempotency-conflict")
    assert queue.counts()["failed"] == 2
    assert queue.reasons()["failed"] == {"idempotency-conflict": 2}
    assert queue.next_batch(10).seqs == [3, 4]


def test_requeue_sends_failed_readings_again_under_a_new_batch(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"))
    queue.put_many([{"metric": "m", "value": i} for i in range(3)])
    first = queue.next_batch(10)
    queue.fail(first, "http_403")
    assert queue.next_batch(10) is None
    assert queue.requeue() == 3
    again = queue.next_batch(10)
    assert again.seqs == [1, 2, 3] and again.batch_id != first.batch_id
    assert queue.counts()["failed"] == 0 and queue.reasons()["failed"] == {}


def test_refuse_parks_the_failed_and_returns_the_rest_to_be_sent_in_others(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"))
    queue.put_many([{"metric": "m", "value": i} for i in range(4)])
    batch = queue.next_batch(10)
    queue.refuse(batch, {2: "non_finite_value"})
    again = queue.next_batch(10)
    assert again.seqs == [1, 3, 4] and again.batch_id != batch.batch_id
    assert queue.reasons()["failed"] == {"non_finite_value": 1}


def test_counters_and_source_positions_commit_with_the_readings(tmp_path):
    path = str(tmp_path / "q.db")
    queue = DurableQueue(path, max_rows=2, policy="pause")
    queue.put_many([{"metric": "m", "value": 1}], counts={"invalid:non_finite_value": 2,
                   "clock_skipped": 1}, source_state={"file:/x": "7"})  # fmt: skip
    with pytest.raises(QueueFull):
        queue.put_many([{"metric": "m", "value": i} for i in range(2)],
                       counts={"clock_skipped": 5}, source_state={"file:/x": "9"})  # fmt: skip
    queue.close()
    reopened = DurableQueue(path)
    counts = reopened.counts()
    assert (counts["invalid"], counts["clock_skipped"], counts["ready"]) == (2, 1, 1)
    assert reopened.reasons()["invalid"] == {"non_finite_value": 2}
    assert reopened.source_state("file:/x") == "7"
    assert reopened.source_state("file:/y") is None


def test_a_queue_of_an_older_agent_opens_with_its_readings(tmp_path):
    path = str(tmp_path / "q.db")
    old = sqlite3.connect(path)
    old.executescript(
        "create table readings (seq integer primary key, payload text not null, "
        "state text not null, batch_id text, created_at real not null);"
        "create table meta (key text primary key, value integer not null);"
        "insert into meta values ('next_seq', 3), ('dropped', 4);"
        """insert into readings values (1, '{"seq":1}', 'failed', 'b', 0), """
        """(2, '{"seq":2}', 'ready', null, 0);"""
    )
    old.commit()
    old.close()
    queue = DurableQueue(path)
    counts = queue.counts()
    assert (counts["failed"], counts["ready"], counts["dropped"], counts["next_seq"]) == (
        1, 1, 4, 3,
    )  # fmt: skip
    assert queue.reasons()["failed"] == {"unknown": 1}
    assert queue.anchored  # its seqs are already the device's


def test_a_fresh_queue_numbers_on_from_the_gateways_highest_seq(tmp_path):
    """A re-flashed device: the queue starts at 1, then follows what the gateway has."""
    path = str(tmp_path / "q.db")
    queue = DurableQueue(path)
    assert not queue.anchored
    assert [queue.put({"metric": "m", "value": i}) for i in range(3)] == [1, 2, 3]
    assert queue.anchor(2) == 2  # seq 3 is taken before the shift: renumbered in two steps
    assert queue.anchored and queue.anchor(100) == 0  # once only
    batch = queue.next_batch(10)
    assert batch is not None and batch.seqs == [3, 4, 5]
    assert [r["seq"] for r in batch.readings] == [3, 4, 5]
    assert [r["value"] for r in batch.readings] == [0, 1, 2]
    assert queue.put({"metric": "m", "value": 3}) == 6
    queue.close()
    assert DurableQueue(path).anchored


def test_a_device_the_gateway_never_heard_of_keeps_its_numbers(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"))
    queue.put({"metric": "m", "value": 1})
    assert queue.anchor(None) == 0
    batch = queue.next_batch(10)
    assert queue.anchored and batch is not None and batch.seqs == [1]


def test_bounded_queue_drops_oldest_and_counts(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"), max_rows=3, policy="drop_oldest")
    for i in range(5):
        queue.put({"metric": "m", "value": i})
    assert queue.counts()["dropped"] == 2
    assert queue.next_batch(10).seqs == [3, 4, 5]


def test_bounded_queue_can_pause_instead(tmp_path):
    queue = DurableQueue(str(tmp_path / "q.db"), max_rows=2, policy="pause")
    queue.put({"metric": "m", "value": 1})
    queue.put({"metric": "m", "value": 2})
    with pytest.raises(QueueFull):
        queue.put({"metric": "m", "value": 3})
    assert queue.counts()["next_seq"] == 3


WRITER = """
import sys
from lakehouse_edge.queue import DurableQueue
queue = DurableQueue(sys.argv[1])
while True:
    seq = queue.put({"metric": "m", "value": 1.0, "pad": "x" * 200})
    print(seq, flush=True)  # acknowledged to the source only after the commit
"""


def test_kill_9_during_writes_keeps_every_acknowledged_reading(tmp_path):
    path = str(tmp_path / "q.db")
    acknowledged: list[int] = []
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        time.sleep(0.7 + 0.3 * round_)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged += [int(line) for line in out.split()]
    assert len(acknowledged) > 100
    with sqlite3.connect(path) as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in db.execute("select seq from readings")}
    assert set(acknowledged) <= stored
    assert acknowledged == sorted(set(acknowledged))  # seq never reused across crashes
    queue = DurableQueue(path)
    assert queue.put({"metric": "m", "value": 2}) == max(stored) + 1


class _BusyAtFirst:
    """A connection whose first `busy` journal mode switches meet another process's."""

    def __init__(self, busy: int, message: str = "database is locked") -> None:
        self.busy, self.message, self.calls = busy, message, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.busy:
            raise sqlite3.OperationalError(self.message)


def test_a_journal_mode_switch_answered_locked_is_tried_again():
    """SQLite answers a switch to WAL "locked" at once, without its busy timeout, when
    another process switches the same new file (the agent and a `status` starting
    together): the queue tries again instead of dying."""
    db = _BusyAtFirst(busy=2)
    queue_module._switch_to_wal(db)  # type: ignore[arg-type]
    assert db.calls == 3


def test_a_journal_mode_switch_failing_otherwise_is_raised():
    db = _BusyAtFirst(busy=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        queue_module._switch_to_wal(db)  # type: ignore[arg-type]
    assert db.calls == 1
