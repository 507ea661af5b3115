from __future__ import annotations

import json
import os
import sys

import pytest
from lakehouse_edge import sources
from lakehouse_edge.cli import build_sources, sample_once
from lakehouse_edge.clock import ClockGuard
from lakehouse_edge.config import ConfigError
from lakehouse_edge.queue import DurableQueue


def _values(queue: DurableQueue) -> list:
    batch = queue.next_batch(10_000)
    if batch is None:
        return []
    queue.ack(batch)
    return [r["value"] for r in batch.readings]


@pytest.fixture
def queue(tmp_path):
    opened = DurableQueue(str(tmp_path / "q.db"))
    yield opened
    opened.close()


@pytest.fixture
def guard(tmp_path):
    return ClockGuard(str(tmp_path / "clock"), synchronised=lambda: True)


def test_cpu_temperature_reads_millidegrees(tmp_path):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert sources.CpuTemperature(str(zone)).read() == [
        {"metric": "cpu_temperature", "value": 48.312, "unit": "C"}
    ]


def _probe(root, serial: str, crc: str, millidegrees: int) -> None:
    probe = root / serial
    probe.mkdir()
    (probe / "w1_slave").write_text(
        f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {crc}\n72 01 4b 46 7f ff 0e 10 57 t={millidegrees}\n"
    )


def test_ds18b20_skips_bad_crc_and_counts_the_power_on_value(tmp_path):
    _probe(tmp_path, "28-0000071d2a3f", "YES", 23125)
    _probe(tmp_path, "28-0000071d9999", "NO", 23125)
    _probe(tmp_path, "28-0000071d8585", "YES", 85000)
    probes = sources.DS18B20(str(tmp_path))
    assert probes.read() == [
        {"metric": "temperature", "value": 23.125, "unit": "C",
         "attrs": {"probe": "28-0000071d2a3f"}}
    ]  # fmt: skip
    assert probes.take_discarded() == {"sensor_power_on_value": 1}
    assert probes.take_discarded() == {}


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


def _lines(path, values) -> None:
    with open(path, "a") as handle:
        for value in values:
            handle.write(json.dumps({"metric": "t", "value": value}) + "\n")


def test_a_restarted_agent_reads_the_file_on_from_where_it_queued(tmp_path, queue, guard):
    path = tmp_path / "sensor.jsonl"
    _lines(path, [1, 2, 3])
    specs = [{"type": "file", "path": str(path)}]
    assert sample_once(build_sources(specs, queue)[0], queue, guard) == 3
    _lines(path, [4, 5])
    # A reboot: a new process, the same queue.
    assert sample_once(build_sources(specs, queue)[0], queue, guard) == 2
    assert _values(queue) == [1, 2, 3, 4, 5]


def test_a_rotated_file_is_finished_before_the_new_one_is_read(tmp_path, queue, guard):
    path = tmp_path / "sensor.jsonl"
    specs = [{"type": "file", "path": str(path)}]
    _lines(path, [1, 2])
    assert sample_once(build_sources(specs, queue)[0], queue, guard) == 2
    _lines(path, [3])
    with open(path, "a") as handle:
        handle.write('{"metric": "t", "value": 4}')  # last line, no newline: rotated as is
    os.rename(path, f"{path}.1")
    _lines(path, [5])  # the new file is as long as the old position would allow
    with open(path, "a") as handle:
        handle.write("x" * 100 + "\n")
    tail = build_sources(specs, queue)[0]  # across a restart too
    assert sample_once(tail, queue, guard) == 3
    assert _values(queue) == [1, 2, 3, 4, 5]
    assert queue.reasons()["invalid"] == {"invalid_line": 1}
    # Rotated and gone: the new file from its start, said in the log.
    os.rename(path, f"{path}.1")
    os.remove(f"{path}.1")
    _lines(path, [6])
    assert sample_once(tail, queue, guard) == 1
    assert _values(queue) == [6]


def test_a_truncated_file_is_read_from_its_start(tmp_path, queue, guard):
    path = tmp_path / "sensor.jsonl"
    tail = sources.FileTail(str(path))
    _lines(path, [1, 2, 3])
    assert sample_once(tail, queue, guard) == 3
    path.write_text("")
    _lines(path, [4])
    assert sample_once(tail, queue, guard) == 1
    assert _values(queue) == [1, 2, 3, 4]


def test_a_file_rewritten_between_reads_is_read_from_its_start(tmp_path, queue, guard):
    """Same inode and longer than the position, but other first bytes: a new file (an
    editor's save, or a new file that got the old one's inode number)."""
    path = tmp_path / "sensor.jsonl"
    tail = sources.FileTail(str(path))
    _lines(path, [1, 2])
    assert sample_once(tail, queue, guard) == 2
    inode = path.stat().st_ino
    with open(path, "w") as handle:
        handle.writelines(json.dumps({"metric": "u", "value": v}) + "\n" for v in (10, 20, 30))
    assert path.stat().st_ino == inode
    assert sample_once(tail, queue, guard) == 3
    assert _values(queue) == [1, 2, 10, 20, 30]


def test_readings_the_gateway_would_refuse_are_counted_not_queued(tmp_path, queue, guard):
    script = "print(1.5); print('nan'); print('inf'); print('oops'); print(2.5)"
    command = sources.Command([sys.executable, "-c", script], "soil", "%")
    assert sample_once(command, queue, guard) == 2
    assert _values(queue) == [1.5, 2.5]
    assert queue.reasons()["invalid"] == {"invalid_line": 1, "non_finite_value": 2}
    assert queue.counts()["invalid"] == 3
    path = tmp_path / "sensor.jsonl"
    path.write_text('{"metric": "t", "value": NaN}\n{"metric": "", "value": 1}\n'
                    '{"metric": "t", "value": "7"}\n{"metric": "t", "value": 7}\n')  # fmt: skip
    assert sample_once(sources.FileTail(str(path)), queue, guard) == 1
    assert queue.reasons()["invalid"] == {
        "invalid_identifier": 1, "invalid_line": 1, "non_finite_value": 3, "wrong_type": 1,
    }  # fmt: skip


def test_a_full_queue_leaves_the_file_position_where_it_was(tmp_path, guard):
    full = DurableQueue(str(tmp_path / "full.db"), max_rows=2, policy="pause")
    path = tmp_path / "sensor.jsonl"
    _lines(path, [1, 2, 3])
    tail = sources.FileTail(str(path))
    assert sample_once(tail, full, guard) == 0  # three do not fit: none queued
    full.next_batch(10)
    full.max_rows = 10
    assert sample_once(tail, full, guard) == 3


def test_readings_sampled_while_the_clock_is_wrong_are_counted(tmp_path, queue, monkeypatch):
    from lakehouse_edge import clock

    monkeypatch.setattr(clock.time, "time", lambda: 86_400.0)
    wrong = ClockGuard(str(tmp_path / "c"), synchronised=lambda: False)
    assert sample_once(sources.Simulator(metrics=3), queue, wrong) == 0
    assert queue.counts()["clock_skipped"] == 3


def test_command_output_becomes_readings():
    readings = sources.Command([sys.executable, "-c", "print(3.5)"], "soil", "%").read()
    assert readings == [{"metric": "soil", "value": 3.5, "unit": "%"}]


def test_unknown_source_type_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown source type 'lidar'"):
        build_sources([{"type": "lidar"}])
