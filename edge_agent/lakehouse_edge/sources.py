"""Where readings come from: Pi CPU temperature, DS18B20 1-wire probes, a file being
appended to (JSONL or CSV), a command's output, or a simulator."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import random
import subprocess
import time
from typing import Any, Dict, Iterator, List

Reading = Dict[str, Any]


def cpu_temperature(path: str = "/sys/class/thermal/thermal_zone0/temp") -> List[Reading]:
    with open(path) as handle:
        return [{"metric": "cpu_temperature", "value": int(handle.read()) / 1000.0, "unit": "C"}]


def ds18b20(root: str = "/sys/bus/w1/devices") -> List[Reading]:
    readings = []
    for probe in sorted(glob.glob(os.path.join(root, "28-*", "w1_slave"))):
        with open(probe) as handle:
            lines = handle.read().splitlines()
        if len(lines) >= 2 and lines[0].endswith("YES") and "t=" in lines[1]:
            value = int(lines[1].rsplit("t=", 1)[1]) / 1000.0
            serial = os.path.basename(os.path.dirname(probe))
            readings.append({"metric": "temperature", "value": value, "unit": "C",
                             "attrs": {"probe": serial}})  # fmt: skip
    return readings


def command(argv: List[str], metric: str, unit: str = "") -> List[Reading]:
    """Run a command whose output is one number (or one JSON reading per line)."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    readings: List[Reading] = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            readings.append(json.loads(line))
        else:
            reading: Reading = {"metric": metric, "value": float(line)}
            if unit:
                reading["unit"] = unit
            readings.append(reading)
    return readings


class FileTail:
    """New lines of a JSONL or CSV file since the last call (position kept in memory)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.position = 0
        self.header: List[str] = []

    def read(self) -> List[Reading]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if size < self.position:  # rotated or truncated
            self.position = 0
        readings: List[Reading] = []
        with open(self.path) as handle:
            handle.seek(self.position)
            for line in handle:
                if not line.endswith("\n"):
                    break  # a half-written line: read it next time
                self.position += len(line.encode())
                readings.extend(self._parse(line))
        return readings

    def _parse(self, line: str) -> Iterator[Reading]:
        line = line.strip()
        if not line:
            return
        if self.path.endswith(".csv"):
            row = next(csv.reader([line]))
            if not self.header:
                self.header = row
                return
            record = dict(zip(self.header, row))
            yield {"metric": record["metric"], "value": float(record["value"]),
                   **({"unit": record["unit"]} if record.get("unit") else {})}  # fmt: skip
        else:
            yield json.loads(line)


class Simulator:
    """A sensor with a diurnal cycle and noise; `rate` readings per call."""

    def __init__(self, metrics: int = 1, seed: int = 0) -> None:
        self.metrics = [f"sim_{i}" for i in range(metrics)]
        self.rng = random.Random(seed)

    def read(self) -> List[Reading]:
        hour = time.gmtime().tm_hour
        base = 20 + 5 * math.sin(2 * math.pi * (hour - 9) / 24)
        return [{"metric": m, "value": round(base + self.rng.gauss(0, 0.5), 3), "unit": "C"}
                for m in self.metrics]  # fmt: skip
