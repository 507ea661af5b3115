"""Kafka offsets kept inside the Iceberg table, committed atomically with the data.

The next offset to consume of each partition lives in a table property
(`lakehouse.kafka.offsets.<topic>`, a JSON object) and is copied into the snapshot
summary of the commit that wrote the data. Properties survive compaction and snapshot
expiry, which rewrite snapshots but not properties. Every commit appends a snapshot
(empty if there is no data), so the catalog checks that nobody committed in between:
the offsets read before the commit are exactly the ones it replaces.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, ValidationException

from lakehouse.contracts import KAFKA_GAPS_PROPERTY_PREFIX, KAFKA_OFFSETS_PROPERTY_PREFIX
from lakehouse.errors import FencedCommitError, IngestError
from lakehouse.failpoints import failpoint

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 20


def offsets_key(topic: str) -> str:
    return f"{KAFKA_OFFSETS_PROPERTY_PREFIX}{topic}"


def gaps_key(topic: str) -> str:
    return f"{KAFKA_GAPS_PROPERTY_PREFIX}{topic}"


def read_gaps(table: Table, topic: str) -> list[dict[str, Any]]:
    """Offset ranges of the topic that expired before they were consumed, as recorded:
    [{"partition": p, "from": first, "to": end (exclusive), "detected_at": iso}, …]."""
    raw = table.properties.get(gaps_key(topic))
    return list(json.loads(raw)) if raw else []


def read_offsets(table: Table, topic: str) -> dict[int, int]:
    """Next offset to consume per partition, as committed in the table."""
    raw = table.properties.get(offsets_key(topic))
    if not raw:
        return {}
    return {int(partition): int(offset) for partition, offset in json.loads(raw).items()}


def commit_with_offsets(
    table: Table,
    data: pa.Table,
    *,
    topic: str,
    expected: Mapping[int, int | None],
    new: Mapping[int, int],
    summary: Mapping[str, str] | None = None,
    gaps: Mapping[int, tuple[int, int]] | None = None,
) -> int:
    """Append `data` and advance the offsets of `new` in one snapshot.

    `gaps` are offset ranges [first, end) per partition that expired from Kafka before
    they were consumed: they are added to the table's record of gaps in the same commit.

    `expected` holds, per partition of the batch, the offset the writer believes the
    table holds (None: no offset yet). If the table holds anything else, another
    consumer committed those partitions since: FencedCommitError, and nothing is written.
    Conflicts with other writers are retried. Returns the number of attempts.
    """
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        current = read_offsets(table, topic)
        for partition, offset in expected.items():
            if current.get(partition) != offset:
                raise FencedCommitError(
                    f"refusing commit to {'.'.join(table.name())}: partition {partition} of "
                    f"{topic} is at offset {current.get(partition)} in the table, "
                    f"but this batch starts from {offset}",
                    fix="the partition was reassigned; the consumer re-seeks from the table",
                )
        merged = {**current, **new}
        encoded = json.dumps({str(p): o for p, o in sorted(merged.items())}, separators=(",", ":"))
        properties = {offsets_key(topic): encoded}
        if gaps:
            now = datetime.now(UTC).isoformat()
            recorded = read_gaps(table, topic) + [
                {"partition": p, "from": first, "to": end, "detected_at": now}
                for p, (first, end) in sorted(gaps.items())
            ]
            properties[gaps_key(topic)] = json.dumps(recorded, separators=(",", ":"))
        try:
            with table.transaction() as tx:
                tx.set_properties(properties)
                tx.append(data, snapshot_properties={**properties, **(summary or {})})
                # Data files are written, the catalog commit has not happened yet.
                failpoint("during-commit")
            return attempt
        except (CommitFailedException, ValidationException) as exc:
            log.info("commit conflict on %s (attempt %d): %s", table.name(), attempt, exc)
            time.sleep(min(0.05 * attempt, 1.0))
            table.refresh()
    raise IngestError(
        f"gave up committing to {'.'.join(table.name())} after {MAX_COMMIT_ATTEMPTS} conflicts",
        fix="another writer commits to the table continuously; reduce concurrent writers",
    )
