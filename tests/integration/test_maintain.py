"""Maintenance on the real stack: compaction keeps results and offsets, garbage
collection deletes only what no live reference reaches, retention keeps what agents and
inspectors still need.

Compaction runs on a test's own namespaces (`m<id>_bronze` …). Garbage collection
always walks the whole warehouse, as it must: a test gives it a short grace period and
no history, so it deletes every expired file of the test stack.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from lakehouse_testing.bronze_writer import append_from_kafka, create_environment, drop_environment
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from ingest.offsets import commit_with_offsets, read_offsets
from lakehouse import registry
from lakehouse.clients import iceberg_catalog, kafka_config, postgres_connection, trino_connection
from lakehouse.errors import FencedCommitError, MaintenanceLockedError
from lakehouse.maintain import records
from lakehouse.maintain.retention import kafka_expiry_risks
from lakehouse.maintain.runner import Maintainer
from lakehouse.nessie import NessieClient
from lakehouse.s3 import s3_client
from tests.integration.test_transform import env, reading  # noqa: F401 - the env fixture

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
NO_GRACE = {"gc_grace": timedelta(seconds=1), "history_retention": timedelta(0)}


@pytest.fixture
def lake(stack, stack_settings, credentials, unique) -> Iterator[tuple[str, Any]]:
    prefix = f"m{unique}_"
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    table = create_environment(catalog, prefix)
    yield prefix, table
    drop_environment(iceberg_catalog(stack_settings, credentials, s3_key="ingest"), prefix)


def query(settings: Any, sql: str) -> list[Any]:
    cursor = trino_connection(settings).cursor()
    cursor.execute(sql)
    return cursor.fetchall()


def bronze_answers(settings: Any, prefix: str) -> list[list[Any]]:
    """What analysts ask of bronze, plus every row in full."""
    t = f"lake.{prefix}bronze.readings"
    return [
        query(settings, f"select count(*), count(distinct seq), sum(value) from {t}"),
        query(
            settings,
            f"select device_id, date(ts), count(*), min(seq), max(seq), avg(value) "
            f"from {t} group by 1, 2 order by 1, 2",
        ),
        query(settings, f"select * from {t} order by device_id, seq"),
    ]


def small_commits(table: Any, commits: int, per_commit: int = 10) -> int:
    """`commits` appends of `per_commit` readings each on Kafka partition 0, spread over
    two days, as the consumer writes them every few seconds; returns the rows."""
    total = 0
    for i in range(commits):
        day = DAY0 + timedelta(days=i % 2)
        rows = [
            (("dev-1", "ten-1", "site-1"), {
                "seq": i * per_commit + j + 1, "metric": "temperature", "value": float(i + j),
                "ts": (day + timedelta(seconds=i * per_commit + j)).isoformat(),
            })
            for j in range(per_commit)
        ]  # fmt: skip
        total += append_from_kafka(table, rows, partition=0)
    return total


def test_compaction_cuts_bronze_files_tenfold_and_keeps_results_and_offsets(
    lake, stack_settings, credentials
):
    prefix, table = lake
    written = small_commits(table, 1000)
    before = bronze_answers(stack_settings, prefix)
    table.refresh()
    offsets_before = read_offsets(table, "readings")
    assert offsets_before == {0: 10_000}

    report = Maintainer(stack_settings, credentials, schema_prefix=prefix).run(
        gc=False, retention=False
    )

    assert report.outcome == "done", report.error
    (result,) = [t for t in report.tables if t.table == f"{prefix}bronze.readings"]
    assert result.action.startswith("compacted")
    assert result.before.files >= 1000
    assert result.before.files >= 10 * result.after.files
    assert bronze_answers(stack_settings, prefix) == before
    table.refresh()
    assert read_offsets(table, "readings") == offsets_before
    with postgres_connection(stack_settings, credentials) as conn:
        stored = conn.execute(
            "select files_before, files_after, bytes_after from maintenance.tables "
            "where run_id = %s and table_name = %s",
            (report.run_id, f"{prefix}bronze.readings"),
        ).fetchone()
    assert stored == (result.before.files, result.after.files, result.after.bytes)

    # Ingestion resumes from the offsets compaction kept: the next batch commits, a
    # writer holding stale offsets is fenced, and every reading is there once.
    reading_10001 = {"seq": 10_001, "metric": "temperature", "value": 1.0, "ts": DAY0.isoformat()}
    more = [(("dev-1", "ten-1", "site-1"), reading_10001)]
    with pytest.raises(FencedCommitError):
        commit_with_offsets(
            table, pa.table({}), topic="readings", expected={0: 5_000}, new={0: 10_001}
        )
    assert append_from_kafka(table, more, partition=0) == 1
    table.refresh()
    assert read_offsets(table, "readings") == {0: 10_001}
    count, distinct, _ = query(stack_settings, f"select count(*), count(distinct seq), 0 "
                                               f"from lake.{prefix}bronze.readings")[0]  # fmt: skip
    assert (count, distinct) == (written + 1, written + 1)


def test_bronze_compaction_commits_while_a_consumer_keeps_committing(
    lake, stack_settings, credentials
):
    prefix, table = lake
    written = small_commits(table, 40)
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    writer = catalog.load_table(f"{prefix}bronze.readings")
    stop = threading.Event()
    appended: list[int] = []

    def keep_committing() -> None:
        # Every half second: ten times as often as a consumer at its default.
        seq = 100_000
        while not stop.wait(0.5):
            row = {"seq": seq, "metric": "temperature", "value": 1.0, "ts": DAY0.isoformat()}
            appended.append(append_from_kafka(writer, [(("dev-2", "ten-1", "site-1"), row)],
                                              partition=1))  # fmt: skip
            seq += 1

    thread = threading.Thread(target=keep_committing)
    thread.start()
    try:
        time.sleep(1)
        report = Maintainer(stack_settings, credentials, schema_prefix=prefix).run(
            gc=False, retention=False
        )
    finally:
        stop.set()
        thread.join(60)

    assert report.outcome == "done", report.error
    (result,) = [t for t in report.tables if t.table == f"{prefix}bronze.readings"]
    assert result.action == "compacted"
    assert result.after.files < result.before.files
    table.refresh()
    assert read_offsets(table, "readings") == {0: 400, 1: len(appended)}
    count, distinct = query(
        stack_settings,
        f"select count(*), count(distinct (device_id, seq)) from lake.{prefix}bronze.readings",
    )[0]
    assert count == distinct == written + len(appended)


def test_a_second_pass_is_refused_while_one_holds_the_lock(stack_settings, credentials):
    conn = postgres_connection(stack_settings, credentials)
    try:
        records.ensure_schema(conn)
        records.acquire_lock(conn)
        with pytest.raises(MaintenanceLockedError):
            Maintainer(stack_settings, credentials).run(compact=False, gc=False)
    finally:
        conn.close()


PROBE = Schema(NestedField(1, "id", LongType(), required=False),
               NestedField(2, "label", StringType(), required=False))  # fmt: skip


def probe_rows(label: str, n: int = 5) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64()), "label": [label] * n})


def data_keys(table: Any, bucket: str) -> set[str]:
    table.refresh()
    return {
        task.file.file_path.split(f"s3://{bucket}/", 1)[1] for task in table.scan().plan_files()
    }


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in {"404", "NoSuchKey"}:
            return False
        raise
    return True


def test_gc_keeps_what_a_branch_reaches_and_deletes_what_only_expired_commits_did(
    lake, stack_settings, credentials, unique
):
    prefix, _ = lake
    bucket = stack_settings.minio.bucket
    s3 = s3_client(stack_settings, credentials, "reader")
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    probe = catalog.create_table(f"{prefix}bronze.gc_probe", PROBE)
    probe.append(probe_rows("first"))
    first = data_keys(probe, bucket)
    branch = f"gc_{unique}"
    with NessieClient(stack_settings) as nessie:
        nessie.create_branch(branch)
    try:
        probe.overwrite(probe_rows("second"))
        second = data_keys(probe, bucket)
        probe.overwrite(probe_rows("third"))
        third = data_keys(probe, bucket)
        assert first.isdisjoint(second) and second.isdisjoint(third)
        time.sleep(2)  # older than the grace period

        report = Maintainer(stack_settings, credentials).run(
            compact=False, gc=True, retention=False, **NO_GRACE
        )

        assert report.outcome == "done", report.error
        assert report.gc is not None and report.gc.deleted_files >= len(second)
        assert not any(exists(s3, bucket, key) for key in second)
        assert all(exists(s3, bucket, key) for key in first | third)
        on_branch = iceberg_catalog(stack_settings, credentials, ref=branch, s3_key="ingest")
        assert (
            on_branch.load_table(f"{prefix}bronze.gc_probe")
            .scan()
            .to_arrow()
            .column("label")
            .to_pylist()
            == ["first"] * 5
        )
        main_rows = query(stack_settings, f"select label, count(*) from "
                                          f"lake.{prefix}bronze.gc_probe group by 1")  # fmt: skip
        assert main_rows == [["third", 5]]
        with postgres_connection(stack_settings, credentials) as conn:
            stored = conn.execute(
                "select gc_deleted_files from maintenance.runs where run_id = %s",
                (report.run_id,),
            ).fetchone()
        assert stored == (report.gc.deleted_files,)

        # A later collection with the usual day of history does not look for what this
        # one let go (the second overwrite's files are gone): it starts where it stopped.
        again = Maintainer(stack_settings, credentials).run(
            compact=False, gc=True, retention=False, dry_run=True
        )
        assert again.outcome == "done", again.error
        assert again.gc_history_from == report.gc_history_from
    finally:
        with NessieClient(stack_settings) as nessie:
            nessie.delete_branch(branch)


def test_a_transform_in_flight_during_gc_publishes_correctly(env, stack_settings):  # noqa: F811
    device = env.devices["a"]
    rows = [(device, reading(seq, seq * 10.0, "temperature", 20.0 + seq)) for seq in range(1, 41)]
    append_from_kafka(env.table, rows, partition=0)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.setdefault("report", env.run()))
    worker.start()
    with postgres_connection(env.settings, env.credentials) as conn:
        deadline = time.monotonic() + 120
        started = None
        while started is None and time.monotonic() < deadline:
            row = conn.execute(
                "select started_at, branch from transform.runs where outcome = 'running' "
                "and schema_prefix = %s", (env.prefix,),
            ).fetchone()  # fmt: skip
            started = row[0] if row else None
            time.sleep(0.2)
    assert started is not None, "the transform run never started"
    time.sleep(5)  # dbt is writing on the run's branch

    report = Maintainer(stack_settings, env.credentials).run(
        compact=False, gc=True, retention=False, gc_grace=timedelta(0),
        history_retention=timedelta(0),
    )  # fmt: skip
    worker.join(600)

    assert report.outcome == "done", report.error
    # Nothing written since the run started could be deleted.
    assert report.gc_cutoff is not None and report.gc_cutoff <= started
    assert result["report"].outcome == "published"
    assert env.query("select count(*), sum(seq) from {p}silver.readings") == [[40, 820]]
    assert env.query("select sum(readings) from {p}gold.fct_device_hourly") == [[40]]


def test_receipts_past_retention_go_and_a_retry_within_it_gets_its_receipt(
    stack, stack_settings, credentials, registry_conn, unique
):
    device = f"mr-{unique}"
    token = registry.register(registry_conn, device, tenant="tenant-m", site="site-m",
                              lat=1.0, lon=2.0)  # fmt: skip
    url = f"{stack.service('gateway').url}/v1/readings"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def upload(batch: str, seq: int) -> httpx.Response:
        body = [{"seq": seq, "ts": "2026-11-20T12:00:00Z", "metric": "temperature", "value": 1.0}]
        return httpx.post(url, content=orjson.dumps(body), timeout=30,
                          headers={**headers, "Idempotency-Key": batch})  # fmt: skip

    old, recent = upload("old", 1), upload("recent", 2)
    assert (old.status_code, recent.status_code) == (202, 202)
    registry_conn.execute(
        "update registry.upload_batches set created_at = now() - interval '8 days' "
        "where device_id = %s and batch_id = 'old'", (device,),
    )  # fmt: skip

    report = Maintainer(stack_settings, credentials).run(compact=False, gc=False)

    assert report.receipts_deleted is not None and report.receipts_deleted >= 1
    kept = registry_conn.execute(
        "select batch_id from registry.upload_batches where device_id = %s order by 1", (device,)
    ).fetchall()
    assert kept == [("recent",)]
    retried = upload("recent", 2)
    assert retried.status_code == 200
    assert retried.json() == recent.json()


def test_a_failed_runs_branch_goes_after_the_inspection_window_only(
    stack_settings, credentials, unique
):
    old_run, new_run = f"20260101_000000_{unique[:6]}", f"20260102_000000_{unique[:6]}"
    with (
        NessieClient(stack_settings) as nessie,
        postgres_connection(stack_settings, credentials) as conn,
    ):
        conn.autocommit = True
        for run_id, age_days in ((old_run, 8), (new_run, 1)):
            nessie.create_branch(f"transform_{run_id}")
            conn.execute(
                "insert into transform.runs (run_id, started_at, finished_at, outcome, "
                "full_refresh, branch) values (%s, now() - make_interval(days => %s), "
                "now() - make_interval(days => %s), 'failed', false, %s)",
                (run_id, age_days, age_days, f"transform_{run_id}"),
            )
        try:
            report = Maintainer(stack_settings, credentials).run(compact=False, gc=False)
            names = {ref.name for ref in nessie.references()}
            assert f"transform_{old_run}" in report.branches_deleted
            assert f"transform_{old_run}" not in names
            assert f"transform_{new_run}" in names
        finally:
            nessie.delete_branch(f"transform_{new_run}")
            conn.execute("delete from transform.runs where run_id in (%s, %s)",
                         (old_run, new_run))  # fmt: skip


def test_unconsumed_kafka_data_is_reported_before_it_expires(stack_settings, topic_factory):
    topic = topic_factory(partitions=2)
    config = kafka_config(stack_settings, "admin")
    producer = Producer(config)
    sent_at = datetime.now(UTC)
    for i in range(3):
        producer.produce(topic, b"x", partition=0, key=str(i).encode())
    producer.flush(30)
    retention = timedelta(days=7)  # the broker's default

    risks = kafka_expiry_risks(config, topic, {0: 1}, warning=timedelta(days=8))
    assert [(r.partition, r.committed, r.latest) for r in risks] == [(0, 1, 3)]
    expires_at = risks[0].expires_at
    assert expires_at is not None
    assert abs((expires_at - (sent_at + retention)).total_seconds()) < 60
    assert "2 message(s) not yet in bronze" in risks[0].describe(datetime.now(UTC))
    assert kafka_expiry_risks(config, topic, {0: 1}, warning=timedelta(hours=1)) == []
    assert kafka_expiry_risks(config, topic, {0: 3}, warning=timedelta(days=8)) == []
