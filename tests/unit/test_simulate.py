from __future__ import annotations

from collections import Counter

import orjson

from lakehouse.simulate import METRICS, Fleet, SimulationConfig, deliveries


def run(seed: int, **config) -> list:
    fleet = Fleet.generate(devices=12, tenants=3, sites=5, seed=seed)
    return list(deliveries(fleet, SimulationConfig(seed=seed, **config), 50))


def test_fleet_spans_tenants_and_sites_with_coordinates():
    fleet = Fleet.generate(devices=12, tenants=3, sites=5, seed=1)
    assert len(fleet.devices) == 12
    assert {d.tenant for d in fleet.devices} == {"tenant-01", "tenant-02", "tenant-03"}
    assert len(fleet.sites) == 5
    assert all(-90 <= s.lat <= 90 and -180 <= s.lon <= 180 for s in fleet.sites)
    site_tenant = {s.name: s.tenant for s in fleet.sites}
    assert all(site_tenant[d.site] == d.tenant for d in fleet.devices)


def test_same_seed_same_readings_other_seed_other_readings():
    first = [d.envelope() for d in run(7)]
    assert first == [d.envelope() for d in run(7)]
    assert first != [d.envelope() for d in run(8)]


def test_seq_is_strictly_increasing_per_device_and_every_metric_is_sent():
    readings = [(d.device.device_id, r) for d in run(3) for r in d.readings]
    per_device: dict[str, list[int]] = {}
    for device, reading in readings:
        per_device.setdefault(device, []).append(reading["seq"])
    assert all(seqs == sorted(set(seqs)) for seqs in per_device.values())
    assert {r["metric"] for _, r in readings} == set(METRICS)


def test_gaps_anomalies_duplicates_and_reordering():
    plain = run(5, gap_probability=0.0, anomaly_probability=0.0)
    assert sum(len(d.readings) for d in plain) == 12 * 50 * len(METRICS)

    gappy = run(5, gap_probability=0.05, gap_length=5)
    assert sum(len(d.readings) for d in gappy) < 12 * 50 * len(METRICS)

    spiky = run(5, anomaly_probability=0.2)
    temps = [r["value"] for d in spiky for r in d.readings if r["metric"] == "temperature"]
    assert max(temps) > 50 or min(temps) < -10

    duplicated = run(5, duplicate_probability=0.3)
    counts = Counter(d.batch_id for d in duplicated)
    assert max(counts.values()) >= 2
    assert {d.batch_id for d in duplicated} == {d.batch_id for d in run(5)}

    reordered = run(5, reorder_window=20)
    in_order = run(5)
    assert [d.batch_id for d in reordered] != [d.batch_id for d in in_order]
    assert sorted(d.batch_id for d in reordered) == sorted(d.batch_id for d in in_order)


def test_singles_carry_identity_and_envelopes_carry_batch_id():
    delivery = run(2)[0]
    single = orjson.loads(delivery.singles()[0])
    assert single["device_id"] == delivery.device.device_id
    assert single["tenant"] == delivery.device.tenant
    assert orjson.loads(delivery.envelope())["batch_id"] == delivery.batch_id
