"""Kafka: every client authenticates, and each principal may do only its own job."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from lakehouse.clients import kafka_config
from lakehouse.stack.kafka_acl import GATEWAY_LOCATE_GROUP_PREFIX

pytestmark = pytest.mark.integration


def _produce_error(config: dict, topic: str) -> int | None:
    """The delivery error code of one message (None when it was acknowledged)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 10_000, "log_level": 0})
    producer.produce(topic, key=b"k", value=b"v", on_delivery=lambda e, _m: errors.append(e))
    producer.flush(20)
    assert len(errors) == 1
    return None if errors[0] is None else errors[0].code()


def _consume_error(config: dict, topic: str, group: str) -> int | None:
    """The first error a group member meets on `topic` (None if it reads the message)."""
    consumer = Consumer(
        {**config, "group.id": group, "auto.offset.reset": "earliest", "log_level": 0}
    )
    try:
        consumer.subscribe([topic])
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            return None if error is None else error.code()
        raise AssertionError("neither a message nor an error within 30 s")
    finally:
        consumer.close()


def _refusals(config: dict) -> set[int]:
    """The errors a client meets asking for metadata; it must get no answer."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "log_level": 0, "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)
    return {error.code() for error in errors}


@pytest.fixture
def topic(topic_factory, stack_settings) -> str:
    name = topic_factory(partitions=1)
    assert _produce_error(kafka_config(stack_settings, "simulate"), name) is None
    return name


def test_a_client_without_credentials_is_refused(stack_settings):
    plain = {"bootstrap.servers": f"{stack_settings.host}:{stack_settings.kafka.port}"}
    # The broker drops a connection that does not start with a SASL handshake.
    assert KafkaError._ALL_BROKERS_DOWN in _refusals(plain)


def test_a_wrong_password_is_refused(stack_settings):
    config = kafka_config(stack_settings, "gateway")
    config["sasl.password"] = "not-" + config["sasl.password"]
    assert KafkaError._AUTHENTICATION in _refusals(config)


def test_an_unknown_principal_is_refused(stack_settings):
    config = kafka_config(stack_settings, "gateway")
    config["sasl.username"] = "mallory"
    assert KafkaError._AUTHENTICATION in _refusals(config)


def test_the_ingest_principal_consumes_but_cannot_produce(stack_settings, topic):
    ingest = kafka_config(stack_settings, "ingest")
    assert _consume_error(ingest, topic, f"g-{topic}") is None
    assert _produce_error(ingest, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_ingest_principal_uses_only_its_groups(stack_settings, topic):
    ingest = kafka_config(stack_settings, "ingest")
    assert _consume_error(ingest, topic, "someone-else") == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_the_gateway_produces_but_cannot_consume(stack_settings, topic):
    gateway = kafka_config(stack_settings, "gateway")
    assert _produce_error(gateway, topic) is None
    # Not even under the prefix its locate clients may look up.
    for group in (f"g-{topic}", f"{GATEWAY_LOCATE_GROUP_PREFIX}{uuid.uuid4().hex}"):
        assert _consume_error(gateway, topic, group) == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_simulate_produces_but_cannot_consume(stack_settings, topic):
    simulate = kafka_config(stack_settings, "simulate")
    assert _consume_error(simulate, topic, f"g-{topic}") in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


def test_no_principal_writes_to_a_topic_without_grants(stack_settings, unique):
    admin = AdminClient(kafka_config(stack_settings, "admin"))
    name = f"ungranted-{unique}"
    admin.create_topics([NewTopic(name, num_partitions=1)])[name].result(30)
    try:
        for principal in ("gateway", "simulate", "ingest"):
            config = kafka_config(stack_settings, principal)
            assert _produce_error(config, name) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        admin.delete_topics([name])[name].result(30)


@pytest.mark.parametrize("principal", ["gateway", "ingest", "simulate"])
def test_only_admin_creates_topics(stack_settings, unique, principal):
    admin = AdminClient(kafka_config(stack_settings, principal))
    name = f"forbidden-{unique}"
    with pytest.raises(KafkaException) as raised:
        admin.create_topics([NewTopic(name, num_partitions=1)])[name].result(30)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
