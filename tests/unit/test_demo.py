from __future__ import annotations

import random
import time

from lakehouse_edge.queue import DurableQueue

from lakehouse.demo import (
    SITES,
    TENANTS,
    DemoSensor,
    Faults,
    FlakyUploader,
    device_ids,
)

NONE = Faults(gap=0, offline=0, duplicate=0, glitch=0)


def test_the_fleet_spans_three_tenants_with_sites_at_real_places():
    assert TENANTS == ("acme", "globex", "initech")
    devices = device_ids()
    assert len(devices) == len({d for d, _ in devices}) == 12
    assert all(-90 <= s.lat <= 90 and -180 <= s.lon <= 180 for s in SITES)
    assert {site.tenant for _, site in devices} == set(TENANTS)


def test_a_sensor_gives_plausible_readings_and_the_odd_glitch():
    sensor = DemoSensor(SITES[0], random.Random(1), NONE)
    readings = [r for _ in range(200) for r in sensor.read()]
    temperatures = [r["value"] for r in readings if r["metric"] == "temperature"]
    assert len(temperatures) == 200 and all(5 < t < 35 for t in temperatures)
    glitchy = DemoSensor(SITES[0], random.Random(1), Faults(gap=0, glitch=1.0))
    assert glitchy.read()[0]["value"] > 125  # outside the range silver accepts


def test_a_gap_silences_the_sensor_for_a_while():
    sensor = DemoSensor(SITES[0], random.Random(1), Faults(gap=1.0, gap_seconds=(60, 60)))
    assert sensor.read() == []
    sensor.faults = NONE
    assert sensor.read() == []  # still silent
    sensor.silent_until = time.time() - 1
    assert len(sensor.read()) == 2


class Recorder(FlakyUploader):
    """The flaky uploader over a gateway that records each post."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.posts: list[str] = []

    def _send(self, batch):
        self.posts.append(batch.batch_id)
        return 202, None, {}


def recorder(tmp_path, faults: Faults) -> Recorder:
    queue = DurableQueue(str(tmp_path / "queue.db"))
    queue.put_many([{"metric": "temperature", "value": 20.0, "ts": "2026-12-04T00:00:00Z"}])
    return Recorder(queue, "http://gateway", "token", batch_size=10, rng=random.Random(0),
                    faults=faults)  # fmt: skip


def test_a_lost_reply_sends_the_same_batch_again_with_the_same_key(tmp_path):
    uploader = recorder(tmp_path, Faults(offline=0, duplicate=1.0))
    batch = uploader.queue.next_batch(10)
    assert uploader._post(batch)[0] == 202
    assert uploader.posts == [batch.batch_id, batch.batch_id] and uploader.duplicates == 1


def test_a_dropped_link_keeps_the_batch_for_later(tmp_path):
    uploader = recorder(tmp_path, Faults(offline=1.0, offline_seconds=(60, 60), duplicate=0))
    batch = uploader.queue.next_batch(10)
    status, _, _ = uploader._post(batch)
    assert str(status).startswith("network:") and uploader.posts == []
    uploader.faults = NONE
    assert str(uploader._post(batch)[0]).startswith("network:")  # still down
    uploader.offline_until = 0
    assert uploader._post(batch)[0] == 202 and uploader.posts == [batch.batch_id]
