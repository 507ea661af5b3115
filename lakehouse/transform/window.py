"""Which bronze rows a transform run owns.

Bronze commits its Kafka offsets in the same snapshot as the rows (a table property per
topic), so the committed offsets of the branch a run works on bound exactly the rows it
can see. Silver records how far it got (`internal.bronze_progress`, published with silver
in one merge); a run takes, per partition, the offsets in (processed, committed]. Files
are committed whole, so a file's hash is either processed or not. Neither depends on
event time or on which consumer committed first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lakehouse.errors import TransformError

REGISTRY_STREAM = "registry"
PROJECT_STREAM = "project"
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PartitionRange:
    """Offsets (after, through] of one Kafka partition."""

    topic: str
    partition: int
    after: int
    through: int

    @property
    def stream(self) -> str:
        return kafka_stream(self.topic, self.partition)

    @property
    def is_empty(self) -> bool:
        return self.through <= self.after


@dataclass(frozen=True)
class BronzeWindow:
    """The bronze rows of one run, plus the versions of the registry and of the dbt
    project the reference tables (dimensions, seeds) were built from."""

    kafka: tuple[PartitionRange, ...] = ()
    files: tuple[str, ...] = ()
    registry: int = 0
    registry_changed: bool = False
    project: int = 0
    project_changed: bool = False
    # The run's clock: readings stamped later than this (plus the tolerance) are held
    # back, and those held back whose time has come are examined again.
    now: datetime | None = None
    held_back_due: bool = False

    @property
    def has_new_rows(self) -> bool:
        return bool(self.files) or any(not r.is_empty for r in self.kafka)

    @property
    def has_work(self) -> bool:
        return self.has_new_rows or self.registry_changed or self.held_back_due

    @property
    def references_changed(self) -> bool:
        """The reference tables must be rebuilt, and every row tested against them."""
        return self.registry_changed or self.project_changed

    @property
    def offsets_to_read(self) -> int:
        """Kafka offsets in the window (envelopes can hold several readings each)."""
        return sum(max(r.through - r.after, 0) for r in self.kafka)

    def as_dbt_var(self) -> dict[str, Any]:
        return {
            "kafka": [
                {"topic": r.topic, "partition": r.partition, "after": r.after, "through": r.through}
                for r in self.kafka
            ],
            "files": list(self.files),
            "registry": self.registry,
            "registry_changed": self.registry_changed,
            "project": self.project,
            "now": self.now.isoformat() if self.now else None,
        }


def kafka_stream(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def file_stream(sha256: str) -> str:
    return f"file:{sha256}"


def compute_window(
    *,
    committed: Mapping[str, Mapping[int, int]],
    progress: Mapping[str, int | None],
    file_batches: Iterable[str],
    registry: int,
    project: int = 0,
    full_refresh: bool = False,
) -> BronzeWindow:
    """The window from bronze's committed offsets and silver's recorded progress.

    `committed` maps topic → partition → next offset to consume; `progress` maps a
    stream (see kafka_stream/file_stream) to the last offset processed (None for files).
    """
    done = {} if full_refresh else dict(progress)
    ranges = []
    for topic in sorted(committed):
        if not _TOPIC.match(topic):
            raise TransformError(f"bronze holds offsets of an invalid topic name {topic!r}")
        for partition in sorted(committed[topic]):
            through = committed[topic][partition] - 1
            after = done.get(kafka_stream(topic, partition))
            after = -1 if after is None else after
            if through < after:
                raise TransformError(
                    f"silver has processed {topic}[{partition}] up to offset {after}, but "
                    f"bronze has committed only up to {through}: bronze was rewritten",
                    fix="rebuild every layer from bronze with `lakehouse transform --full-refresh`",
                )
            ranges.append(PartitionRange(topic, partition, after, through))
    files = []
    for sha in sorted(set(file_batches)):
        if not _SHA256.match(sha):
            raise TransformError(f"bronze holds a file batch id that is not a SHA-256: {sha!r}")
        if file_stream(sha) not in done:
            files.append(sha)
    return BronzeWindow(
        kafka=tuple(ranges),
        files=tuple(files),
        registry=registry,
        registry_changed=done.get(REGISTRY_STREAM) != registry,
        project=project,
        project_changed=done.get(PROJECT_STREAM) != project,
    )
