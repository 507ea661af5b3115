"""The shape of the Kafka ACLs and MinIO policies each principal gets."""

from __future__ import annotations

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from lakehouse.config import Settings
from lakehouse.credentials import KAFKA_PRINCIPALS, MINIO_KEYS
from lakehouse.stack.kafka_acl import GATEWAY_LOCATE_GROUP_PREFIX, platform_bindings, topic_bindings
from lakehouse.stack.minio_access import policies


def _grants(bindings) -> set[tuple]:
    return {
        (b.principal, b.restype, b.name, b.resource_pattern_type, b.operation) for b in bindings
    }


def test_each_principal_gets_only_its_operations_on_the_topic():
    grants = _grants(topic_bindings("readings", ["bronze-readings"]))
    topic = (ResourceType.TOPIC, "readings", ResourcePatternType.LITERAL)
    assert grants == {
        ("User:gateway", *topic, AclOperation.WRITE),
        ("User:gateway", *topic, AclOperation.DESCRIBE),
        ("User:gateway", *topic, AclOperation.READ),
        ("User:simulate", *topic, AclOperation.WRITE),
        ("User:simulate", *topic, AclOperation.DESCRIBE),
        ("User:ingest", *topic, AclOperation.READ),
        ("User:ingest", *topic, AclOperation.DESCRIBE),
        ("User:ingest", ResourceType.GROUP, "bronze-readings", ResourcePatternType.PREFIXED,
         AclOperation.READ),
    }  # fmt: skip
    assert not any(principal == "User:admin" for principal, *_ in grants)


def test_the_gateway_may_only_look_up_its_locate_groups():
    assert _grants(platform_bindings()) == {
        ("User:gateway", ResourceType.GROUP, GATEWAY_LOCATE_GROUP_PREFIX,
         ResourcePatternType.PREFIXED, AclOperation.DESCRIBE),
    }  # fmt: skip
    assert "admin" in KAFKA_PRINCIPALS


def _object_grants(policy) -> tuple[set[str], set[str]]:
    statement = next(s for s in policy["Statement"] if any("/" in r.split(":::")[1]
                                                          for r in s["Resource"]))  # fmt: skip
    return set(statement["Action"]), set(statement["Resource"])


def test_every_minio_key_is_scoped_to_its_job(tmp_path):
    documents = policies(Settings(home=tmp_path))
    assert set(documents) == set(MINIO_KEYS)
    warehouse = "arn:aws:s3:::lakehouse/warehouse/*"
    actions, resources = _object_grants(documents["ingest"])
    assert resources == {"arn:aws:s3:::lakehouse/warehouse/*bronze/*"}
    assert "s3:PutObject" in actions
    actions, resources = _object_grants(documents["reader"])
    assert (actions, resources) == ({"s3:GetObject"}, {warehouse})
    for writer in ("nessie", "trino"):
        actions, resources = _object_grants(documents[writer])
        assert resources == {warehouse} and {"s3:PutObject", "s3:DeleteObject"} <= actions
    for document in documents.values():
        granted = {a for s in document["Statement"] for a in s["Action"]}
        assert not any(a.startswith(("admin:", "s3:PutBucket", "s3:DeleteBucket"))
                       for a in granted)  # fmt: skip
