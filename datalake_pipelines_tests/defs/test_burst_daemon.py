"""A burst on the single-host default profile (issue 15): 50 batches into 10 partitions, the real daemon.

``config/dagster.yaml`` as shipped (queued run coordinator, at most 4 runs, one run per ``dagster/partition``)
in a temp ``DAGSTER_HOME``, ``dagster-daemon`` running the staging sensor. The batches arrive in two waves so
that every partition gets at least two runs whatever the sensor's tick timing: one batch per partition, and
once the sensor has claimed those, the other 40 at once (renamed into ``staging/pending`` together). The first
wave's runs are still queued or running when the second wave's are created, so the per-partition limit has to
hold the second runs back.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.lib.after_ingest import INGEST_JOB
from datalake_pipelines.lib.partitions import DAGSTER_PARTITION_TAG, JOB_IDS_TAG
from datalake_pipelines_tests.defs.test_e2e_daemon import Daemon, default_profile_env, make_images, wait_for

pytestmark = pytest.mark.timeout(400)

PARTITIONS = [("aihub", "burst", "ocr", f"v{i}") for i in range(10)]
PER_PARTITION = 5
ROWS = 2  # rows (and images) per batch: the burst is about coordination, not bytes


@pytest.fixture
def burst_env(tmp_path, monkeypatch):
    _home, lake, env = default_profile_env(tmp_path, monkeypatch)  # the default profile, unchanged
    daemon = Daemon(env, tmp_path / "daemon.log")
    daemon.start()
    yield lake, tmp_path / "daemon.log"
    daemon.kill(signal.SIGTERM)


def stage(client: DatalakeClient, src: Path, part: tuple[str, str, str, str], n: int) -> tuple[str, list[str]]:
    """One tiny batch: ``ROWS`` fresh images, each row's text naming its batch and row."""
    texts = [f"{'/'.join(part)}#{n}#{r}" for r in range(ROWS)]
    images = make_images(src / f"{part[3]}_{n}", ROWS, size=(8, 8))
    table = pa.table({"image": images, "text": texts})
    _, job_id = client.upload_task_data(table, *part, meta={"lang": "ko", "src": "real"})
    return job_id, texts


def test_burst_of_50_batches_into_10_partitions_respects_one_run_per_partition(burst_env, tmp_path):
    lake, log = burst_env
    client = DatalakeClient(lake, progress=False)
    expected: dict[str, list[str]] = {}
    for part in PARTITIONS:  # wave 1: one batch per partition
        job_id, texts = stage(client, tmp_path / "src", part, 0)
        expected[job_id] = texts
    the_lake = open_lake(lake)
    wait_for(lambda: not the_lake.pending(), 120, "the first wave to be claimed", log)
    # wave 2: the other 40 at once. Staged into a lake of their own first (uploads take a few ms each, over more
    # than one sensor tick), then renamed into pending/ within a few ms: one tick sees them all.
    shadow = DatalakeClient(tmp_path / "shadow", progress=False)
    for n in range(1, PER_PARTITION):
        for part in PARTITIONS:
            job_id, texts = stage(shadow, tmp_path / "src", part, n)
            expected[job_id] = texts
    for folder in sorted(shadow.layout.pending.iterdir()):
        folder.rename(client.layout.pending / folder.name)

    instance = dg.DagsterInstance.get()

    def all_done() -> bool:
        states = {b["job_id"]: b["state"] for b in the_lake.list_batches()}
        return all(states.get(j) == "done" for j in expected)

    wait_for(all_done, 300, "every batch to be done", log, interval=0.5)
    ingest_runs = dg.RunsFilter(job_name=INGEST_JOB)
    wait_for(lambda: all(r.is_finished for r in instance.get_runs(ingest_runs)), 120, "runs to end", log, 0.5)

    # each batch exactly once: one job record each, in exactly one successful run's job ids
    batches = the_lake.list_batches()
    assert sorted(b["job_id"] for b in batches) == sorted(expected)
    assert all(b["state"] == "done" and b["rows_added"] == ROWS for b in batches), batches
    records = instance.get_run_records(ingest_runs)
    assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
    in_runs = [j for r in records for j in r.dagster_run.tags[JOB_IDS_TAG].split(",")]
    assert sorted(in_runs) == sorted(expected)

    # every row present once
    con = duckdb.connect()
    glob = str(lake / "catalog" / "**" / "*.parquet")
    texts = [t for (t,) in con.execute(f"SELECT text FROM read_parquet('{glob}', hive_partitioning=true)").fetchall()]
    assert sorted(texts) == sorted(t for ts in expected.values() for t in ts)

    report = verify_lake(lake)
    assert report["ok"], report
    assert report["references"] == len(expected) * ROWS

    # one writer per partition: the runs of one partition never overlapped in time
    by_partition: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        by_partition[r.dagster_run.tags[DAGSTER_PARTITION_TAG]].append((r.start_time, r.end_time))
    assert sorted(by_partition) == sorted("/".join(p) for p in PARTITIONS)
    for key, spans in by_partition.items():
        spans.sort()
        assert len(spans) >= 2, (key, spans)  # the waves guarantee it: the limit had something to hold back
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"{key}: a run started at {start} before the previous one ended at {end}"
    # and it was exercised: some partition's later run was created (queued) while an earlier one was unfinished
    created = {r.dagster_run.run_id: r.create_timestamp.timestamp() for r in records}
    held_back = [
        r.dagster_run.tags[DAGSTER_PARTITION_TAG]
        for r in records
        for other in records
        if other.dagster_run.tags[DAGSTER_PARTITION_TAG] == r.dagster_run.tags[DAGSTER_PARTITION_TAG]
        and other.start_time < r.start_time
        and created[r.dagster_run.run_id] < other.end_time
    ]
    assert held_back, "no run was ever queued behind a run of its own partition"
