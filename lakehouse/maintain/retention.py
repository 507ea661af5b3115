"""Retention: what the platform keeps for a while and then lets go.

- A failed transform run's branch stays for inspection, then is deleted.
- A branch a killed `reconcile` left behind is deleted after a few hours.
- Upload receipts are kept as long as an agent may still retry the batch.
- Kafka keeps messages for its retention time only: a partition whose unconsumed
  messages would expire soon is reported before anything is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lakehouse.branch_catalogs import TRANSFORM_PREFIX, reconcile_made_at
from lakehouse.errors import CatalogError
from lakehouse.nessie import NessieClient

log = logging.getLogger(__name__)

RECEIPTS_BATCH = 50_000
_FAILED_RUNS = """
select run_id, branch from transform.runs
where outcome in ('failed', 'error', 'abandoned') and branch is not null
  and coalesce(finished_at, started_at) < %s
"""
_DELETE_RECEIPTS = """
delete from registry.upload_batches where ctid = any(array(
    select ctid from registry.upload_batches where created_at < %s limit %s
))
"""


def expire_failed_branches(conn: Any, nessie: NessieClient, *, older_than: datetime) -> list[str]:
    """Delete the branches of runs that failed before `older_than`; their names."""
    rows = conn.execute(_FAILED_RUNS, (older_than,)).fetchall()
    live = {ref.name for ref in nessie.references()}
    deleted: list[str] = []
    for run_id, branch in rows:
        if not branch.startswith(TRANSFORM_PREFIX) or branch not in live:
            continue
        try:
            nessie.delete_branch(branch)
        except CatalogError as exc:
            log.warning("branch %s of failed run %s not deleted: %s", branch, run_id, exc)
            continue
        log.info("deleted branch %s of run %s (failed over the inspection window)", branch, run_id)
        deleted.append(branch)
    return deleted


def expire_reconcile_branches(nessie: NessieClient, *, older_than: datetime) -> list[str]:
    """Delete reconcile branches made before `older_than` (a reconcile that ran that
    long ago was killed before it cleaned up); their names."""
    deleted: list[str] = []
    for ref in nessie.references():
        made = reconcile_made_at(ref.name)
        if made is None or made >= older_than:
            continue
        try:
            nessie.delete_branch(ref.name)
        except CatalogError as exc:
            log.warning("branch %s left by reconcile not deleted: %s", ref.name, exc)
            continue
        log.info("deleted branch %s, left by a reconcile that did not finish", ref.name)
        deleted.append(ref.name)
    return deleted


def delete_old_receipts(conn: Any, *, older_than: datetime) -> int:
    """Delete upload receipts created before `older_than`, in batches; how many."""
    total = 0
    while True:
        with conn.transaction():
            deleted = int(conn.execute(_DELETE_RECEIPTS, (older_than, RECEIPTS_BATCH)).rowcount)
        total += deleted
        if deleted < RECEIPTS_BATCH:
            return total


@dataclass(frozen=True)
class PartitionRisk:
    """Unconsumed messages of one partition, and when the oldest of them expires."""

    topic: str
    partition: int
    committed: int
    earliest: int
    latest: int
    expires_at: datetime | None

    def describe(self, now: datetime) -> str:
        behind = self.latest - self.committed
        if self.committed < self.earliest:
            return (
                f"{self.topic}[{self.partition}]: offsets {self.committed} to {self.earliest - 1} "
                "expired before bronze consumed them"
            )
        left = (self.expires_at - now).total_seconds() / 3600 if self.expires_at else 0.0
        return (
            f"{self.topic}[{self.partition}]: {behind} message(s) not yet in bronze; the "
            f"oldest expires from Kafka in {left:.1f} h"
        )


def kafka_expiry_risks(
    kafka_config: dict[str, Any],
    topic: str,
    committed: dict[int, int],
    *,
    warning: timedelta,
    now: datetime | None = None,
) -> list[PartitionRisk]:
    """Partitions whose unconsumed messages expired or expire within `warning`."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    now = now or datetime.now(UTC)
    admin = AdminClient(kafka_config)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    retention_ms = int(configs["retention.ms"].value)
    consumer = Consumer({**kafka_config, "group.id": "lakehouse-maintain",
                         "enable.auto.commit": False})  # fmt: skip
    risks: list[PartitionRisk] = []
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        for partition in sorted(metadata.partitions):
            earliest, latest = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30
            )
            position = committed.get(partition, earliest)
            if position >= latest:
                continue
            if position < earliest:
                risks.append(PartitionRisk(topic, partition, position, earliest, latest, None))
                continue
            if retention_ms < 0:  # kept forever
                continue
            stamp = _timestamp_at(consumer, TopicPartition(topic, partition, position))
            if stamp is None:
                continue
            expires_at = stamp + timedelta(milliseconds=retention_ms)
            if expires_at - now < warning:
                risks.append(
                    PartitionRisk(topic, partition, position, earliest, latest, expires_at)
                )
    finally:
        consumer.close()
    return risks


def _timestamp_at(consumer: Any, position: Any) -> datetime | None:
    consumer.assign([position])
    message = consumer.poll(10)
    consumer.unassign()
    if message is None or message.error():
        return None
    _, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC)
