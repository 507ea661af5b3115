from __future__ import annotations

import sys

import pytest
from lakehouse_edge import sources
from lakehouse_edge.cli import build_sources
from lakehouse_edge.config import ConfigError


def test_cpu_temperature_reads_millidegrees(tmp_path):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert sources.cpu_temperature(str(zone)) == [
        {"metric": "cpu_temperature", "value": 48.312, "unit": "C"}
    ]


def test_ds18b20_skips_probes_with_bad_crc(tmp_path):
    good = tmp_path / "28-0000071d2a3f"
    bad = tmp_path / "28-0000071d9999"
    for probe, crc in ((good, "YES"), (bad, "NO")):
        probe.mkdir()
        (probe / "w1_slave").write_text(
            f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {crc}\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
        )
    assert sources.ds18b20(str(tmp_path)) == [
        {"metric": "temperature", "value": 23.125, "unit": "C",
         "attrs": {"probe": "28-0000071d2a3f"}}
    ]  # fmt: skip


def test_file_tail_returns_only_complete_new_lines(tmp_path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"metric": "a", "value": 1}\n{"metric": "b", "val')
    tail = sources.FileTail(str(jsonl))
    assert tail.read() == [{"metric": "a", "value": 1}]
    with jsonl.open("a") as handle:
        handle.write('ue": 2}\n')
    assert tail.read() == [{"metric": "b", "value": 2}]
    assert tail.read() == []
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("metric,value,unit\nhumidity,55.5,%\n")
    assert sources.FileTail(str(csv_file)).read() == [
        {"metric": "humidity", "value": 55.5, "unit": "%"}
    ]


def test_command_output_becomes_readings():
    readings = sources.command([sys.executable, "-c", "print(3.5)"], "soil", "%")
    assert readings == [{"metric": "soil", "value": 3.5, "unit": "%"}]


def test_unknown_source_type_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown source type 'lidar'"):
        build_sources([{"type": "lidar"}])
