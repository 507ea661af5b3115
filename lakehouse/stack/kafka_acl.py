"""Who may do what on Kafka: the ACLs of each principal, per topic.

Every client authenticates with SASL/SCRAM and the broker denies whatever no ACL
allows. `admin` is the broker's super user and only bootstrap and operators use it.

- `gateway` produces readings to the topic. It may also fetch the topic (by explicit
  partition and offset, never as a group member) to find out whether a batch whose
  gateway died reached Kafka: for that its clients need to look up (DESCRIBE) groups
  named `gateway-locate-…`, but it cannot join any group or commit offsets.
- `ingest` consumes the topic, in groups whose ids start with the configured prefixes.
- `simulate` produces to the topic, for load generation and demos.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from lakehouse.errors import StackError

ADMIN_PRINCIPAL = "admin"
# Group ids of the gateway's locate clients (they never join the group).
GATEWAY_LOCATE_GROUP_PREFIX = "gateway-locate-"
_TOPIC_OPERATIONS = {
    "gateway": (AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.READ),
    "ingest": (AclOperation.READ, AclOperation.DESCRIBE),
    "simulate": (AclOperation.WRITE, AclOperation.DESCRIBE),
}


def _allow(
    resource: ResourceType,
    name: str,
    pattern: ResourcePatternType,
    principal: str,
    operation: AclOperation,
) -> AclBinding:
    return AclBinding(
        resource, name, pattern, f"User:{principal}", "*", operation, AclPermissionType.ALLOW
    )


def topic_bindings(topic: str, group_prefixes: Iterable[str]) -> list[AclBinding]:
    """The ACLs that let the platform's principals do their jobs on `topic`."""
    bindings = [
        _allow(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, operation)
        for principal, operations in _TOPIC_OPERATIONS.items()
        for operation in operations
    ]
    bindings.extend(
        _allow(ResourceType.GROUP, prefix, ResourcePatternType.PREFIXED, "ingest",
               AclOperation.READ)
        for prefix in group_prefixes
    )  # fmt: skip
    return bindings


def platform_bindings() -> list[AclBinding]:
    """The ACLs that belong to no one topic."""
    return [
        _allow(ResourceType.GROUP, GATEWAY_LOCATE_GROUP_PREFIX, ResourcePatternType.PREFIXED,
               "gateway", AclOperation.DESCRIBE),
    ]  # fmt: skip


def _filter(binding: AclBinding) -> AclBindingFilter:
    """The filter that matches exactly `binding`."""
    b = binding
    return AclBindingFilter(
        b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
        b.permission_type,
    )  # fmt: skip


def grant(admin: AdminClient, bindings: list[AclBinding], timeout: float = 30) -> None:
    """Create ACLs (creating an existing ACL again changes nothing), and return once the
    broker enforces them: it authorizes from its copy of the cluster metadata, which
    takes the new ACLs a moment after the controller accepted them."""
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    pending = list(bindings)
    while pending:
        pending = [
            b for b in pending
            if not admin.describe_acls(_filter(b), request_timeout=timeout).result(timeout)
        ]  # fmt: skip
        if pending and time.monotonic() > deadline:
            raise StackError(f"Kafka accepted {len(pending)} ACL(s) but does not show them")
        if pending:
            time.sleep(0.1)


def grant_topic(
    admin: AdminClient, topic: str, group_prefixes: Iterable[str], timeout: float = 30
) -> None:
    """Let the principals do their jobs on `topic`, in groups starting with the prefixes."""
    grant(admin, topic_bindings(topic, group_prefixes), timeout)


def revoke_topic(
    admin: AdminClient, topic: str, group_prefixes: Iterable[str], timeout: float = 30
) -> None:
    """Delete the ACLs `grant_topic` created (for a topic that is being deleted).

    Give only the group prefixes that were granted for this topic alone: an ACL that
    another topic's consumers rely on would go too.
    """
    filters = [_filter(b) for b in topic_bindings(topic, group_prefixes)]
    for future in admin.delete_acls(filters, request_timeout=timeout).values():
        future.result(timeout=timeout)
