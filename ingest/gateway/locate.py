"""Find an envelope in Kafka: did a batch whose gateway died reach the topic?

Only needed when a reservation's gateway died between sending the batch and storing
its receipt (see receipts), so this reads every partition from shortly before the
reservation up to the end of the log, looking for the device's batch id.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from lakehouse.stack.kafka_acl import GATEWAY_LOCATE_GROUP_PREFIX

# Broker and PostgreSQL clocks may differ a little; search from this much earlier.
CLOCK_MARGIN_SECONDS = 60
SEARCH_TIMEOUT_SECONDS = 30


class LocateFailed(Exception):
    """Kafka did not answer the search in time."""


def find_envelope(
    config: dict[str, Any], topic: str, device_id: str, batch_id: str, since: float
) -> tuple[int, int] | None:
    """(partition, offset) of the device's envelope with `batch_id`, None if absent.

    `since` is the Unix time the batch was reserved. Blocking: call it off the loop.
    """
    consumer = Consumer({
        **config, "group.id": f"{GATEWAY_LOCATE_GROUP_PREFIX}{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 3,
    })  # fmt: skip
    try:
        return _search(consumer, topic, device_id.encode(), batch_id, since)
    finally:
        consumer.close()


def _search(
    consumer: Consumer, topic: str, key: bytes, batch_id: str, since: float
) -> tuple[int, int] | None:
    try:
        metadata = consumer.list_topics(topic, timeout=5)
        partitions = sorted(metadata.topics[topic].partitions)
        stamp = int((since - CLOCK_MARGIN_SECONDS) * 1000)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, stamp) for p in partitions], timeout=5
        )
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in partitions}  # fmt: skip
    except Exception as exc:  # any Kafka failure: the caller answers 503
        raise LocateFailed(str(exc)) from exc
    assignment = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
    if not assignment:
        return None
    needle = b'"batch_id":' + orjson.dumps(batch_id) + b","
    remaining = {tp.partition for tp in assignment}
    consumer.assign(assignment)
    deadline = time.monotonic() + SEARCH_TIMEOUT_SECONDS
    while remaining:
        if time.monotonic() > deadline:
            raise LocateFailed(f"searching {topic} took longer than {SEARCH_TIMEOUT_SECONDS} s")
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(partition or 0)
                    continue
                raise LocateFailed(str(error))
            if partition is None or offset is None:
                continue
            if offset >= ends[partition] - 1:
                remaining.discard(partition)
            value = message.value() or b""
            if message.key() == key and needle in value and _names(value, key, batch_id):
                return partition, offset
    return None


def _names(value: bytes, key: bytes, batch_id: str) -> bool:
    envelope = orjson.loads(value)
    return bool(envelope.get("device_id") == key.decode() and envelope.get("batch_id") == batch_id)
