"""Ingest throughput, freshness and commit cost, measured in one run on the same messages.

(a) consume-only: confluent-kafka reading the messages, no decoding;
(b) sink limit: the same rows written as Parquet and uploaded to MinIO with pyarrow;
(c) the consumer end to end into Iceberg (decode, validate, Parquet, commit).
Targets: c ≥ 150,000 readings/s per consumer process and c / min(a, b) ≥ 0.5.

Freshness: 10,000 readings/s for 60 s through a consumer process; p95 of (visible in
a Trino query - produced) ≤ 10 s, a reading never seen counting as later than any
limit (the consumer's output: logs/bench-ingest-consumer.log in the bench home).
Commit cost: latency of commits 4,901-5,000 ≤ 1.5x that of the first 100.

Usage: python -m bench.ingest [--readings N] [--freshness-seconds S] [--commits N]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pyarrow import fs
from rich.console import Console

from bench.targets import Targets
from ingest.kafka_consumer import BronzeConsumer, CommitPolicy
from ingest.offsets import commit_with_offsets
from ingest.readings import ReadingsBuilder, Source
from lakehouse.clients import iceberg_catalog, kafka_config, trino_connection
from lakehouse.config import Settings
from lakehouse.contracts import READINGS_SCHEMA, STREAMING_TABLE_PROPERTIES
from lakehouse.credentials import load
from lakehouse.s3 import s3_endpoint
from lakehouse.simulate import Fleet, SimulationConfig, deliveries, send_to_kafka
from lakehouse.stack.kafka_acl import grant_topic, revoke_topic
from lakehouse.stack.manager import Stack

PARTITIONS = 6


# Group id prefixes the ingest principal may use on a benchmark topic.
BENCH_GROUPS = ["bench-"]


def make_topic(
    settings: Settings,
    prefix: str,
    *,
    partitions: int = PARTITIONS,
    groups: list[str] = BENCH_GROUPS,
) -> str:
    """A topic of its own, which the platform's principals may use (consumers in `groups`)."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka_config(settings, "admin"))
    admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(30)
    if settings.security:
        grant_topic(admin, topic, groups)
    return topic


def drop_topic(settings: Settings, topic: str, *, groups: list[str] = BENCH_GROUPS) -> None:
    admin = AdminClient(kafka_config(settings, "admin"))
    admin.delete_topics([topic])[topic].result(30)
    if settings.security:
        revoke_topic(admin, topic, groups)


def produce(settings: Settings, topic: str, readings: int, batch: int) -> int:
    devices = 500
    samples = max(readings // (devices * 4), 1)
    fleet = Fleet.generate(devices=devices, seed=5)
    config = SimulationConfig(seed=5, batch_size=batch, gap_probability=0.0)
    return send_to_kafka(settings, deliveries(fleet, config, samples), topic=topic)


def consume_only(
    settings: Settings, topic: str, messages_expected: int
) -> tuple[float, list[bytes]]:
    consumer = Consumer(
        kafka_config(settings, "ingest", **{"group.id": f"bench-{uuid.uuid4().hex}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "fetch.max.bytes": 64 << 20})
    )  # fmt: skip
    # Timed from subscribe, like the consumer: group join and every fetch included.
    started = time.perf_counter()
    consumer.subscribe([topic])
    values: list[bytes] = []
    while len(values) < messages_expected:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        values.extend(m.value() for m in batch if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed, values


def sink_limit(settings: Settings, values: list[bytes]) -> tuple[float, int]:
    """Decode outside the clock, then time Parquet + upload to MinIO of the same rows."""
    builder = ReadingsBuilder()
    for offset, value in enumerate(values):
        builder.add_message(value, Source("kafka", "bench", 0, offset))
    table = builder.readings_table()
    creds = load(settings)
    s3 = fs.S3FileSystem(
        access_key="ingest", secret_key=creds.minio_keys["ingest"],
        endpoint_override=s3_endpoint(settings), scheme="http",
        region=settings.minio.region,
    )  # fmt: skip
    # Where the ingest key may write: a bronze namespace's folder.
    folder = f"{settings.minio.bucket}/{settings.nessie.warehouse}/bronze"
    path = f"{folder}/bench-sink-{uuid.uuid4().hex}.parquet"
    started = time.perf_counter()
    with s3.open_output_stream(path) as out:
        pq.write_table(table, out, compression="zstd")
    elapsed = time.perf_counter() - started
    s3.delete_file(path)
    return elapsed, table.num_rows


def end_to_end(settings: Settings, topic: str, readings: int) -> float:
    """The consumer into tables of its own, dropped afterwards (bronze stays clean)."""
    suffix = uuid.uuid4().hex[:8]
    tables = (f"bronze.bench_readings_{suffix}", f"bronze.bench_rejected_{suffix}")
    consumer = BronzeConsumer(
        settings, load(settings), topic=topic, group_id=f"bench-{uuid.uuid4().hex}",
        tables=tables,
        # Batches close on size, as they do when the consumer is saturated.
        policy=CommitPolicy(max_bytes=32 << 20),
    )  # fmt: skip
    consumer.metrics.consumed.inc(0)
    started = time.perf_counter()
    consumer.run(idle_exit_seconds=2)
    elapsed = time.perf_counter() - started - 2  # the idle wait is not work
    committed = consumer.metrics.committed._value.get()
    assert committed == readings, f"committed {committed} of {readings}"
    return elapsed


@dataclass
class Freshness:
    """Seconds from produced to visible in Trino, per reading; None: never seen."""

    latencies: list[float | None]
    consumer_log: Path
    # Why readings went unseen, where the run knows: the consumer's exit, Trino's error.
    problems: list[str]

    @property
    def unseen(self) -> int:
        return sum(latency is None for latency in self.latencies)

    def quantile(self, q: float) -> float | None:
        """The q-quantile over every reading produced; an unseen one is later than any."""
        ordered = sorted(self.latencies, key=lambda v: float("inf") if v is None else v)
        return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else None


def freshness(settings: Settings, seconds: int, rate: int) -> Freshness:
    topic = make_topic(settings, "bench-fresh")
    # Beside the stack's own logs: the consumer's refusals and errors, read on failure.
    log_path = settings.home / "logs" / "bench-ingest-consumer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with log_path.open("w") as log:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", "ingest", "kafka", "--topic", topic,
             # A group the topic's ACLs let the ingest principal use (see make_topic).
             "--group", f"{BENCH_GROUPS[0]}fresh-{uuid.uuid4().hex[:8]}",
             "--metrics-port", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        produced_at, polls = produce_and_poll(settings, topic, seconds, rate, consumer, problems)
    finally:
        if consumer.poll() is None:
            consumer.terminate()
        consumer.wait(60)
        drop_topic(settings, topic)
    if consumer.returncode not in (0, -signal.SIGTERM):
        problems.append(f"the consumer exited with status {consumer.returncode}")
    latencies: list[float | None] = []
    poll_index = 0
    for index, at in enumerate(produced_at):
        while poll_index < len(polls) and polls[poll_index][1] <= index:
            poll_index += 1
        latencies.append(polls[poll_index][0] - at if poll_index < len(polls) else None)
    return Freshness(latencies, log_path, problems)


def produce_and_poll(
    settings: Settings,
    topic: str,
    seconds: int,
    rate: int,
    consumer: subprocess.Popen[bytes],
    problems: list[str],
) -> tuple[list[float], list[tuple[float, int]]]:
    """Produce at `rate` for `seconds` while polling bronze's count of the topic's rows,
    then poll until every reading is visible, the consumer is gone, or 60 s passed.
    Returns when each reading was produced, and (time, count) of each poll."""
    time.sleep(5)  # let it join the group
    produced_at: list[float] = []
    cursor = trino_connection(settings).cursor()
    polls: list[tuple[float, int]] = []
    done = threading.Event()

    def poll() -> None:
        failing = False
        while not done.is_set():
            try:
                cursor.execute(
                    f"select count(*) from lake.bronze.readings where source_topic = '{topic}'"
                )
                polls.append((time.time(), cursor.fetchall()[0][0]))
                failing = False
            except Exception as exc:  # counted as unseen; said why, once per episode
                if not failing:
                    problems.append(f"a Trino poll failed: {exc}")
                failing = True
            time.sleep(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    producer = Producer(kafka_config(settings, "simulate", acks="all", **{"linger.ms": 5}))
    per_message = 10
    started = time.time()
    seq = 0
    while time.time() - started < seconds and consumer.poll() is None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        readings = [
            {"seq": seq + i, "ts": now, "metric": "temperature", "value": 20.0}
            for i in range(per_message)
        ]
        seq += per_message
        producer.produce(topic, orjson.dumps(
            {"device_id": f"fresh-{seq % 100}", "tenant": "bench", "readings": readings}
        ))  # fmt: skip
        producer.poll(0)
        produced_at.extend([time.time()] * per_message)
        ahead = len(produced_at) / rate - (time.time() - started)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(30)
    deadline = time.time() + 60
    while (
        (not polls or polls[-1][1] < len(produced_at))
        and time.time() < deadline
        and consumer.poll() is None
    ):
        time.sleep(0.5)
    done.set()
    poller.join()
    return produced_at, polls


def seconds_or_never(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def commit_cost(settings: Settings, commits: int) -> tuple[float, float]:
    catalog = iceberg_catalog(settings, load(settings), s3_key="ingest")
    name = f"bronze.bench_commits_{uuid.uuid4().hex[:8]}"
    table = catalog.create_table(name, schema=READINGS_SCHEMA,
                                 properties=STREAMING_TABLE_PROPERTIES)  # fmt: skip
    builder = ReadingsBuilder()
    durations = []
    try:
        for i in range(commits):
            builder = ReadingsBuilder()
            builder.add_message(
                orjson.dumps({"device_id": "c", "tenant": "t", "seq": i,
                              "ts": "2026-11-20T10:00:00Z", "metric": "m", "value": 1.0}),
                Source("kafka", "bench", 0, i),
            )  # fmt: skip
            rows = builder.readings_table()
            started = time.perf_counter()
            commit_with_offsets(table, rows, topic="bench",
                                expected={0: i if i else None}, new={0: i + 1})  # fmt: skip
            durations.append(time.perf_counter() - started)
            if (i + 1) % 500 == 0:
                print(
                    f"  … {i + 1} commits, last 100 median "
                    f"{statistics.median(durations[-100:]) * 1000:.0f} ms",
                    file=sys.stderr,
                )
    finally:
        catalog.drop_table(name)
    return statistics.median(durations[:100]), statistics.median(durations[-100:])


def throughput(settings: Settings, readings: int, batch: int, targets: Targets) -> None:
    topic = make_topic(settings, "bench-ingest")
    sent = produce(settings, topic, readings, batch)
    messages = -(-sent // batch)
    a_time, values = consume_only(settings, topic, messages)
    b_time, b_rows = sink_limit(settings, values)
    c_time = end_to_end(settings, topic, sent)
    drop_topic(settings, topic)
    a, b, c = sent / a_time, b_rows / b_time, sent / c_time
    print(f"readings: {sent} in {len(values)} messages of {batch}")
    print(f"(a) consume-only        {a:12,.0f} readings/s")
    print(f"(b) Parquet → MinIO     {b:12,.0f} readings/s")
    print(f"(c) consumer → Iceberg  {c:12,.0f} readings/s")
    print(f"ratio c / min(a, b): {c / min(a, b):.2f}")
    targets.check("(c) consumer → Iceberg ≥ 150,000 readings/s", c >= 150_000, f"{c:,.0f}")
    targets.check("ratio c / min(a, b) ≥ 0.5", c / min(a, b) >= 0.5, f"{c / min(a, b):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=3_000_000)
    parser.add_argument("--batch", type=int, default=100, help="readings per Kafka message")
    parser.add_argument("--freshness-seconds", type=int, default=60)
    parser.add_argument("--freshness-rate", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=5_000)
    args = parser.parse_args()
    settings = Settings()
    Stack(settings, Console(stderr=True)).up()
    targets = Targets()

    if args.readings:
        throughput(settings, args.readings, args.batch, targets)
    if args.freshness_seconds:
        fresh = freshness(settings, args.freshness_seconds, args.freshness_rate)
        p50, p95 = fresh.quantile(0.5), fresh.quantile(0.95)
        print(
            f"freshness at {args.freshness_rate}/s for {args.freshness_seconds} s: "
            f"p50 {seconds_or_never(p50)}, p95 {seconds_or_never(p95)}"
        )
        if not fresh.latencies:
            print("  no reading was produced")
        if fresh.unseen:
            print(
                f"  {fresh.unseen:,} of {len(fresh.latencies):,} readings produced never became "
                "visible in Trino within 60 s of the last (counted as later than any limit)"
            )
        for problem in fresh.problems:
            print(f"  {problem}")
        met = targets.check(
            "freshness p95 ≤ 10 s", p95 is not None and p95 <= 10, seconds_or_never(p95)
        )
        met &= targets.check(
            "every reading produced visible in Trino",
            bool(fresh.latencies) and not fresh.unseen,
            f"{len(fresh.latencies) - fresh.unseen:,} of {len(fresh.latencies):,}",
        )
        if not met:
            print(f"  the consumer's log: {fresh.consumer_log}")
    if args.commits:
        first, last = commit_cost(settings, args.commits)
        print(
            f"commit latency: first 100 median {first * 1000:.0f} ms, last 100 median "
            f"{last * 1000:.0f} ms; ratio {last / first:.2f}"
        )
        targets.check("commit latency last 100 / first 100 ≤ 1.5", last / first <= 1.5,
                      f"{last / first:.2f}")  # fmt: skip
    targets.exit()


if __name__ == "__main__":
    main()
