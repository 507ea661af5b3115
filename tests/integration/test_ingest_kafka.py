"""Kafka → bronze: rejects with reasons, zombie fencing, crash safety, rebalances."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Producer
from lakehouse_testing.lake import free_port

from ingest.kafka_consumer import BronzeConsumer, CommitPolicy
from ingest.offsets import commit_with_offsets, read_offsets
from lakehouse.clients import iceberg_catalog, kafka_config, trino_connection
from lakehouse.contracts import READINGS
from lakehouse.errors import FencedCommitError
from lakehouse.simulate import Fleet, SimulationConfig, deliveries, send_to_kafka
from tests.bad_records import BAD_RECORDS, good_message
from tests.integration.conftest import bronze_counts, start_consumer, stop_consumer, wait_for_rows

pytestmark = pytest.mark.integration


def produce(settings, topic: str, payloads: list[bytes | None], partition: int = 0) -> None:
    producer = Producer(
        kafka_config(settings, "simulate", acks="all", **{"message.max.bytes": 4_000_000})
    )
    for payload in payloads:
        producer.produce(topic, value=payload, partition=partition)
    assert producer.flush(30) == 0


def test_bad_records_are_rejected_with_reasons_and_good_ones_land(
    stack_settings, credentials, topic_factory
):
    topic = topic_factory(partitions=1)
    payloads: list[bytes | None] = []
    for seq, record in enumerate(BAD_RECORDS, start=1):
        payloads += [good_message(seq), record.payload]
    produce(stack_settings, topic, payloads)

    consumer = BronzeConsumer(
        stack_settings, credentials, topic=topic, group_id=f"g-{topic}",
        policy=CommitPolicy(max_age_seconds=1),
    )  # fmt: skip
    consumer.run(idle_exit_seconds=3)

    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        "select source_offset, reason, detail from lake.bronze.readings_rejected "
        f"where source_topic = '{topic}' order by source_offset"
    )
    rejected = cursor.fetchall()
    assert [offset for offset, _, _ in rejected] == [2 * i + 1 for i in range(len(BAD_RECORDS))]
    for (_, reason, detail), record in zip(rejected, BAD_RECORDS, strict=True):
        assert reason == record.reason, record.name
        assert record.detail.lower() in detail.lower(), record.name
    cursor.execute(
        "select count(*), min(seq), max(seq), sum(source_offset % 2) "
        f"from lake.bronze.readings where source_topic = '{topic}'"
    )
    assert cursor.fetchall() == [[len(BAD_RECORDS), 1, len(BAD_RECORDS), 0]]


def test_zombie_batch_behind_the_table_is_refused(stack_settings, credentials, unique):
    table = iceberg_catalog(stack_settings, credentials, s3_key="ingest").load_table(READINGS)
    topic = f"zombie-{unique}"
    empty = table.scan(limit=0).to_arrow()
    commit_with_offsets(table, empty, topic=topic, expected={0: None, 1: None}, new={0: 100, 1: 7})
    snapshot = table.current_snapshot().snapshot_id

    rows = pa.Table.from_pylist(
        [{"device_id": "zombie", "tenant": "t", "seq": 1, "ts": 1_763_640_000_000_000,
          "metric": "m", "value": 1.0, "ingested_at": 1_763_640_000_000_000,
          "source": "kafka", "source_topic": topic, "source_partition": 0,
          "source_offset": 50}],
        schema=empty.schema,
    )  # fmt: skip
    stale = iceberg_catalog(stack_settings, credentials, s3_key="ingest").load_table(READINGS)
    with pytest.raises(FencedCommitError) as info:
        commit_with_offsets(stale, rows, topic=topic, expected={0: 50}, new={0: 51})
    assert "partition 0" in info.value.message and "at offset 100" in info.value.message

    table.refresh()
    assert table.current_snapshot().snapshot_id == snapshot
    assert read_offsets(table, topic) == {0: 100, 1: 7}
    assert bronze_counts(stack_settings, topic) == (0, 0)


READINGS_TOTAL = 200_000


def _produce_singles(settings, topic: str, total: int, seed: int, rate: float | None = None) -> int:
    devices = 50
    samples = total // (devices * 4)
    fleet = Fleet.generate(devices=devices, seed=seed)
    config = SimulationConfig(seed=seed, gap_probability=0.0, batch_size=4)
    return send_to_kafka(
        settings, deliveries(fleet, config, samples), topic=topic, singles=True, rate=rate
    )


def test_kill_9_at_every_stage_loses_and_duplicates_nothing(
    stack_settings, topic_factory, consumer_log
):
    topic = topic_factory(partitions=6)
    assert _produce_singles(stack_settings, topic, READINGS_TOTAL, seed=7) == READINGS_TOTAL
    group = f"g-{topic}"
    args = ("--max-rows", "15000", "--max-age", "30", "--instance-id", "crash-test")
    log = consumer_log

    for failpoint in (
        "before-commit:2",          # mid-batch: consumed, not yet committed
        "during-commit:2",          # data files written, catalog commit not done
        "after-readings-commit:2",  # readings committed, rejected table not yet
        "after-iceberg-commit:2",   # both tables committed, Kafka offsets not yet
        "during-commit:1",
    ):  # fmt: skip
        proc = start_consumer(topic, group, *args, failpoint=failpoint, log=log)
        assert proc.wait(180) == -signal.SIGKILL, f"consumer did not reach {failpoint}"

    for delay in (4.0, 6.0):  # and twice at an arbitrary moment, from outside
        proc = start_consumer(topic, group, *args, log=log)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL

    proc = start_consumer(topic, group, *args, "--idle-exit", "8", log=log)
    assert proc.wait(300) == 0
    assert bronze_counts(stack_settings, topic) == (READINGS_TOTAL, READINGS_TOTAL)
    _assert_offsets_contiguous(stack_settings, topic)


def _assert_offsets_contiguous(settings, topic: str) -> None:
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        "select source_partition, count(*), min(source_offset), max(source_offset) "
        f"from lake.bronze.readings where source_topic = '{topic}' group by 1"
    )
    for _partition, count, low, high in cursor.fetchall():
        assert low == 0 and high == count - 1


def _wait_for_assignment(log_path: Path, timeout: float = 120.0) -> None:
    """Until a consumer writing to `log_path` has been assigned partitions."""
    deadline = time.monotonic() + timeout
    while "assigned {" not in log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no assignment logged in {log_path}"
        time.sleep(0.2)


def test_two_consumers_and_a_rebalance_keep_exactly_once(
    stack_settings, topic_factory, consumer_log, tmp_path
):
    topic = topic_factory(partitions=6)
    group = f"g-{topic}"
    total = 60_000
    log = consumer_log
    args = ("--max-age", "1")
    first = start_consumer(topic, group, *args, log=log)
    second = start_consumer(topic, group, *args, log=log)
    consumers = [first, second]
    producer = threading.Thread(
        target=_produce_singles, args=(stack_settings, topic, total, 11, 4000.0)
    )
    try:
        producer.start()
        time.sleep(4)
        third_log = tmp_path / "third.log"
        with third_log.open("ab") as third_out:
            third = start_consumer(topic, group, *args, log=third_out)  # joins: rebalance
            consumers.append(third)
            _wait_for_assignment(third_log)
            time.sleep(2)
            assert stop_consumer(third) == 0  # leaves: rebalance again
        producer.join()
        counts = wait_for_rows(stack_settings, topic, total)
        assert stop_consumer(first) == 0
        assert stop_consumer(second) == 0
        assert bronze_counts(stack_settings, topic) == counts == (total, total)
        _assert_offsets_contiguous(stack_settings, topic)
    finally:
        producer.join()
        for consumer in consumers:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()


def test_offsets_survive_compaction_and_snapshot_expiry(
    stack_settings, credentials, topic_factory, unique
):
    topic = topic_factory(partitions=3)
    policy = CommitPolicy(max_rows=2_000, max_age_seconds=1)  # many small files to compact
    tables = (f"bronze.compact_{unique}", f"bronze.compact_rejected_{unique}")
    assert _produce_singles(stack_settings, topic, 20_000, seed=3) == 20_000
    BronzeConsumer(stack_settings, credentials, topic=topic, policy=policy, tables=tables).run(
        idle_exit_seconds=3
    )
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    table = catalog.load_table(tables[0])
    before = read_offsets(table, topic)
    assert sum(before.values()) == 20_000

    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(f"alter table lake.{tables[0]} execute optimize")
    cursor.fetchall()
    table.refresh()
    # Compaction wrote a snapshot without our summary properties, and Nessie keeps no
    # older snapshot in the table metadata: the snapshots that carried the offsets are
    # gone (expired), yet the offsets are intact.
    assert table.current_snapshot().summary.operation.value in ("replace", "overwrite")
    assert (
        f"lakehouse.kafka.offsets.{topic}"
        not in table.current_snapshot().summary.additional_properties
    )
    assert len(table.snapshots()) == 1
    assert read_offsets(table, topic) == before

    assert _produce_singles(stack_settings, topic, 10_000, seed=4) == 10_000
    BronzeConsumer(stack_settings, credentials, topic=topic, policy=policy, tables=tables).run(
        idle_exit_seconds=3
    )
    assert bronze_counts(stack_settings, topic, table=tables[0]) == (30_000, 30_000)
    table.refresh()
    after = read_offsets(table, topic)
    assert sum(after.values()) == 30_000
    assert json.loads(table.properties[f"lakehouse.kafka.offsets.{topic}"]) == {
        str(p): o for p, o in after.items()
    }
    for name in tables:
        catalog.drop_table(name)


def _metrics(port: int) -> dict[str, float]:
    import httpx

    values: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _wait_metric(port: int, name: str, value: float, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metrics = _metrics(port)
            if metrics.get(name) == value:
                return metrics
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached {value}")


def test_metrics_and_sigterm_drain(stack_settings, topic_factory, consumer_log):
    topic = topic_factory(partitions=2)
    port = free_port()
    proc_metrics = ["--metrics-port", str(port)]
    # The batch would only close after 300 s: nothing but SIGTERM commits it.
    proc = start_consumer(topic, f"g-{topic}", "--max-age", "300", *proc_metrics, log=consumer_log)
    payloads = [good_message(seq) for seq in range(1, 1001)] + [b"not json"] * 3
    for partition in (0, 1):
        produce(stack_settings, topic, payloads, partition=partition)

    metrics = _wait_metric(port, "lakehouse_ingest_records_consumed_total", 2006.0)
    assert metrics["lakehouse_ingest_readings_committed_total"] == 0
    assert bronze_counts(stack_settings, topic) == (0, 0)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert bronze_counts(stack_settings, topic) == (2000, 2000)
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        "select count(*) from lake.bronze.readings_rejected "
        f"where source_topic = '{topic}' and reason = 'invalid_json'"
    )
    assert cursor.fetchall() == [[6]]

    proc = start_consumer(topic, f"g-{topic}", "--max-age", "1", *proc_metrics, log=consumer_log)
    try:
        produce(stack_settings, topic, [good_message(5000)], partition=0)
        metrics = _wait_metric(port, "lakehouse_ingest_readings_committed_total", 1.0)
        assert metrics["lakehouse_ingest_records_rejected_total"] == 0
        assert metrics["lakehouse_ingest_commit_seconds_count"] >= 1
        assert metrics[f'lakehouse_ingest_partition_lag{{partition="0",topic="{topic}"}}'] == 0
        assert metrics["lakehouse_ingest_seconds_since_last_commit"] >= 0
        assert metrics["lakehouse_ingest_freshness_seconds"] > 0
        assert metrics["lakehouse_ingest_fenced_batches_total"] == 0
    finally:
        assert stop_consumer(proc) == 0
    assert bronze_counts(stack_settings, topic) == (2001, 2001)


def test_a_recreated_topic_stops_the_consumer_with_the_fix(
    stack_settings, topic_factory, consumer_log, tmp_path
):
    """The topic is deleted and created again, so its offsets start over below what
    bronze has consumed: the consumer refuses to read on (it would skip the new
    messages as consumed ones) and names the fix, instead of skipping them silently."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = topic_factory(partitions=1)
    produce(stack_settings, topic, [good_message(seq) for seq in range(1, 6)])
    group = f"g-{topic}"
    proc = start_consumer(topic, group, "--max-age", "1", "--idle-exit", "5", log=consumer_log)
    assert proc.wait(120) == 0
    assert bronze_counts(stack_settings, topic) == (5, 5)

    admin = AdminClient(kafka_config(stack_settings, "admin"))
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:  # deletion completes in the background
        try:
            admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(30)
            break
        except Exception:
            assert time.monotonic() < deadline, "the topic could not be created again"
            time.sleep(1)
    produce(stack_settings, topic, [good_message(seq) for seq in range(6, 8)])
    log = tmp_path / "recreated.log"
    with log.open("ab") as out:
        proc = start_consumer(topic, group, "--max-age", "1", log=out)
    assert proc.wait(120) == 1
    text = " ".join(log.read_text().split())
    assert f"bronze has consumed {topic}[0] up to offset 5, but the topic ends at 2" in text
    assert "give the new topic a name of its own" in text
    assert bronze_counts(stack_settings, topic) == (5, 5)


def test_a_consumer_fenced_by_its_own_instance_id_exits_and_nothing_is_lost(
    stack_settings, topic_factory, tmp_path
):
    """A second consumer with the same static member id fences the first: the Kafka
    client of the first can consume nothing more, so it ends (exit 1, the reason and the
    fix said) for the supervisor to start it again, instead of idling as if healthy."""
    topic = topic_factory(partitions=2)
    group = f"g-{topic}"
    produce(stack_settings, topic, [good_message(seq) for seq in range(1, 11)])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with first_log.open("ab") as out:
        first = start_consumer(topic, group, "--max-age", "1", "--instance-id", "twin", log=out)
    assert wait_for_rows(stack_settings, topic, 10) == (10, 10)
    with second_log.open("ab") as out:
        second = start_consumer(topic, group, "--max-age", "1", "--instance-id", "twin", log=out)
    try:
        assert first.wait(120) == 1
        text = " ".join(first_log.read_text().split())
        assert "fatal Kafka error, this consumer can consume no more" in text
        assert "another consumer may use the same --instance-id" in text
        produce(stack_settings, topic, [good_message(seq) for seq in range(11, 21)])
        assert wait_for_rows(stack_settings, topic, 20) == (20, 20)
    finally:
        assert stop_consumer(second) == 0
    assert bronze_counts(stack_settings, topic) == (20, 20)
