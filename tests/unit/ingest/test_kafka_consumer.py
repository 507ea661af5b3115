from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from ingest.kafka_consumer import refusal
from lakehouse.config import Settings


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "the consumer group 'fresh-x'"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "the topic 'bench-x'"),
    ],
)
def test_a_group_or_topic_no_acl_allows_is_refused_with_what_the_platform_grants(code, refused):
    settings = Settings()
    error = refusal(KafkaError(code, "authorization failed"), settings,
                    topic="bench-x", group_id="fresh-x")  # fmt: skip
    assert error is not None
    assert f"Kafka refuses the ingest principal {refused}" in error.message
    assert "authorization failed" in error.message
    assert error.fix is not None
    assert repr(settings.ingest.group_id) in error.fix
    assert repr(settings.kafka.topic) in error.fix
    assert "grant_topic" in error.fix


@pytest.mark.parametrize(
    "code", [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.UNKNOWN_TOPIC_OR_PART]
)
def test_other_errors_are_left_to_the_retries(code):
    assert refusal(KafkaError(code), Settings(), topic="t", group_id="g") is None
