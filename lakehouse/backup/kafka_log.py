"""Unconsumed Kafka messages: exported from bronze's committed offsets to the end, and
replayed into a new cluster at the very offsets they had.

Offsets matter because bronze keeps its position per partition inside the table, and
receipts name the offset of the envelope they acknowledged: a restored stack must find
each message where those say it is. A fresh topic is filled with padding records up to
the first exported offset, which are then deleted (the log then starts there), before
the exported messages are produced in order by an idempotent producer; every delivery is
checked to land at its original offset.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lakehouse.backup.archive import KafkaPartition
from lakehouse.errors import BackupError

POLL_SECONDS = 1.0
STALL_SECONDS = 120.0
TIMEOUT = 30.0
# Short-lived clients: only what fails the operation is reported, and that as an error.
QUIET = {"log_level": 2}
PADDING_HEADER = "lakehouse-restore-padding"
Progress = Callable[[str], None]


def partition_file(directory: Path, topic: str, partition: int) -> Path:
    return directory / f"{topic}-{partition}.jsonl"


def log_ends(config: Mapping[str, Any], topic: str) -> dict[int, int]:
    """Per partition, the offset the next message will get: where an export stops."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, **QUIET, "group.id": "lakehouse-backup",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
        if metadata is None or metadata.error is not None:
            problem = "it does not exist" if metadata is None else metadata.error
            raise BackupError(f"Kafka topic {topic!r} cannot be read: {problem}")
        return {
            partition: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=TIMEOUT, cached=False
            )[1]
            for partition in sorted(metadata.partitions)
        }
    finally:
        consumer.close()


def export(
    config: Mapping[str, Any],
    topic: str,
    committed: Mapping[int, int],
    ends: Mapping[int, int],
    directory: Path,
    progress: Progress = lambda _: None,
) -> list[KafkaPartition]:
    """Write the messages of `topic` from `committed` (per partition; the beginning where
    none) up to `ends`; one file per partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, **QUIET, "group.id": "lakehouse-backup",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        ranges: list[KafkaPartition] = []
        for partition, end in sorted(ends.items()):
            low, _ = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=TIMEOUT, cached=False
            )
            position = committed.get(partition, 0)
            first = min(max(position, low), end)
            ranges.append(KafkaPartition(partition=partition, first=first, end=end,
                                         committed=position))  # fmt: skip
        wanted = [r for r in ranges if r.end > r.first]
        files = {r.partition: partition_file(directory, topic, r.partition).open("w")
                 for r in ranges}  # fmt: skip
        try:
            if wanted:
                consumer.assign([TopicPartition(topic, r.partition, r.first) for r in wanted])
                _drain(consumer, {r.partition: r for r in wanted}, files, progress)
        finally:
            for handle in files.values():
                handle.close()
        return ranges
    finally:
        consumer.close()


def _drain(consumer: Any, wanted: dict[int, KafkaPartition], files: dict[int, Any],
           progress: Progress) -> None:  # fmt: skip
    expected = {p: r.first for p, r in wanted.items()}
    total, written = sum(r.end - r.first for r in wanted.values()), 0
    last_progress = time.monotonic()
    while any(expected[p] < r.end for p, r in wanted.items()):
        message = consumer.poll(POLL_SECONDS)
        if message is None:
            if time.monotonic() - last_progress > STALL_SECONDS:
                raise BackupError(f"Kafka gave no message for {STALL_SECONDS:.0f} s while "
                                  f"{total - written} were still to be exported")  # fmt: skip
            continue
        if message.error() is not None:
            raise BackupError(f"reading Kafka failed: {message.error()}")
        partition, offset = message.partition(), message.offset()
        if partition not in wanted or offset >= wanted[partition].end:
            continue
        files[partition].write(json.dumps(_record(message)) + "\n")
        expected[partition] = offset + 1
        written += 1
        last_progress = time.monotonic()
        if written % 10_000 == 0:
            progress(f"Kafka: {written:,} of {total:,} messages exported")


def _record(message: Any) -> dict[str, Any]:
    _, timestamp = message.timestamp()
    return {
        "offset": message.offset(),
        "timestamp": timestamp,
        "key": _encode(message.key()),
        "value": _encode(message.value()),
        "headers": [[name, _encode(value)] for name, value in (message.headers() or [])],
    }


def _encode(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def read(directory: Path, topic: str, partition: int) -> Iterator[dict[str, Any]]:
    path = partition_file(directory, topic, partition)
    with path.open() as handle:
        for line in handle:
            yield json.loads(line)


def replay(
    config: Mapping[str, Any],
    topic: str,
    partitions: list[KafkaPartition],
    directory: Path,
    progress: Progress = lambda _: None,
) -> int:
    """Put the exported messages back at their offsets in a topic that holds none yet;
    the number of messages replayed."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

    admin = AdminClient(dict(config))
    metadata = admin.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise BackupError(f"Kafka topic {topic!r} does not exist in the restored stack")
    needed = max((p.partition for p in partitions), default=-1) + 1
    if len(metadata.partitions) < needed:
        admin.create_partitions([NewPartitions(topic, needed)])[topic].result(TIMEOUT)
    consumer = Consumer({**config, **QUIET, "group.id": "lakehouse-restore",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        for p in partitions:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p.partition), timeout=TIMEOUT, cached=False
            )
            if high != 0:
                raise BackupError(
                    f"{topic}[{p.partition}] already holds messages (ends at {high}): a "
                    "restore puts messages back at their offsets only in a new topic",
                    fix="restore into a new home",
                )
    finally:
        consumer.close()
    producer = _Producer(Producer({
        **config, "enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4",
        "batch.num.messages": 10_000, "queue.buffering.max.messages": 200_000,
    }))  # fmt: skip
    replayed = 0
    for p in partitions:
        _pad(producer, topic, p.partition, p.first, progress)
        if p.first > 0:
            futures = admin.delete_records([TopicPartition(topic, p.partition, p.first)])
            for future in futures.values():
                future.result(TIMEOUT)
        for record in read(directory, topic, p.partition):
            producer.send(
                topic, p.partition, record["offset"], key=_decode(record["key"]),
                value=_decode(record["value"]), timestamp=record["timestamp"],
                headers=[(name, _decode(value)) for name, value in record["headers"]],
            )  # fmt: skip
            replayed += 1
        producer.flush()
        if producer.next_offset.get(p.partition, p.first) != p.end:
            raise BackupError(
                f"{topic}[{p.partition}]: {p.end - p.first} messages exported, but the "
                f"restored partition ends at {producer.next_offset.get(p.partition)}"
            )
        if p.end > p.first:
            progress(f"Kafka: {topic}[{p.partition}] restored at offsets {p.first} to {p.end - 1}")
    return replayed


def _pad(producer: _Producer, topic: str, partition: int, count: int, progress: Progress) -> None:
    for offset in range(count):
        producer.send(topic, partition, offset, key=None, value=b"", timestamp=None,
                      headers=[(PADDING_HEADER, b"1")])  # fmt: skip
        if (offset + 1) % 1_000_000 == 0:
            progress(f"Kafka: {topic}[{partition}] {offset + 1:,} of {count:,} offsets skipped")
    producer.flush()


class _Producer:
    """Produces in order and checks that each message landed at the offset it must have."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.next_offset: dict[int, int] = {}
        self.error: str | None = None

    def send(self, topic: str, partition: int, offset: int, *, key: bytes | None,
             value: bytes | None, timestamp: int | None,
             headers: list[tuple[str, bytes | None]]) -> None:  # fmt: skip
        def delivered(err: Any, message: Any) -> None:
            if err is not None:
                self.error = self.error or f"{topic}[{partition}]: {err}"
            elif message.offset() != offset:
                self.error = self.error or (
                    f"{topic}[{partition}]: offset {offset} landed at {message.offset()}"
                )
            else:
                self.next_offset[partition] = offset + 1

        extra = {} if timestamp is None else {"timestamp": timestamp}
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, partition=partition,
                                      headers=headers, on_delivery=delivered, **extra)  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.5)
        self.producer.poll(0)
        if self.error:
            raise BackupError(f"replaying Kafka failed: {self.error}")

    def flush(self) -> None:
        remaining = self.producer.flush(TIMEOUT * 4)
        if remaining:
            raise BackupError(f"{remaining} Kafka messages were not acknowledged")
        if self.error:
            raise BackupError(f"replaying Kafka failed: {self.error}")
