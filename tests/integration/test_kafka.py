"""Messages produced to the stack's Kafka come back intact, in order per partition."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from lakehouse.clients import kafka_config

pytestmark = pytest.mark.integration

MESSAGES = 1_000


def test_readings_topic_was_bootstrapped(stack, stack_settings):
    admin = AdminClient(kafka_config(stack_settings, "admin"))
    topics = admin.list_topics(timeout=10).topics
    assert stack_settings.kafka.topic in topics
    assert len(topics[stack_settings.kafka.topic].partitions) == stack_settings.kafka.partitions


def test_thousand_messages_round_trip_intact(stack_settings, topic_factory):
    """Produced as `simulate`, consumed as `ingest`: the principals the platform uses."""
    topic = topic_factory(partitions=3)
    sent = {f"key-{i}".encode(): os.urandom(16) + f"payload-{i}".encode() for i in range(MESSAGES)}
    producer = Producer(
        kafka_config(stack_settings, "simulate", acks="all", **{"enable.idempotence": True})
    )
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        kafka_config(
            stack_settings,
            "ingest",
            **{
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    offsets: dict[int, list[int]] = {}
    try:
        for _ in range(600):
            if len(received) == MESSAGES:
                break
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None
                received[message.key()] = message.value()
                offsets.setdefault(message.partition(), []).append(message.offset())
    finally:
        consumer.close()

    assert received == sent
    assert sum(len(o) for o in offsets.values()) == MESSAGES
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets)))
