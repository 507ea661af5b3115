"""Kafka → Iceberg bronze consumer with exactly-once commits.

Each batch is committed to `bronze.readings` together with the next offsets of its
partitions (see ingest.offsets), then to `bronze.readings_rejected` the same way.
Positions come from the tables on every assignment, never from Kafka's committed
offsets, which are written afterwards only so lag can be monitored. A batch whose
partitions moved on in the table meanwhile (a zombie after a rebalance) is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from ingest.metrics import IngestMetrics
from ingest.offsets import commit_with_offsets, read_offsets
from ingest.readings import Limits
from ingest.vector_decode import decode_messages
from lakehouse.clients import iceberg_catalog, kafka_config
from lakehouse.config import Settings
from lakehouse.contracts import READINGS, REJECTED, ensure_bronze_tables
from lakehouse.credentials import Credentials
from lakehouse.errors import ConfigError, FencedCommitError, IngestError
from lakehouse.failpoints import failpoint
from lakehouse.retry import Interrupted, Outage, retry_transient

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

T = TypeVar("T")

log = logging.getLogger(__name__)

# With an idle exit, how long a consumer may wait for its first partitions before the
# wait counts as idle.
ASSIGNMENT_WAIT_SECONDS = 60.0
LAG_REFRESH_SECONDS = 5.0
_FORBIDDEN = {"enable.auto.commit": "true", "enable.auto.offset.store": "true"}


@dataclass(frozen=True)
class CommitPolicy:
    """A batch is committed when it reaches a row count, a byte size or an age."""

    max_rows: int = 500_000
    max_bytes: int = 128 * 1024 * 1024
    max_age_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_bytes < 1 or self.max_age_seconds <= 0:
            raise ConfigError(f"commit policy limits must be positive: {self}")

    def due(self, rows: int, size: int, age: float) -> bool:
        return rows >= self.max_rows or size >= self.max_bytes or age >= self.max_age_seconds


@dataclass
class _Batch:
    """Raw messages of one batch; decoded together when the batch is committed."""

    opened: float = field(default_factory=time.monotonic)
    size: int = 0
    values: list[bytes | None] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keep_readings: list[bool] = field(default_factory=list)
    end: dict[int, int] = field(default_factory=dict)
    # Offsets [first, end) per partition that expired before they could be consumed.
    gaps: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class _Outcome:
    """What committing one batch did."""

    batch: _Batch
    readings: int
    rejected: int
    seconds: float
    newest_us: int | None
    fenced: FencedCommitError | None = None


def consumer_config(settings: Settings, group_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Consumer settings; auto commit and auto offset store stay off, whatever is asked."""
    for key, bad in _FORBIDDEN.items():
        if str(overrides.get(key, "false")).lower() == bad:
            raise ConfigError(
                f"{key}=true would commit offsets Kafka-side before the Iceberg commit",
                fix=f"remove {key}; this consumer stores offsets in the table",
            )
    return kafka_config(
        settings,
        "ingest",
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "session.timeout.ms": settings.ingest.session_timeout_ms,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            **overrides,
        },
    )


class BronzeConsumer:
    """One member of the consumer group that writes the readings topic into bronze."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        policy: CommitPolicy | None = None,
        group_id: str | None = None,
        topic: str | None = None,
        metrics: IngestMetrics | None = None,
        overrides: dict[str, Any] | None = None,
        tables: tuple[str, str] = (READINGS, REJECTED),
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.kafka.topic
        self.group_id = group_id or settings.ingest.group_id
        self.policy = policy or CommitPolicy(
            settings.ingest.max_rows, settings.ingest.max_bytes, settings.ingest.max_age_seconds
        )
        self.metrics = metrics or IngestMetrics()
        self.limits = Limits(max_future=timedelta(seconds=settings.ingest.max_future_seconds))
        self._config = {
            **consumer_config(settings, self.group_id, overrides or {}),
            "error_cb": self._on_client_error,
        }
        # A fatal error of the Kafka client (another consumer took this one's static
        # member id): the client consumes nothing more, so the process must end.
        self._fatal: KafkaError | None = None
        self.stop_event = threading.Event()
        # Nessie and MinIO (and PostgreSQL behind Nessie): every table operation.
        self._catalog_outage = Outage(
            "the bronze catalog (Nessie, MinIO)", log, self.metrics.availability("catalog")
        )
        self._kafka_outage = Outage("Kafka", log, self.metrics.availability("kafka"))

        def open_tables() -> tuple[Table, Table]:
            catalog = iceberg_catalog(settings, credentials, s3_key="ingest", principal="ingest")
            ensure_bronze_tables(catalog, *tables)
            return catalog.load_table(tables[0]), catalog.load_table(tables[1])

        self._readings, self._rejected = self._retry(open_tables)
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()
        # Per partition, the offset the next message should have: where the consumer
        # sought, then one past the last message taken (batches in flight included).
        self._next_offset: dict[int, int] = {}
        self._readings_at: dict[int, int] = {}
        self._rejected_at: dict[int, int] = {}
        self._batch = self._new_batch()
        # One worker decodes and commits a batch while the next one is consumed.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._inflight: Future[_Outcome] | None = None
        self.commits = 0

    def _retry(
        self, action: Callable[[], T], before_retry: Callable[[], object] | None = None
    ) -> T:
        """Run a table operation, riding out a catalog or storage outage."""
        return retry_transient(
            action, outage=self._catalog_outage, stop=self.stop_event, before_retry=before_retry
        )

    # -- lifecycle ----------------------------------------------------------------------
    def run(self, *, idle_exit_seconds: float | None = None) -> None:
        """Consume until `stop_event` is set (or the topic is idle that long), then drain.

        Stopped while a server is away, the batch not yet committed is left to be
        consumed again (its offsets were not committed either).
        """
        try:
            self._run(idle_exit_seconds)
        except Interrupted as exc:
            log.warning("%s; the uncommitted batch will be consumed again", exc.message)

    def _on_client_error(self, error: KafkaError) -> None:
        if _is_fatal(error):
            self._fatal = error
        # Other client errors (a broker away) show in consume() and are retried there.

    def _consume(self, consumer: Consumer) -> list[Message]:
        try:
            messages = consumer.consume(num_messages=5000, timeout=0.2)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError):
                self._check_refused(error)
                if _is_fatal(error):
                    self._fatal = error
            self._check_fatal()
            self._kafka_outage.failed(exc)
            self.stop_event.wait(1.0)
            return []
        self._check_fatal()
        if messages and self._kafka_outage.down:
            self._kafka_outage.recovered()
        return messages

    def _check_refused(self, error: KafkaError) -> None:
        """Kafka's client keeps retrying a group or topic no ACL allows, and consumes
        nothing meanwhile: no retry helps, so the consumer stops and says what to fix."""
        refused = refusal(error, self.settings, topic=self.topic, group_id=self.group_id)
        if refused is not None:
            raise refused

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise IngestError(
                f"fatal Kafka error, this consumer can consume no more: {self._fatal.str()}",
                fix="another consumer may use the same --instance-id; the supervisor "
                "starts this one again",
            )

    def _run(self, idle_exit_seconds: float | None) -> None:
        consumer = Consumer(self._config)
        self._consumer = consumer
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )  # fmt: skip
        subscribed = last_message = lag_updated = time.monotonic()
        try:
            while not self.stop_event.is_set():
                messages = self._consume(consumer)
                if time.monotonic() - lag_updated >= LAG_REFRESH_SECONDS:
                    # Also while idle, so the gauge shows partitions nothing arrives on.
                    self._update_lag()
                    lag_updated = time.monotonic()
                for message in messages:
                    self._add(message)
                self.metrics.consumed.inc(len(messages))
                if self._inflight is not None and self._inflight.done():
                    self._settle()
                # Waiting for partitions (a slow group join) is not idling, up to a limit.
                unassigned = not self._assigned and (
                    time.monotonic() - subscribed < ASSIGNMENT_WAIT_SECONDS
                )
                if messages or unassigned:
                    last_message = time.monotonic()
                elif (
                    idle_exit_seconds is not None
                    and time.monotonic() - last_message > idle_exit_seconds
                ):
                    break
                if self._batch.messages and self.policy.due(
                    self._batch.messages,
                    self._batch.size,
                    time.monotonic() - self._batch.opened,
                ):
                    self._flush()
            self._flush()
            self._settle()
        finally:
            self._worker.shutdown(wait=True)
            consumer.close()
            self._consumer = None

    def stop(self) -> None:
        self.stop_event.set()

    # -- rebalances ---------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._load_offsets()
        for tp in partitions:
            tp.offset = self._resume_offset(tp.partition)
            self._refuse_offsets_ahead_of_the_topic(consumer, tp)
            self._sought(tp.partition, tp.offset)
        self._assigned = {tp.partition for tp in partitions}
        consumer.assign(partitions)
        log.info("assigned %s", {tp.partition: tp.offset for tp in partitions})

    def _refuse_offsets_ahead_of_the_topic(self, consumer: Consumer, tp: TopicPartition) -> None:
        """Bronze resumes a partition beyond the topic's end only if the topic was deleted
        and created again: its new messages would reuse offsets bronze counts as consumed
        and be skipped. That cannot be retried away, so the consumer stops and says so."""
        if tp.offset < 0:
            return
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, tp.partition), timeout=5, cached=False
            )
        except Exception as exc:  # an unreachable broker is an outage, handled elsewhere
            log.debug("no watermarks for partition %d: %s", tp.partition, exc)
            return
        if tp.offset > high:
            raise IngestError(
                f"bronze has consumed {self.topic}[{tp.partition}] up to offset {tp.offset}, "
                f"but the topic ends at {high}: it was deleted and created again, and its "
                "new messages would be taken for ones already consumed",
                fix="give the new topic a name of its own (LAKEHOUSE_KAFKA_TOPIC for the "
                "gateway and the consumers): bronze keeps offsets per topic",
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush()
        self._settle()
        self._assigned -= {tp.partition for tp in partitions}
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost: %s; dropping the open batch", [p.partition for p in partitions]
        )
        try:
            self._settle()  # the batch in flight commits or is fenced by the table
        except KafkaException as exc:
            log.warning("re-seek after losing partitions failed: %s", exc)
        self._batch = self._new_batch()
        self._assigned -= {tp.partition for tp in partitions}

    def _load_offsets(self) -> None:
        self._retry(self._readings.refresh)
        self._retry(self._rejected.refresh)
        self._readings_at = read_offsets(self._readings, self.topic)
        self._rejected_at = read_offsets(self._rejected, self.topic)

    def _resume_offset(self, partition: int) -> int:
        known = [
            table[partition]
            for table in (self._readings_at, self._rejected_at)
            if partition in table
        ]
        return min(known) if len(known) == 2 else OFFSET_BEGINNING

    # -- batching -----------------------------------------------------------------------
    def _new_batch(self) -> _Batch:
        return _Batch()

    def _add(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            self._check_refused(error)
            if _is_fatal(error):
                self._fatal = error
                self._check_fatal()
            log.warning("Kafka error: %s", error)
            return
        partition, offset = message.partition(), message.offset()
        if partition is None or offset is None or partition not in self._assigned:
            return
        batch = self._batch
        expected = self._next_offset.get(partition)
        if expected is not None and offset > expected:
            self._expired(partition, expected, offset)
        self._next_offset[partition] = offset + 1
        batch.end[partition] = offset + 1
        value = message.value()
        batch.values.append(value)
        batch.partitions.append(partition)
        batch.offsets.append(offset)
        floor = self._readings_at.get(partition)
        batch.keep_readings.append(floor is None or offset >= floor)
        batch.size += len(value) if value else 0

    def _expired(self, partition: int, expected: int, offset: int) -> None:
        """The next message of a partition is beyond the next offset: unless the broker
        still holds the offsets in between (transaction markers), retention deleted them
        before they were consumed. Recorded with the batch, counted, and logged loudly."""
        low: int | None = None
        if self._consumer is not None:
            try:
                low, _ = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=5, cached=False
                )
            except Exception as exc:  # unconfirmed: recorded all the same, never hidden
                log.warning("no watermarks for partition %d: %s", partition, exc)
        if low is not None and low <= expected:
            return
        end = offset if low is None else min(offset, low)
        first, _ = self._batch.gaps.get(partition, (expected, end))
        self._batch.gaps[partition] = (first, end)
        self.metrics.expired.labels(self.topic, str(partition)).inc(end - expected)
        log.error(
            "partition %d of %s: offsets %d-%d (%d messages) expired from Kafka before they "
            "were consumed (retention shorter than the consumer's downtime); recorded in "
            "bronze, reported by `lakehouse reconcile`",
            partition, self.topic, expected, end - 1, end - expected,
        )  # fmt: skip

    def _flush(self) -> None:
        """Hand the open batch to the commit worker (after the previous one finished)."""
        self._settle()
        batch = self._batch
        self._batch = self._new_batch()
        if not batch.messages:
            return
        failpoint("before-commit")
        self._inflight = self._worker.submit(self._commit, batch)

    def _settle(self) -> None:
        """Wait for the batch being committed, then account for it (main thread only)."""
        if self._inflight is None:
            return
        outcome = self._inflight.result()
        self._inflight = None
        if outcome.fenced is not None:
            self.metrics.fenced.inc()
            log.warning(
                "%s; dropping %d messages and re-seeking",
                outcome.fenced.message, outcome.batch.messages + self._batch.messages,
            )  # fmt: skip
            self._batch = self._new_batch()
            self._reseek()
            return
        self.commits += 1
        self.metrics.committed.inc(outcome.readings)
        self.metrics.rejected.inc(outcome.rejected)
        self.metrics.commit_latency.observe(outcome.seconds)
        newest = outcome.newest_us
        self.metrics.record_commit(newest / 1e6 if newest is not None else None)
        self._commit_kafka(outcome.batch.end)
        self._update_lag()
        log.info(
            "committed %d readings, %d rejected, partitions %s in %.2f s",
            outcome.readings, outcome.rejected, sorted(outcome.batch.end), outcome.seconds,
        )  # fmt: skip

    def _commit(self, batch: _Batch) -> _Outcome:
        """Decode and commit one batch to both tables (runs on the commit worker)."""
        started = time.monotonic()
        builder = decode_messages(
            batch.values, batch.partitions, batch.offsets, batch.keep_readings,
            topic=self.topic, limits=self.limits, now=datetime.now(UTC),
        )  # fmt: skip
        # Appended in arrival order (envelopes keep a device's readings together): sorting
        # here would cost more than the rest of the commit; compaction applies the sort order.
        readings = builder.readings_table()
        rejected = builder.rejected_table()
        partitions = sorted(batch.end)
        try:
            new_readings = {p: max(batch.end[p], self._readings_at.get(p, 0)) for p in partitions}
            self._commit_table(
                self._readings, readings, self._readings_at, new_readings, gaps=batch.gaps
            )
            self._readings_at.update(new_readings)
            failpoint("after-readings-commit")
            new_rejected = {p: max(batch.end[p], self._rejected_at.get(p, 0)) for p in partitions}
            self._commit_table(self._rejected, rejected, self._rejected_at, new_rejected)
            self._rejected_at.update(new_rejected)
        except FencedCommitError as exc:
            return _Outcome(batch, 0, 0, time.monotonic() - started, None, fenced=exc)
        failpoint("after-iceberg-commit")
        return _Outcome(
            batch, readings.num_rows, rejected.num_rows, time.monotonic() - started,
            builder.max_event_us,
        )  # fmt: skip

    def _commit_table(
        self,
        table: Table,
        data: pa.Table,
        at: dict[int, int],
        new: dict[int, int],
        gaps: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """Commit with offsets; an outage is waited out and the commit tried again.

        A commit that reached the catalog before the connection broke is not repeated:
        the retry finds the table's offsets moved and is fenced, and the consumer
        re-seeks from the table as after any fenced batch.
        """
        expected = {p: at.get(p) for p in new}
        self._retry(
            lambda: commit_with_offsets(
                table, data, topic=self.topic, expected=expected, new=new, gaps=gaps
            ),
            before_retry=table.refresh,
        )

    def _reseek(self) -> None:
        self._load_offsets()
        if self._consumer is None:
            return
        for partition in self._assigned:
            offset = self._resume_offset(partition)
            self._consumer.seek(TopicPartition(self.topic, partition, offset))
            self._sought(partition, offset)

    def _sought(self, partition: int, offset: int) -> None:
        """The consumer reads `partition` from `offset` (negative: the log's start)."""
        if offset >= 0:
            self._next_offset[partition] = offset
        else:
            self._next_offset.pop(partition, None)

    def _commit_kafka(self, ends: dict[int, int]) -> None:
        if self._consumer is None:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # lag reporting only; the table holds the truth
            log.debug("Kafka offset commit failed: %s", exc)

    def _update_lag(self) -> None:
        if self._consumer is None:
            return
        for partition in self._assigned:
            tp = TopicPartition(self.topic, partition)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except Exception as exc:  # watermarks are best effort
                log.debug("no watermarks for partition %d: %s", partition, exc)
                continue
            position = self._readings_at.get(partition, 0)
            self.metrics.lag.labels(self.topic, str(partition)).set(max(high - position, 0))


def refusal(
    error: KafkaError, settings: Settings, *, topic: str, group_id: str
) -> IngestError | None:
    """The error to stop with when Kafka refuses the ingest principal `topic` or the
    group `group_id` (no ACL allows it), naming what the platform grants; else None."""
    granted = (
        f"the stack grants `ingest` the topic {settings.kafka.topic!r} and groups whose ids "
        f"start with {settings.ingest.group_id!r} (LAKEHOUSE_INGEST_GROUP_ID, the default "
        "group); another topic gets its ACLs and group prefixes with "
        "lakehouse.stack.kafka_acl.grant_topic"
    )
    if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        refused, fix = f"the consumer group {group_id!r}", "consume in a group the platform grants"
    elif error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        refused, fix = f"the topic {topic!r}", "consume a topic the platform grants"
    else:
        return None
    return IngestError(
        f"Kafka refuses the ingest principal {refused} (no ACL allows it): {error.str()}",
        fix=f"{fix}: {granted}",
    )


def _is_fatal(error: KafkaError) -> bool:
    # A fatal error reaches a consumer's messages as code _FATAL, with fatal() false.
    return bool(error.fatal()) or error.code() == KafkaError._FATAL
