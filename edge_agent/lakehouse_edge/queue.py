"""A durable store-and-forward queue in SQLite (WAL).

States: ready → inflight (part of a batch being uploaded) → acked; a reading the
gateway refuses for good becomes failed, with the gateway's reason, until
`lakehouse-edge requeue` makes it ready again. Opened by the agent (not by `status`),
inflight rows go back to ready but keep their batch id, so the same batch is resent
under the same idempotency key and the gateway answers with its original receipt
instead of accepting it twice.

`seq` is per device, strictly increasing and persisted in the same transaction as the
reading, so it survives reboots and power loss. A queue created afresh (a new install,
or a re-flashed SD card on a device that sent before) is not anchored yet: before its
first upload the agent asks the gateway for the highest seq it accepted from the device
and `anchor` renumbers what is queued to follow it, so nothing is taken for a duplicate.
The counters of what was never queued (invalid by reason, clock-skipped, dropped) and
each source's position (a file tail's inode and offset) are persisted the same way: a
restart neither rereads nor loses a line.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from lakehouse_edge.retry import RetryPolicy

SCHEMA = """
create table if not exists readings (
    seq integer primary key,
    payload text not null,
    state text not null check (state in ('ready', 'inflight', 'acked', 'failed')),
    batch_id text,
    created_at real not null
);
create index if not exists readings_state on readings (state, seq);
create table if not exists meta (key text primary key, value integer not null);
create table if not exists source_state (name text primary key, state text not null);
"""
# Counters kept in meta beside next_seq; invalid readings are counted per reason too
# ("invalid:<reason>").
COUNTERS = ("dropped", "clock_skipped", "invalid")
BUSY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Batch:
    batch_id: str
    seqs: List[int]
    readings: List[Dict[str, Any]]


class QueueFull(Exception):
    """The queue holds max_rows readings and the policy is to pause sampling."""


class DurableQueue:
    """`recover`: the opener owns the queue (it runs or flushes), so readings left
    inflight by a process that died go back to ready. A reader such as `status` passes
    False: the agent beside it may be uploading those very readings."""

    def __init__(
        self,
        path: str,
        *,
        max_rows: int = 1_000_000,
        policy: str = "drop_oldest",
        recover: bool = True,
    ) -> None:
        if policy not in ("drop_oldest", "pause"):
            raise ValueError("policy must be drop_oldest or pause")
        self.max_rows = max_rows
        self.policy = policy
        self._lock = threading.Lock()
        # A `status` beside the agent, or a slow SD card, holds the file for a moment:
        # wait for it rather than fail.
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
        _switch_to_wal(self._db)
        self._db.execute("pragma synchronous=full")
        # One transaction: two processes opening a new queue at once (the agent and a
        # `status`) must not both create or migrate it.
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            columns = [row[1] for row in self._db.execute("pragma table_info(readings)")]
            if "failure" not in columns:  # a queue written by an older agent
                self._db.execute("alter table readings add column failure text")
            if recover:
                self._db.execute("update readings set state = 'ready' where state = 'inflight'")
            known = self._db.execute("select 1 from meta where key = 'next_seq'").fetchone()
            # A queue of an older agent has numbered its readings already: it is anchored.
            self._db.execute(
                "insert or ignore into meta values ('anchored', ?)", (0 if known is None else 1,)
            )
            self._db.execute("insert or ignore into meta values ('next_seq', 1)")
            self._db.executemany(
                "insert or ignore into meta values (?, 0)", [(c,) for c in COUNTERS]
            )

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db, self._lock)

    def put(self, reading: Dict[str, Any]) -> int:
        """Stamp `reading` with the next seq and store it durably; returns the seq."""
        return self.put_many([reading])[0]

    def put_many(
        self,
        readings: List[Dict[str, Any]],
        *,
        counts: Optional[Dict[str, int]] = None,
        source_state: Optional[Dict[str, str]] = None,
    ) -> List[int]:
        """Store several readings in one transaction (one fsync); returns their seqs.

        In the same transaction: `counts` are added to the counters (for example
        {"invalid:non_finite_value": 1}) and `source_state` records where each source
        has read up to, so the readings and the position move together."""
        with self._tx():
            pending = self._pending()  # counted once, then tracked, not once per reading
            seqs = []
            for reading in readings:
                seq, pending = self._put(reading, pending)
                seqs.append(seq)
            for key, amount in (counts or {}).items():
                if amount:
                    self._count(key, amount)
            for name, state in (source_state or {}).items():
                self._db.execute(
                    "insert into source_state values (?, ?) on conflict (name) "
                    "do update set state = excluded.state",
                    (name, state),
                )
            return seqs

    def _count(self, key: str, amount: int) -> None:
        self._db.execute(
            "insert into meta values (?, ?) on conflict (key) do update set value = value + ?",
            (key, amount, amount),
        )
        if key.startswith("invalid:"):
            self._count("invalid", amount)

    def source_state(self, name: str) -> Optional[str]:
        """What `put_many` last recorded for this source (None: never read)."""
        with self._lock:
            row = self._db.execute(
                "select state from source_state where name = ?", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _put(self, reading: Dict[str, Any], pending: int) -> Tuple[int, int]:
        if pending >= self.max_rows:
            if self.policy == "pause":
                raise QueueFull(f"{self.max_rows} readings waiting")
            deleted = self._db.execute(
                "delete from readings where seq = (select min(seq) from readings "
                "where state = 'ready' and batch_id is null)"
            ).rowcount
            self._count("dropped", 1)
            pending -= deleted
        seq = self._meta("next_seq")
        self._db.execute("update meta set value = ? where key = 'next_seq'", (seq + 1,))
        payload = json.dumps({**reading, "seq": seq}, separators=(",", ":"))
        self._db.execute(
            "insert into readings (seq, payload, state, created_at) values (?, ?, 'ready', ?)",
            (seq, payload, time.time()),
        )
        return seq, pending + 1

    def next_seq(self) -> int:
        """The seq the next reading will get (cheap: one row of meta)."""
        with self._lock:
            return self._meta("next_seq")

    def next_batch(self, size: int) -> Optional[Batch]:
        """The oldest unsent batch: first an interrupted one (same id), else a new one."""
        with self._tx():
            row = self._db.execute(
                "select batch_id from readings where state = 'ready' and batch_id is not null "
                "order by seq limit 1"
            ).fetchone()
            if row is not None:
                rows = self._db.execute(
                    "select seq, payload from readings where batch_id = ? and state = 'ready' "
                    "order by seq",
                    (row[0],),
                ).fetchall()
                batch_id = row[0]
            else:
                rows = self._db.execute(
                    "select seq, payload from readings where state = 'ready' order by seq limit ?",
                    (size,),
                ).fetchall()
                if not rows:
                    return None
                batch_id = uuid.uuid4().hex
            self._db.executemany(
                "update readings set state = 'inflight', batch_id = ? where seq = ?",
                [(batch_id, seq) for seq, _ in rows],
            )
        # The row's seq is the reading's: `anchor` may have renumbered it since queueing.
        readings = [{**json.loads(p), "seq": seq} for seq, p in rows]
        return Batch(batch_id, [s for s, _ in rows], readings)

    def ack(self, batch: Batch) -> None:
        with self._tx():
            self._db.execute(
                "update readings set state = 'acked' where batch_id = ?", (batch.batch_id,)
            )
            # Acked rows are only kept for `status`; trim them so the file stays small.
            self._db.execute(
                "delete from readings where state = 'acked' and seq < "
                "(select coalesce(max(seq), 0) - 1000 from readings where state = 'acked')"
            )

    def release(self, batch: Batch) -> None:
        """Upload failed for now: back to ready, keeping the batch id for the retry."""
        with self._tx():
            self._db.execute(
                "update readings set state = 'ready' where batch_id = ?", (batch.batch_id,)
            )

    def fail(self, batch: Batch, reason: str) -> None:
        """The gateway refused the batch for good (4xx): keep it, but stop sending it."""
        self.refuse(batch, {seq: reason for seq in batch.seqs})

    def refuse(self, batch: Batch, failed: Dict[int, str]) -> None:
        """The gateway accepted none of `batch`: the `failed` seqs are parked with their
        reasons, and the rest go back to ready under no batch id, to go out again in
        other batches (a batch split in two, the good part of a batch that held a
        refused reading). One transaction."""
        with self._tx():
            self._db.executemany(
                "update readings set state = 'failed', failure = ? where seq = ?",
                [(reason, seq) for seq, reason in failed.items()],
            )
            self._db.executemany(
                "update readings set state = 'ready', batch_id = null "
                "where seq = ? and state = 'inflight'",
                [(seq,) for seq in batch.seqs if seq not in failed],
            )

    @property
    def anchored(self) -> bool:
        with self._lock:
            return self._meta("anchored") == 1

    def anchor(self, max_seq: Optional[int]) -> int:
        """Number every reading of a fresh queue on from `max_seq`, the highest seq the
        gateway accepted from this device (None: it never got one). Nothing was sent
        yet, so no batch id names the old numbers. Returns the shift applied."""
        with self._tx():
            if self._meta("anchored") == 1:
                return 0
            shift = max(max_seq or 0, 0)
            if shift:
                # Two steps: seq is the primary key, and seq + shift may be taken still.
                self._db.execute("update readings set seq = -(seq + ?)", (shift,))
                self._db.execute("update readings set seq = -seq")
                self._db.execute(
                    "update meta set value = value + ? where key = 'next_seq'", (shift,)
                )
            self._db.execute("update meta set value = 1 where key = 'anchored'")
            return shift

    def requeue(self) -> int:
        """Every failed reading back to ready (for example after its device was
        registered again); returns how many."""
        with self._tx():
            return int(
                self._db.execute(
                    "update readings set state = 'ready', batch_id = null, failure = null "
                    "where state = 'failed'"
                ).rowcount
            )

    def counts(self) -> Dict[str, int]:
        with self._lock:
            rows = self._db.execute("select state, count(*) from readings group by state")
            counts = {state: 0 for state in ("ready", "inflight", "acked", "failed")}
            counts.update(dict(rows.fetchall()))
            for counter in COUNTERS:
                counts[counter] = self._meta(counter)
            counts["next_seq"] = self._meta("next_seq")
            return counts

    def reasons(self) -> Dict[str, Dict[str, int]]:
        """Invalid readings (never queued) and failed ones (refused by the gateway),
        each by reason."""
        with self._lock:
            invalid = self._db.execute(
                "select substr(key, 9), value from meta where key like 'invalid:%' order by 1"
            ).fetchall()
            failed = self._db.execute(
                "select coalesce(failure, 'unknown'), count(*) from readings "
                "where state = 'failed' group by 1 order by 1"
            ).fetchall()
        return {"invalid": dict(invalid), "failed": dict(failed)}

    def _pending(self) -> int:
        row = self._db.execute(
            "select count(*) from readings where state in ('ready', 'inflight')"
        ).fetchone()
        return int(row[0])

    def _meta(self, key: str) -> int:
        return int(self._db.execute("select value from meta where key = ?", (key,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode. Two processes switching a new file at once make SQLite
    answer one of them "database is locked" at once, without waiting out the busy
    timeout (each holds the read lock the other needs to give up): try again."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    retry = RetryPolicy(initial=0.01, cap=0.5)  # jitter: the two do not retry in step
    while True:
        try:
            db.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(retry.next_delay())


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        self._db.execute("begin immediate")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self._db.execute("rollback" if exc_type else "commit")
        finally:
            self._lock.release()
