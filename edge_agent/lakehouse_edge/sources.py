"""Where readings come from: Pi CPU temperature, DS18B20 1-wire probes, a file being
appended to (JSONL or CSV), a command's output, or a simulator.

Every source has a `name` and `read()`. What a source throws away itself (a probe's
power-on value, a line that does not parse) it counts by reason in `discarded`, for
`lakehouse-edge status`. A stateful source (the file tail) also has a `state()` that
the queue stores in the same transaction as the readings, and `commit()`/`rollback()`
to follow whether that transaction happened.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import random
import subprocess
import time
from abc import ABC, abstractmethod
from typing import Any, Dict, Iterator, List, Optional

Reading = Dict[str, Any]

log = logging.getLogger(__name__)

# A DS18B20 reports exactly 85 °C after a power-on reset, before its first conversion.
DS18B20_POWER_ON_MILLIDEGREES = 85000


class Source(ABC):
    name = "source"

    def __init__(self) -> None:
        self.discarded: Dict[str, int] = {}

    @abstractmethod
    def read(self) -> List[Reading]:
        """The readings that are new since the last call."""

    def take_discarded(self) -> Dict[str, int]:
        taken, self.discarded = self.discarded, {}
        return taken

    def _discard(self, reason: str) -> None:
        self.discarded[reason] = self.discarded.get(reason, 0) + 1

    def state(self) -> Optional[str]:
        """Where the last read got to, to store with its readings (None: stateless)."""
        return None

    # Hooks a stateful source overrides; a stateless one has nothing to keep.
    def commit(self) -> None:  # noqa: B027
        """The readings of the last read are queued."""

    def rollback(self) -> None:  # noqa: B027
        """The readings of the last read were not queued: read them again next time."""


class CpuTemperature(Source):
    name = "cpu_temperature"

    def __init__(self, path: str = "/sys/class/thermal/thermal_zone0/temp") -> None:
        super().__init__()
        self.path = path

    def read(self) -> List[Reading]:
        with open(self.path) as handle:
            return [
                {"metric": "cpu_temperature", "value": int(handle.read()) / 1000.0, "unit": "C"}
            ]


class DS18B20(Source):
    """1-wire temperature probes; a probe whose CRC fails is skipped (read next time)."""

    name = "ds18b20"

    def __init__(self, root: str = "/sys/bus/w1/devices") -> None:
        super().__init__()
        self.root = root

    def read(self) -> List[Reading]:
        readings = []
        for probe in sorted(glob.glob(os.path.join(self.root, "28-*", "w1_slave"))):
            with open(probe) as handle:
                lines = handle.read().splitlines()
            if not (len(lines) >= 2 and lines[0].endswith("YES") and "t=" in lines[1]):
                continue
            millidegrees = int(lines[1].rsplit("t=", 1)[1])
            if millidegrees == DS18B20_POWER_ON_MILLIDEGREES:
                self._discard("sensor_power_on_value")
                continue
            serial = os.path.basename(os.path.dirname(probe))
            readings.append({"metric": "temperature", "value": millidegrees / 1000.0,
                             "unit": "C", "attrs": {"probe": serial}})  # fmt: skip
        return readings


class Command(Source):
    """A command whose output is one number, or one JSON reading per line."""

    def __init__(self, argv: List[str], metric: str, unit: str = "") -> None:
        super().__init__()
        self.argv = argv
        self.metric = metric
        self.unit = unit
        self.name = f"command:{metric}"

    def read(self) -> List[Reading]:
        out = subprocess.run(
            self.argv, capture_output=True, text=True, timeout=30, check=True
        ).stdout
        readings: List[Reading] = []
        for line in out.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("{"):
                    readings.append(json.loads(line))
                    continue
                reading: Reading = {"metric": self.metric, "value": float(line)}
            except ValueError:
                self._discard("invalid_line")
                continue
            if self.unit:
                reading["unit"] = self.unit
            readings.append(reading)
        return readings


class FileTail(Source):
    """Complete new lines of a JSONL or CSV file.

    The position is the file's inode and byte offset, stored with the queued readings,
    so a restart reads on from there. Another inode at the path means the file was
    rotated: the rest of the old one is read first if it is still beside it under
    another name (`readings.jsonl.1`, …), then the new one from the start. A file
    shorter than the position was truncated and is read from the start, and so is one
    whose first bytes changed (a new file that reused the old one's inode number).
    """

    HEAD_BYTES = 64

    def __init__(self, path: str, state: Optional[str] = None) -> None:
        super().__init__()
        self.path = path
        self.name = self.state_name(path)
        self.inode: Optional[int] = None
        self.position = 0
        self.header: List[str] = []
        self.head = ""  # hex of the file's first bytes, as far as they were read
        if state:
            saved = json.loads(state)
            self.inode, self.position = saved["inode"], saved["position"]
            self.header, self.head = saved.get("header", []), saved.get("head", "")
        self._committed = self._snapshot()

    @staticmethod
    def state_name(path: str) -> str:
        return f"file:{os.path.abspath(path)}"

    def _snapshot(self) -> Dict[str, Any]:
        return {"inode": self.inode, "position": self.position, "header": list(self.header),
                "head": self.head}  # fmt: skip

    def state(self) -> Optional[str]:
        return json.dumps(self._snapshot())

    def commit(self) -> None:
        self._committed = self._snapshot()

    def rollback(self) -> None:
        saved = self._committed
        self.inode, self.position = saved["inode"], saved["position"]
        self.header, self.head = list(saved["header"]), saved["head"]

    def read(self) -> List[Reading]:
        try:
            current = os.stat(self.path)
        except OSError:
            return []
        readings: List[Reading] = []
        if self.inode is not None and current.st_ino != self.inode:
            rotated = self._rotated_file()
            if rotated is not None:
                readings += self._read_from(rotated, final=True)
            else:
                log.warning("%s was replaced and its old file is gone; reading the new one "
                            "from the start", self.path)  # fmt: skip
            self.position, self.header = 0, []
            self.head = ""
        elif current.st_size < self.position or not self._same_head():
            log.warning("%s was truncated or replaced; reading it from the start", self.path)
            self.position, self.header, self.head = 0, [], ""
        self.inode = current.st_ino
        readings += self._read_from(self.path, final=False)
        if len(self.head) < 2 * self.HEAD_BYTES:  # hex: two characters a byte
            self.head = self._first_bytes(self.HEAD_BYTES)
        return readings

    def _first_bytes(self, limit: int) -> str:
        with open(self.path, "rb") as handle:
            return handle.read(min(limit, self.HEAD_BYTES)).hex()

    def _same_head(self) -> bool:
        if not self.head:
            return True
        return self._first_bytes(len(self.head) // 2) == self.head

    def _rotated_file(self) -> Optional[str]:
        folder = os.path.dirname(os.path.abspath(self.path))
        stem = os.path.basename(self.path)
        for candidate in sorted(glob.glob(os.path.join(folder, glob.escape(stem) + "?*"))):
            try:
                if os.stat(candidate).st_ino == self.inode:
                    return candidate
            except OSError:
                continue
        return None

    def _read_from(self, path: str, *, final: bool) -> List[Reading]:
        """Lines from the position on. A last line without its newline is still being
        written, unless the file is `final` (rotated away: nobody writes it any more)."""
        readings: List[Reading] = []
        with open(path, "rb") as handle:
            handle.seek(self.position)
            for raw in handle:
                if not raw.endswith(b"\n") and not final:
                    break
                self.position += len(raw)
                readings.extend(self._parse(raw.decode("utf-8", "replace")))
        return readings

    def _parse(self, line: str) -> Iterator[Reading]:
        line = line.strip()
        if not line:
            return
        try:
            if self.path.endswith(".csv"):
                row = next(csv.reader([line]))
                if not self.header:
                    self.header = row
                    return
                record = dict(zip(self.header, row))
                reading: Reading = {"metric": record["metric"], "value": float(record["value"])}
                if record.get("unit"):
                    reading["unit"] = record["unit"]
            else:
                reading = json.loads(line)
                if not isinstance(reading, dict):
                    raise ValueError("not an object")
        except (KeyError, ValueError):
            self._discard("invalid_line")
            return
        yield reading


class Simulator(Source):
    """A sensor with a diurnal cycle and noise; one reading per metric per call."""

    name = "simulator"

    def __init__(self, metrics: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.metrics = [f"sim_{i}" for i in range(metrics)]
        self.rng = random.Random(seed)

    def read(self) -> List[Reading]:
        hour = time.gmtime().tm_hour
        base = 20 + 5 * math.sin(2 * math.pi * (hour - 9) / 24)
        return [{"metric": m, "value": round(base + self.rng.gauss(0, 0.5), 3), "unit": "C"}
                for m in self.metrics]  # fmt: skip
