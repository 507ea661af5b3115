"""Count every stage of the pipeline for one window and find what does not add up.

All lake tables are read at one Nessie commit of main: a branch of reconcile's own is
made at main's head and read through a Trino catalog on it, both dropped at the end.
A transform publishing or maintenance compacting meanwhile moves main, not the
branch, and garbage collection keeps every file a live branch reaches, so the state
read stays whole for as long as reconcile runs; bronze's committed Kafka offsets come
from the same commit. The counts are aggregates per device computed by Trino (one query
per table, run in parallel); readings are listed one by one only where a device's
counts disagree, so a clean lakehouse costs a handful of scans.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from lakehouse import servers
from lakehouse.branch_catalogs import (
    RECONCILE_PREFIX,
    create_branch_catalog,
    drop_catalog,
    drop_orphan_catalogs,
    reconcile_branch,
)
from lakehouse.bronze_offsets import Gap, committed_offsets, expired_offsets
from lakehouse.clients import iceberg_catalog, kafka_config, postgres_connection, trino_connection
from lakehouse.config import Settings
from lakehouse.contracts import INTERNAL_SCHEMA, LEGACY_SCHEMA
from lakehouse.credentials import Credentials
from lakehouse.errors import ReconcileError
from lakehouse.names import checked
from lakehouse.nessie import NessieClient
from lakehouse.reconcile.model import DEFAULT_WAIT_SECONDS, Discrepancy, Report, Window, seq_ranges

log = logging.getLogger(__name__)


# Tables read, by role: (layer, table).
TABLES = {
    "bronze": ("bronze", "readings"),
    "rejected": ("bronze", "readings_rejected"),
    "silver": ("silver", "readings"),
    "quarantine": ("silver", "readings_quarantine"),
    "progress": (INTERNAL_SCHEMA, "bronze_progress"),
    "gold": ("gold", "fct_device_hourly"),
}
# Where a lakehouse of the older layout keeps a table until its next transform run
# moves it (lakehouse.transform.internal_tables).
LEGACY = {"progress": (LEGACY_SCHEMA, "bronze_progress")}
# Bronze envelopes are matched to receipts this far outside the window: an envelope
# received just before `until` reaches bronze a little after it.
ENVELOPE_MARGIN = "interval '1' hour"
# Envelopes read back from Kafka to name the readings bronze lacks, at most.
MAX_ENVELOPES_READ = 1000
Envelope = tuple[str, int, int]  # topic, partition, offset
# A receipt row: device, batch id, readings accepted, topic, partition, offset.
_RECEIPTS = (
    "select b.device_id, b.batch_id, (b.receipt->>'accepted')::int, b.receipt->>'topic', "
    "(b.receipt->>'partition')::int, (b.receipt->>'offset')::bigint "
    "from registry.upload_batches b "
)


@dataclass(frozen=True)
class Receipt:
    device_id: str
    batch_id: str
    accepted: int
    at: Envelope


class Reconciler:
    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.prefix = settings.transform.schema_prefix
        self.locations = dict(TABLES)

    def run(
        self,
        window: Window,
        progress: Callable[[str], None] = lambda _: None,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> Report:
        """Count `window` at one commit of main. A server that is away (restarting)
        is waited for, up to `wait_seconds` in all; a count it interrupted starts over
        on a new commit. Raises ServersAwayError when the wait runs out."""
        deadline = time.monotonic() + wait_seconds
        while True:
            servers.wait_until_answering(
                self.settings, max(0.0, deadline - time.monotonic()), progress
            )
            try:
                with self._pinned() as branch:
                    return self._run(window, progress, branch)
            except ReconcileError:
                raise
            except Exception as exc:
                if time.monotonic() >= deadline or not (
                    servers.is_outage(exc) or servers.away(self.settings)
                ):
                    raise
                progress(f"a server went away while counting ({type(exc).__name__}); again")
                time.sleep(1)

    def _run(self, window: Window, progress: Callable[[str], None], branch: str) -> Report:
        started = time.perf_counter()
        report = Report(window)
        snapshots, committed, gaps = self._snapshots(branch)
        if snapshots["bronze"] is None:
            raise ReconcileError(
                f"there is no {self.prefix}bronze.readings table with data to reconcile"
            )
        tables = {role: self._table(branch, role, snap) for role, snap in snapshots.items()}
        progress("counting every stage")
        queries = _Queries(tables, window)
        span = self._query(queries.event_span_sql())
        if span and span[0][0] is not None:
            queries.event_span = (span[0][0], span[0][1])
        with ThreadPoolExecutor(max_workers=4) as pool:
            counted = {
                name: pool.submit(self._query, sql) for name, sql in queries.counts().items()
            }
            receipts = pool.submit(self._receipts, window)
            envelopes = pool.submit(self._query, queries.envelopes())
            rows = {name: future.result() for name, future in counted.items()}
            receipt_rows, envelope_rows = receipts.result(), envelopes.result()
        self._apply_counts(report, rows)
        _report_gaps(report, gaps)
        progress("matching gateway receipts with bronze")
        self._match_envelopes(report, queries, receipt_rows, envelope_rows, committed)
        progress("naming readings where counts disagree")
        self._find_lost_in_transform(report, queries)
        self._find_duplicates(report, queries, rows["silver"])
        for device, _, bad_groups in rows["gold"]:
            if bad_groups:
                self._find_gold_mismatch(report, queries, device)
        report.seconds = time.perf_counter() - started
        return report

    # -- state ---------------------------------------------------------------------------

    @contextmanager
    def _pinned(self) -> Iterator[str]:
        """A branch at main's head and a Trino catalog of the same name on it."""
        branch = reconcile_branch(datetime.now(UTC))
        with NessieClient(self.settings, self.credentials) as nessie:
            self._drop_orphan_catalogs(nessie)
            nessie.create_branch(branch, "main")
            try:
                cursor = self._trino("system")
                create_branch_catalog(cursor, self.settings, branch)
                try:
                    yield branch
                finally:
                    _best_effort(
                        f"drop catalog {branch}",
                        lambda: drop_catalog(self._trino("system"), branch),
                    )
            finally:
                # Left behind if a server is away: the next reconcile drops the
                # catalog, maintenance the branch (lakehouse.maintain.retention).
                _best_effort(f"delete branch {branch}", lambda: nessie.delete_branch(branch))

    def _drop_orphan_catalogs(self, nessie: NessieClient) -> None:
        """Catalogs a killed reconcile left, whose branch maintenance has since deleted."""
        drop_orphan_catalogs(
            self._trino("system"),
            RECONCILE_PREFIX,
            lambda: {ref.name for ref in nessie.references()},
        )

    def _snapshots(
        self, branch: str
    ) -> tuple[dict[str, int | None], dict[str, dict[int, int]], list[Gap]]:
        """Whether each table has data on the branch, bronze's committed offsets and
        its record of expired offsets."""
        catalog = iceberg_catalog(self.settings, self.credentials, ref=branch, s3_key="reader")
        snapshots: dict[str, int | None] = {}
        committed: dict[str, dict[int, int]] = {}
        gaps: list[Gap] = []
        self.locations = dict(TABLES)  # a count started over reads the layout afresh
        for role, (layer, name) in TABLES.items():
            identifier = f"{self.prefix}{layer}.{name}"
            exists = catalog.table_exists(identifier)
            if not exists and role in LEGACY:
                self.locations[role] = LEGACY[role]
                identifier = f"{self.prefix}{LEGACY[role][0]}.{LEGACY[role][1]}"
                exists = catalog.table_exists(identifier)
            if not exists:
                snapshots[role] = None
                continue
            table = catalog.load_table(identifier)
            snapshot = table.current_snapshot()
            snapshots[role] = snapshot.snapshot_id if snapshot else None
            if role == "bronze":
                committed = committed_offsets(table.properties)
                gaps = expired_offsets(table.properties)
        return snapshots, committed, gaps

    def _table(self, branch: str, role: str, snapshot: int | None) -> str | None:
        if snapshot is None:
            return None
        layer, name = self.locations[role]
        return f'"{branch}"."{self.prefix}{layer}".{name}'

    def _trino(self, catalog: str = "lake") -> Any:
        return trino_connection(
            self.settings, catalog=catalog, credentials=self.credentials
        ).cursor()

    def _query(self, sql: str | None) -> list[list[Any]]:
        if sql is None:
            return []
        cursor = self._trino()
        cursor.execute(sql)
        return list(cursor.fetchall())

    # -- counts --------------------------------------------------------------------------

    def _apply_counts(self, report: Report, rows: dict[str, list[list[Any]]]) -> None:
        for device, tenant, total, pending in rows["bronze"]:
            counts = report.device(device)
            counts.tenant, counts.bronze, counts.transform_pending = tenant, total, pending
        for device, reason, n in rows["rejected"]:
            counts = report.device(device or "(unknown)")
            counts.rejected[reason] = n
        for device, n, _distinct in rows["silver"]:
            report.device(device).silver = n
        for device, rule, n in rows["quarantine"]:
            report.device(device).quarantined[rule] = n
        for device, in_gold, _ in rows["gold"]:
            report.device(device).gold = in_gold

    # -- gateway receipts ----------------------------------------------------------------

    def _receipts(self, window: Window) -> list[Receipt]:
        """The gateway's receipts in the window, when this bronze is the one its
        consumers write (a namespace of other settings shares the registry, not Kafka)."""
        if self.settings.ingest.namespace != f"{self.prefix}bronze":
            return []
        clauses: list[str] = ["b.receipt is not null", "b.receipt->>'topic' = %s"]
        params: list[Any] = [self.settings.kafka.topic]
        if window.since is not None:
            clauses.append("b.created_at >= %s")
            params.append(window.since)
        if window.until is not None:
            clauses.append("b.created_at < %s")
            params.append(window.until)
        if window.device is not None:
            clauses.append("b.device_id = %s")
            params.append(checked("device id", window.device))
        if window.tenant is not None:
            clauses.append("d.tenant = %s")
            params.append(window.tenant)
        where = " and ".join(clauses)
        sql = f"{_RECEIPTS}left join registry.devices d using (device_id) where {where}"
        with postgres_connection(self.settings, self.credentials) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_receipt(row) for row in rows]

    def _receipts_of(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Receipt]:
        if not keys:
            return {}
        devices, batches = zip(*sorted(keys), strict=True)
        sql = (
            _RECEIPTS + "join unnest(%s::text[], %s::text[]) as k(device_id, batch_id) "
            "using (device_id, batch_id) where b.receipt is not null"
        )
        with postgres_connection(self.settings, self.credentials) as conn:
            rows = conn.execute(sql, (list(devices), list(batches))).fetchall()
        return {(row[0], row[1]): _receipt(row) for row in rows}

    def _match_envelopes(
        self,
        report: Report,
        queries: _Queries,
        receipts: list[Receipt],
        envelope_rows: list[list[Any]],
        committed: dict[str, dict[int, int]],
    ) -> None:
        """Every receipted envelope that bronze consumed holds all its readings in bronze
        (or its rejects), and no receipted batch is in Kafka at a second offset."""
        found: dict[Envelope, int] = defaultdict(int)
        in_window: list[tuple[str, str, Envelope, int]] = []
        for device, batch, topic, partition, offset, n, inside in envelope_rows:
            found[(topic, partition, offset)] += n
            if inside and batch is not None and device is not None:
                in_window.append((device, batch, (topic, partition, offset), n))
        short: list[tuple[Receipt, int]] = []
        for receipt in receipts:
            counts = report.device(receipt.device_id)
            counts.receipted += receipt.accepted
            topic, partition, offset = receipt.at
            if offset >= committed.get(topic, {}).get(partition, 0):
                counts.kafka_pending += receipt.accepted
            elif found.get(receipt.at, 0) < receipt.accepted:
                short.append((receipt, found.get(receipt.at, 0)))
        self._name_lost_envelopes(report, queries, short)

        by_key: dict[tuple[str, str], Receipt] = {(r.device_id, r.batch_id): r for r in receipts}
        unknown = {(d, b) for d, b, _, _ in in_window if (d, b) not in by_key}
        by_key |= self._receipts_of(unknown)
        for device, batch, at, n in in_window:
            known = by_key.get((device, batch))
            if known is None:
                report.unreceipted_envelopes += 1
            elif known.at != at:
                seqs = [row[0] for row in self._query(queries.seqs_at(device, at))]
                report.discrepancies.append(Discrepancy(
                    "envelope_duplicated", device, n, tuple(seq_ranges(seqs)),
                    f"batch {batch} at {_where(at)}, receipted at {_where(known.at)}",
                ))  # fmt: skip

    def _name_lost_envelopes(
        self, report: Report, queries: _Queries, short: list[tuple[Receipt, int]]
    ) -> None:
        if not short:
            return
        envelopes = _read_envelopes(
            self.settings, self.credentials, [r.at for r, _ in short[:MAX_ENVELOPES_READ]]
        )
        for receipt, present in short:
            seqs: tuple[tuple[int, int], ...] = ()
            detail = f"batch {receipt.batch_id} at {_where(receipt.at)}"
            in_kafka = envelopes.get(receipt.at)
            if in_kafka is None:
                detail += "; the envelope is no longer in Kafka, so its readings cannot be named"
            else:
                kept = {
                    row[0] for row in self._query(queries.seqs_at(receipt.device_id, receipt.at))
                }
                seqs = tuple(seq_ranges(s for s in in_kafka if s not in kept))
            report.discrepancies.append(Discrepancy(
                "lost_before_bronze", receipt.device_id, receipt.accepted - present, seqs, detail
            ))  # fmt: skip

    # -- readings named where counts disagree --------------------------------------------

    def _find_lost_in_transform(self, report: Report, queries: _Queries) -> None:
        for device, counts in sorted(report.devices.items()):
            processed = counts.bronze - counts.transform_pending
            kept = counts.silver + sum(counts.quarantined.values())
            if processed == kept or queries.tables["silver"] is None:
                continue
            lost = [r[0] for r in self._query(queries.bronze_not_in_silver(device))]
            gone = [r[0] for r in self._query(queries.silver_not_in_bronze(device))]
            if lost:
                report.discrepancies.append(
                    Discrepancy("lost_in_transform", device, len(lost), tuple(seq_ranges(lost)))
                )
            if gone:
                report.discrepancies.append(
                    Discrepancy("missing_from_bronze", device, len(gone), tuple(seq_ranges(gone)))
                )

    def _find_duplicates(self, report: Report, queries: _Queries, silver: list[list[Any]]) -> None:
        for device, n, distinct in silver:
            if n != distinct:
                seqs = [r[0] for r in self._query(queries.duplicated_seqs(device))]
                report.discrepancies.append(Discrepancy(
                    "duplicated_in_silver", device, n - distinct, tuple(seq_ranges(seqs))
                ))  # fmt: skip
        reused: dict[str, list[int]] = defaultdict(list)
        if not any(c.duplicates_removed for c in report.devices.values()):
            return  # no duplicate in the window, so no seq reused either
        for device, seq in self._query(queries.reused_seqs()):
            reused[device].append(seq)
        for device, seqs in sorted(reused.items()):
            report.discrepancies.append(Discrepancy(
                "seq_reused", device, len(seqs), tuple(seq_ranges(seqs)),
                "the device restarted its sequence numbers",
            ))  # fmt: skip

    def _find_gold_mismatch(self, report: Report, queries: _Queries, device: str) -> None:
        for metric, hour, total, gold in self._query(queries.gold_mismatches(device)):
            seqs = [r[0] for r in self._query(queries.seqs_in_hour(device, metric, hour))]
            report.discrepancies.append(Discrepancy(
                "gold_mismatch", device, abs(total - (gold or 0)), tuple(seq_ranges(seqs)),
                f"{metric} at {hour:%Y-%m-%d %H:00}: silver {total}, gold {gold or 0}",
            ))  # fmt: skip


def _receipt(row: Any) -> Receipt:
    """A row of _RECEIPTS."""
    return Receipt(row[0], row[1], row[2], (row[3], row[4], row[5]))


def _report_gaps(report: Report, gaps: list[Gap]) -> None:
    window = report.window
    for gap in gaps:
        if window.since is not None and gap.detected_at < window.since:
            continue
        if window.until is not None and gap.detected_at >= window.until:
            continue
        report.discrepancies.append(Discrepancy(
            "expired_in_kafka", "(unknown)", gap.end - gap.first, (),
            f"{gap.topic}[{gap.partition}] offsets {gap.first}-{gap.end - 1}, found "
            f"{gap.detected_at:%Y-%m-%d %H:%M:%S} UTC; Kafka's retention is shorter than "
            "the consumer was down",
        ))  # fmt: skip


def _where(at: Envelope) -> str:
    return f"{at[0]}[{at[1]}]@{at[2]}"


def _read_envelopes(
    settings: Settings, credentials: Credentials, places: Sequence[Envelope]
) -> dict[Envelope, list[int]]:
    """The seqs of the envelopes at `places` that Kafka still holds."""
    from confluent_kafka import Consumer, TopicPartition

    config = kafka_config(
        settings, "ingest", credentials=credentials,
        **{"group.id": f"{settings.ingest.group_id}-reconcile-{uuid.uuid4().hex}",
           "enable.auto.commit": False, "log_level": 3},
    )  # fmt: skip
    consumer = Consumer(config)
    found: dict[Envelope, list[int]] = {}
    try:
        for topic, partition, offset in places:
            consumer.assign([TopicPartition(topic, partition, offset)])
            for _ in range(10):
                message = consumer.poll(1.0)
                if message is None or message.error() is not None:
                    continue
                if message.offset() == offset:
                    payload = orjson.loads(message.value() or b"{}")
                    readings = payload.get("readings") or [payload]
                    found[(topic, partition, offset)] = [int(r["seq"]) for r in readings]
                break
    finally:
        consumer.close()
    return found


class _Queries:
    """The SQL of one reconciliation: tables pinned to snapshots, the window applied."""

    def __init__(self, tables: dict[str, str | None], window: Window) -> None:
        self.tables = tables
        self.window = window
        # Event times of the window's silver rows, bounding the gold comparison's scans.
        self.event_span: tuple[datetime, datetime] | None = None

    def event_span_sql(self) -> str | None:
        silver = self.tables["silver"]
        if silver is None:
            return None
        return f"select min(s.ts), max(s.ts) from {silver} s where {self._filters('s')}"

    def _filters(self, alias: str, *, margin: bool = False) -> str:
        """The window: its time (see _inside) and its device or tenant."""
        w = self.window
        clauses = [self._inside(alias, margin=margin)]
        if w.device is not None:
            clauses.append(f"{alias}.device_id = {_text(checked('device id', w.device))}")
        if w.tenant is not None:
            clauses.append(f"{alias}.tenant = {_text(checked('tenant', w.tenant))}")
        return " and ".join(clauses)

    def _inside(self, alias: str, *, margin: bool = False) -> str:
        """Received in the window (widened by ENVELOPE_MARGIN on each side with margin)."""
        w = self.window
        clauses = ["true"]
        if w.since is not None:
            low = _ts(w.since) + (f" - {ENVELOPE_MARGIN}" if margin else "")
            clauses.append(f"{alias}.ingested_at >= {low}")
        if w.until is not None:
            high = _ts(w.until) + (f" + {ENVELOPE_MARGIN}" if margin else "")
            clauses.append(f"{alias}.ingested_at < {high}")
        return " and ".join(clauses)

    def _bronze(self, where: str) -> str:
        """Bronze rows (alias b in `where`) and whether silver processed each: a Kafka row
        up to its partition's recorded position, a file row once its hash is recorded
        (see internal.bronze_progress). Joined with the few progress rows, not per row."""
        bronze, progress = self.tables["bronze"], self.tables["progress"]
        if progress is None:
            return f"(select b.*, false as processed from {bronze} b where {where})"
        return (
            f"(select b.*, coalesce(b.source_offset <= k.position, f.sha is not null) "
            f"as processed from {bronze} b "
            f"left join (select split_part(stream, ':', 2) as topic, "
            f"cast(split_part(stream, ':', 3) as integer) as part, position from {progress} "
            f"where stream like 'kafka:%') k "
            f"on k.topic = b.source_topic and k.part = b.source_partition "
            f"left join (select substr(stream, 6) as sha from {progress} "
            f"where stream like 'file:%') f on b.source_topic is null and f.sha = b.batch_id "
            f"where {where})"
        )

    def counts(self) -> dict[str, str | None]:
        t = self.tables
        queries: dict[str, str | None] = {
            "bronze": (
                f"select device_id, max(tenant), count(*), count_if(not processed) "
                f"from {self._bronze(self._filters('b'))} group by 1"
            ),
            "rejected": None if t["rejected"] is None else (
                f"select r.device_id, r.reason, count(*) from {t['rejected']} r "
                f"where {self._filters('r')} group by 1, 2"
            ),
            "silver": None if t["silver"] is None else (
                f"select s.device_id, count(*), count(distinct s.seq) from {t['silver']} s "
                f"where {self._filters('s')} group by 1"
            ),
            "quarantine": None if t["quarantine"] is None else (
                f"select q.device_id, q.failed_rule, count(*) from {t['quarantine']} q "
                f"where {self._filters('q')} group by 1, 2"
            ),
            "gold": None if t["silver"] is None or t["gold"] is None else self._gold_groups(
                "select device_id, sum(if(total = gold, in_window, 0)), "
                "count_if(total is distinct from gold) from compared group by 1"
            ),
        }  # fmt: skip
        return queries

    def _gold_groups(self, select: str) -> str:
        """Per (device, metric, hour) of the window's silver rows: how many of them are
        in the window, silver's total and gold's count."""
        t = self.tables
        return (
            f"with window_rows as (select s.device_id, s.metric, date_trunc('hour', s.ts) as hour "
            f"from {t['silver']} s where {self._filters('s')}), "
            f"touched as (select device_id, metric, hour, count(*) as in_window "
            f"from window_rows group by 1, 2, 3), "
            f"totals as (select s.device_id, s.metric, date_trunc('hour', s.ts) as hour, "
            f"count(*) as total from {t['silver']} s "
            f"where s.device_id in (select device_id from touched) and {self._span('s.ts')} "
            f"group by 1, 2, 3), "
            f"compared as (select t.device_id, t.metric, t.hour, t.in_window, s.total, "
            f"g.readings as gold from touched t "
            f"join totals s on s.device_id = t.device_id and s.metric = t.metric "
            f"and s.hour = t.hour "
            f"left join (select * from {t['gold']} g where {self._span('g.hour')}) g "
            f"on g.device_id = t.device_id and g.metric = t.metric and g.hour = t.hour) {select}"
        )

    def _span(self, column: str) -> str:
        """`column` within the hours of the window's silver rows (literals, so Iceberg
        prunes files and partitions)."""
        if self.event_span is None:
            return "true"
        low, high = self.event_span
        first = low.replace(minute=0, second=0, microsecond=0)
        return f"{column} >= {_ts(first)} and {column} <= {_ts(high)}"

    def gold_mismatches(self, device: str) -> str:
        return self._gold_groups(
            "select metric, hour, total, gold from compared "
            f"where device_id = {_text(device)} and total is distinct from gold order by 1, 2"
        )

    def seqs_in_hour(self, device: str, metric: str, hour: datetime) -> str:
        return (
            f"select seq from {self.tables['silver']} s where s.device_id = {_text(device)} "
            f"and s.metric = {_text(metric)} and date_trunc('hour', s.ts) = {_ts(hour)} "
            "order by 1"
        )

    def envelopes(self) -> str:
        """Bronze rows and rejects per Kafka envelope that carries a batch id."""
        t = self.tables
        rejected = "" if t["rejected"] is None else (
            f" union all select r.device_id, r.batch_id, r.source_topic, r.source_partition, "
            f"r.source_offset, r.ingested_at from {t['rejected']} r "
            f"where r.batch_id is not null and r.source_topic is not null "
            f"and {self._filters('r', margin=True)}"
        )  # fmt: skip
        return (
            f"with rows as (select b.device_id, b.batch_id, b.source_topic, b.source_partition, "
            f"b.source_offset, b.ingested_at from {t['bronze']} b "
            f"where b.batch_id is not null and b.source_topic is not null "
            f"and {self._filters('b', margin=True)}{rejected}) "
            f"select device_id, batch_id, source_topic, source_partition, source_offset, "
            f"count(*), bool_or({self._inside('rows')}) from rows group by 1, 2, 3, 4, 5"
        )

    def seqs_at(self, device: str, at: Envelope) -> str:
        return (
            f"select seq from {self.tables['bronze']} b where b.device_id = {_text(device)} "
            f"and b.source_topic = {_text(at[0])} and b.source_partition = {int(at[1])} "
            f"and b.source_offset = {int(at[2])}"
        )

    def _keys(self, role: str, device: str) -> str:
        return (
            f"select seq, source_topic, source_partition, source_offset, batch_id "
            f"from {self.tables[role]} x where x.device_id = {_text(device)} "
            f"and {self._inside('x')}"
        )

    def _kept(self, device: str) -> str:
        """The keys of the device's readings that silver kept or quarantined."""
        kept = self._keys("silver", device)
        if self.tables["quarantine"] is not None:
            kept += " union all " + self._keys("quarantine", device)
        return kept

    def bronze_not_in_silver(self, device: str) -> str:
        processed = self._bronze(f"b.device_id = {_text(device)} and {self._inside('b')}")
        return (
            f"select seq from (select seq, source_topic, source_partition, source_offset, "
            f"batch_id from {processed} where processed except ({self._kept(device)})) "
            "order by 1"
        )

    def silver_not_in_bronze(self, device: str) -> str:
        return (
            f"select seq from (({self._kept(device)}) except {self._keys('bronze', device)}) "
            "order by 1"
        )

    def duplicated_seqs(self, device: str) -> str:
        return (
            f"select seq from {self.tables['silver']} s where s.device_id = {_text(device)} "
            f"and {self._inside('s')} group by 1 having count(*) > 1 order by 1"
        )

    def reused_seqs(self) -> str | None:
        t = self.tables
        if t["silver"] is None or t["quarantine"] is None:
            return None
        return (
            f"select q.device_id, q.seq from {t['quarantine']} q join {t['silver']} s "
            f"on s.device_id = q.device_id and s.seq = q.seq "
            f"where q.failed_rule = 'duplicate' and {self._filters('q')} "
            f"and (q.ts <> s.ts or q.metric <> s.metric) order by 1, 2"
        )


def _ts(value: datetime) -> str:
    return f"from_iso8601_timestamp_nanos('{value.isoformat()}')"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _best_effort(what: str, action: Callable[[], object]) -> None:
    """Clean-up that must not hide the error being raised (a server may be away)."""
    try:
        action()
    except Exception as exc:
        log.warning("could not %s: %s", what, exc)
