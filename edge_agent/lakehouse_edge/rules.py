"""What a reading must look like: one set of rules for the agent and the platform.

The agent checks every reading with `problem` before it queues it, so it never sends
what the gateway would refuse; the gateway and the bronze consumers validate with the
same limits (`ingest.readings.Limits` takes its defaults from here). A broken reading
is counted by reason on the device (`lakehouse-edge status`), never queued.

Kept to the standard library and Python 3.9: this module runs on the Pi.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

MAX_IDENTIFIER_LENGTH = 128
MAX_UNIT_LENGTH = 32
MAX_ATTRS = 32
MAX_ATTRS_BYTES = 4096
# Event times before this are a clock that never synchronised, not history.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
# One Kafka message holds one uploaded batch; larger batches are answered 413.
MAX_ENVELOPE_BYTES = 1 << 20

Problem = Tuple[str, str]  # (reason code, detail)


def problem(reading: Dict[str, Any]) -> Optional[Problem]:
    """Why the gateway would refuse this (unstamped or stamped) reading, or None.

    `seq` and `ts` are checked when present: the agent stamps them itself."""
    metric = reading.get("metric")
    if metric is None:
        return ("missing_field", "metric")
    if not isinstance(metric, str):
        return ("wrong_type", "metric must be a string")
    if not metric or len(metric) > MAX_IDENTIFIER_LENGTH:
        return ("invalid_identifier", f"metric must have 1-{MAX_IDENTIFIER_LENGTH} characters")
    value = reading.get("value")
    if value is None:
        return ("missing_field", "value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ("wrong_type", f"value must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return ("non_finite_value", f"value is {value}")
    unit = reading.get("unit")
    if unit is not None:
        if not isinstance(unit, str):
            return ("wrong_type", "unit must be a string")
        if len(unit) > MAX_UNIT_LENGTH:
            return ("unit_too_long", f"unit has {len(unit)} characters")
    attrs = reading.get("attrs")
    if attrs is not None:
        found = _attrs_problem(attrs)
        if found:
            return found
    seq = reading.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        return ("wrong_type", "seq must be a non-negative integer")
    ts = reading.get("ts")
    if ts is not None:
        return _ts_problem(ts)
    return None


def _attrs_problem(attrs: Any) -> Optional[Problem]:
    if not isinstance(attrs, dict):
        return ("wrong_type", "attrs must be an object")
    if len(attrs) > MAX_ATTRS:
        return ("attrs_too_large", f"{len(attrs)} entries > {MAX_ATTRS}")
    size = 0
    for key, value in attrs.items():
        if not isinstance(value, str):
            return ("attrs_not_strings", f"attrs[{key!r}] is not a string")
        size += len(key) + len(value)
    if size > MAX_ATTRS_BYTES:
        return ("attrs_too_large", f"{size} bytes > {MAX_ATTRS_BYTES}")
    return None


def _ts_problem(ts: Any) -> Optional[Problem]:
    if not isinstance(ts, str):
        return ("wrong_type", "ts must be a string")
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ("invalid_timestamp", f"ts {ts[:64]!r} is not RFC 3339")
    if parsed.tzinfo is None:
        return ("ts_without_timezone", f"ts {ts[:64]!r} has no offset")
    if parsed < MIN_EVENT_TIME:
        return ("ts_too_old", f"ts {ts[:64]} is before {MIN_EVENT_TIME:%Y-%m-%d}")
    return None
