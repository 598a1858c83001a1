"""One big batch, many steps: an ingest run stores its files in chunk steps and commits once (real instance).

``DATALAKE_CHUNK_FILES=5`` and a batch of 24 rows (23 distinct JPEGs, one row twice): the run has one
``store_chunk`` step per chunk, every row is in the catalog once, the assets pass their checks, on a folder and on
moto S3. A chunk run twice changes nothing; a lost or broken chunk record only makes the commit store those files
itself; a staged file changed after its chunk ran (replaced, or rewritten in place with its mtime set back) is
stored again from what it now holds, never catalogued under the hash the chunk saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds
import pytest
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.ingest.chunks import record_key
from datalake_pipelines.core.ingest.processing import ProcessOptions
from datalake_pipelines.core.ingest.verify import check_asset_files
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.lake.protocol import ClaimOptions
from datalake_pipelines.lib.partitions import LakePartitionKey
from datalake_pipelines_tests.support.s3_pipeline import run, tick

pytestmark = pytest.mark.timeout(300)

ROWS = 24  # 23 distinct images, the first one twice
STEP_SUCCESS = dg.DagsterEventType.STEP_SUCCESS


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("DATALAKE_CHUNK_FILES", "5")
    monkeypatch.setenv("DATALAKE_NUM_PROC", "2")
    return request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")


def big_batch(base: str, folder: Path, make_jpeg, first: bytes | None = None) -> str:
    """Rows 0..23 staged as ``files/image/<row>.jpg``; row 23 repeats row 0's image (``first``: its bytes)."""
    paths = [str(make_jpeg(folder / f"i{i:02}.jpg")) for i in range(ROWS - 1)]
    if first is not None:
        Path(paths[0]).write_bytes(first)
    frame = pd.DataFrame({"image": [*paths, paths[0]], "n": list(range(ROWS))})
    return DatalakeClient(base, progress=False).upload_raw_data(frame, "inhouse", "chunky", "chunk test")[1]


def partition(lake) -> PartitionRef:
    [ref] = [r for r in lake.partitions() if r.dataset == "chunky"]
    return ref


def catalog_rows(base: str, ref: PartitionRef) -> list[dict]:
    with open_lake(base).partition_view(ref) as view:
        return ds.dataset(view.partition_dir(ref)).to_table().to_pylist()


def claimed(base: str) -> list[str]:
    groups = open_lake(base).claim_ready({}, ClaimOptions(quiet_seconds=0)).groups
    return [job_id for ids in groups.values() for job_id in ids]


def assets_ok(base: str, ref: PartitionRef) -> None:
    lake = open_lake(base)
    with lake.partition_view(ref) as view:
        outcome = check_asset_files(view, ref, None, lake.asset_sha256, storage=lake.storage, sizes_of=lake.asset_sizes)
    assert outcome.passed and outcome.checked == ROWS, outcome.problems


def test_a_big_batch_runs_in_chunk_steps_and_commits_every_row_once(base, tmp_path, make_jpeg):
    big_batch(base, tmp_path / "src", make_jpeg)
    with dg.instance_for_test() as instance:
        result = tick(instance, base)
        outcome = run(instance, base, result.run_requests[0], result)
        assert outcome.success
        steps = [e.step_key for e in instance.all_logs(outcome.run_id, of_type=STEP_SUCCESS)]
        meta = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
        checks = {c.check_name: c.passed for c in outcome.get_asset_check_evaluations()}
    chunk_steps = [s for s in steps if s.startswith("catalog_partition.store_chunk[")]
    assert len(chunk_steps) == 5  # 24 staged files (the repeated row has its own copy), 5 per chunk
    assert {"catalog_partition.plan_chunks", "catalog_partition.commit", "duckdb_catalog"} <= set(steps)
    assert meta["chunks"].value == 5 and meta["rows_added"].value == ROWS
    assert (meta["images_new"].value, meta["images_deduplicated"].value) == (ROWS - 1, 1)
    assert checks and all(checks.values()), checks
    ref = LakePartitionKey.parse(result.run_requests[0].partition_key).ref
    rows = catalog_rows(base, ref)
    assert sorted(r["n"] for r in rows) == list(range(ROWS))
    assert len({r["row_hash"] for r in rows}) == ROWS
    assets_ok(base, ref)
    assert list(open_lake(base).storage.list(keys.CHUNKS)) == []  # the records went with the batch


def test_a_failing_chunk_step_is_left_to_the_commit(tmp_path, make_jpeg, monkeypatch):
    """A chunk step that fails (not a dead worker: that one is retried) logs a warning and the run goes on: the
    commit stores the chunk's files itself."""
    from datalake_pipelines.core.lake.local import LocalLake

    base = str(tmp_path / "lake")
    monkeypatch.setenv("DATALAKE_CHUNK_FILES", "5")
    store = LocalLake.store_chunk

    def flaky(self, chunk, options):
        if chunk.n == 1:
            raise OSError("disk full")
        return store(self, chunk, options)

    monkeypatch.setattr(LocalLake, "store_chunk", flaky)
    big_batch(base, tmp_path / "src", make_jpeg)
    with dg.instance_for_test() as instance:
        result = tick(instance, base)
        outcome = run(instance, base, result.run_requests[0], result)
        warnings = [e.message for e in instance.all_logs(outcome.run_id) if "not stored" in (e.message or "")]
    assert outcome.success and warnings == [
        "chunk 1 of batch " + result.run_requests[0].tags["datalake/job_ids"] + " not stored (OSError: disk full)"
    ]
    meta = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
    assert (meta["rows_added"].value, meta["images_new"].value, meta["images_deduplicated"].value) == (ROWS, 23, 1)
    assert sorted(r["n"] for r in catalog_rows(base, partition(open_lake(base)))) == list(range(ROWS))


def multiprocess_ingest() -> dg.JobDefinition:
    """``catalog_partition`` under Dagster's multiprocess executor: every step in a process of its own."""
    from datalake_pipelines.definitions import resources
    from datalake_pipelines.defs.ingest.assets import catalog_partition

    job = dg.define_asset_job("multiprocess_ingest", [catalog_partition], executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=[catalog_partition], resources=resources(), jobs=[job]).resolve_job_def(job.name)


def test_the_steps_share_nothing_but_the_lake_and_small_outputs(tmp_path, make_jpeg, monkeypatch):
    """Any executor: with one process per step, the chunk steps and the commit still ingest every row once."""
    base = str(tmp_path / "lake")
    monkeypatch.setenv("DATALAKE_BASE_PATH", base)
    monkeypatch.setenv("DATALAKE_CHUNK_FILES", "12")
    big_batch(base, tmp_path / "src", make_jpeg)
    instance = dg.DagsterInstance.get()  # the test's own DAGSTER_HOME: the child processes open it too
    result = tick(instance, base)
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    request = result.run_requests[0]
    tags = {**request.tags, "dagster/partition": request.partition_key}
    with dg.execute_job(dg.reconstructable(multiprocess_ingest), instance, tags=tags) as outcome:
        assert outcome.success
    events = instance.all_logs(outcome.run_id, of_type=STEP_SUCCESS)
    assert len([e for e in events if "store_chunk[" in (e.step_key or "")]) == 2
    assert len({e.dagster_event.pid for e in events}) == 4  # plan, 2 chunks, commit: each its own process
    rows = catalog_rows(base, partition(open_lake(base)))
    assert sorted(r["n"] for r in rows) == list(range(ROWS)) and len({r["row_hash"] for r in rows}) == ROWS
    assets_ok(base, partition(open_lake(base)))


def test_a_small_batch_plans_no_chunk(tmp_path, make_jpeg, monkeypatch):
    """A run whose files fit in one chunk is plan + commit: no chunk step, no record, nothing more to pay."""
    base = str(tmp_path / "lake")
    monkeypatch.setenv("DATALAKE_CHUNK_FILES", str(ROWS))
    big_batch(base, tmp_path / "src", make_jpeg)
    with dg.instance_for_test() as instance:
        result = tick(instance, base)
        outcome = run(instance, base, result.run_requests[0], result)
        steps = [e.step_key for e in instance.all_logs(outcome.run_id, of_type=STEP_SUCCESS)]
    assert outcome.success and not [s for s in steps if "store_chunk" in s]
    assert outcome.asset_materializations_for_node("catalog_partition")[0].metadata["chunks"].value == 0


def stored_in_chunks(base: str, tmp_path: Path, make_jpeg, first: bytes | None = None):
    """A claimed big batch whose chunks all ran: (lake, job id, chunks, options)."""
    big_batch(base, tmp_path / "src", make_jpeg, first)
    [job_id] = claimed(base)
    lake = open_lake(base)
    chunks = lake.plan_chunks([job_id], 5)
    options = ProcessOptions(num_proc=2)
    for chunk in chunks:
        lake.store_chunk(chunk, options)
    return lake, job_id, chunks, options


def test_a_chunk_run_twice_changes_nothing(base, tmp_path, make_jpeg):
    lake, job_id, chunks, options = stored_in_chunks(base, tmp_path, make_jpeg)
    assets = {o.key: (o.size, o.etag) for o in lake.storage.list(keys.ASSETS)}
    record = lake.storage.read_bytes(record_key(job_id, 2))
    again = lake.store_chunk(chunks[2], options)  # a re-execution, or a second worker after the first died
    assert again["files"] == 5 and again["recorded"] == 5
    assert lake.storage.read_bytes(record_key(job_id, 2)) == record
    assert {o.key: (o.size, o.etag) for o in lake.storage.list(keys.ASSETS)} == assets
    [result] = lake.process([job_id], options, chunks=True)
    assert (result.status, result.rows_added, result.images_new, result.images_deduplicated) == ("done", ROWS, 23, 1)
    assets_ok(base, partition(lake))


def test_a_chunk_stored_again_after_its_worker_died_counts_its_files_new(base, tmp_path, make_jpeg):
    """Its worker published the chunk's assets and died before the record; the chunk re-delivered to another
    worker finds them there (locally: the staged files themselves, linked), yet they are the batch's new content."""
    lake, job_id, chunks, options = stored_in_chunks(base, tmp_path, make_jpeg)
    lake.storage.delete([record_key(job_id, 2)])
    again = lake.store_chunk(chunks[2], options)
    assert (again["files"], again["new"], again["recorded"]) == (5, 5, 5)
    [result] = lake.process([job_id], options, chunks=True)
    assert (result.status, result.rows_added, result.images_new, result.images_deduplicated) == ("done", ROWS, 23, 1)


def test_a_lost_or_broken_chunk_record_only_costs_time(base, tmp_path, make_jpeg):
    lake, job_id, _chunks, options = stored_in_chunks(base, tmp_path, make_jpeg)
    lake.storage.delete([record_key(job_id, 1)])  # a worker died after publishing, before its record
    lake.storage.write_bytes(record_key(job_id, 3), b'{"files": [')  # half written
    [result] = lake.process([job_id], options, chunks=True)
    assert (result.status, result.rows_added, result.rows_rejected) == ("done", ROWS, 0)
    assert result.images_new + result.images_deduplicated == ROWS
    ref = partition(lake)
    assert sorted(r["n"] for r in catalog_rows(base, ref)) == list(range(ROWS))
    assets_ok(base, ref)


def same_size_jpegs() -> tuple[bytes, bytes]:
    """Two different solid-colour JPEGs of one size (an in-place rewrite that keeps the file's size)."""
    by_size: dict[int, bytes] = {}
    for red in range(0, 256, 4):
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (red, 90, 30)).save(out, "JPEG", quality=90)
        data = out.getvalue()
        if len(data) in by_size and by_size[len(data)] != data:
            return by_size[len(data)], data
        by_size[len(data)] = data
    raise AssertionError("no two JPEGs of one size")


def changed_after_its_chunk(base: str, tmp_path: Path, make_jpeg, change) -> None:
    """Row 0's staged file is changed by ``change(lake, job_id, row0 key, new bytes)`` after every chunk ran; the
    commit must catalogue what it now holds, never the chunk's stale record.

    The first bytes enter the lake after the upload (``create_data_file``), so the upload stages them (content it
    knows is left unstaged: known_content.py) and the chunk records a dedup hit that never links (or locks) the
    file. The upload's recorded hashes are dropped from the manifest: a batch that has them is catalogued by them
    (what was uploaded, test_known_content.py), and this test is about the staged file as the only source."""
    first, second = same_size_jpegs()
    big_batch(base, tmp_path / "src", make_jpeg, first)
    (tmp_path / "before").mkdir()
    (tmp_path / "before" / "x.jpg").write_bytes(first)
    DatalakeClient(base, progress=False).create_data_file(tmp_path / "before" / "x.jpg")
    [job_id] = claimed(base)
    lake = open_lake(base)
    manifest_key = f"{keys.processing_batch(job_id) if lake.kind == 'local' else keys.pending_batch(job_id)}/"
    manifest_key += "_metadata.json"
    manifest = json.loads(lake.storage.read_bytes(manifest_key))
    manifest["files"] = [{k: v for k, v in f.items() if k != "sha256"} for f in manifest.get("files") or []]
    lake.storage.write_bytes(manifest_key, json.dumps(manifest).encode())
    options = ProcessOptions(num_proc=2)
    for chunk in lake.plan_chunks([job_id], 5):
        lake.store_chunk(chunk, options)
    change(lake, job_id, "files/image/00000000.jpg", second)
    [result] = lake.process([job_id], options, chunks=True)
    assert result.status == "done" and result.rows_added == ROWS
    rows = {r["n"]: r for r in catalog_rows(base, partition(lake))}
    assert rows[0]["image_sha256"] == hashlib.sha256(second).hexdigest()
    assert rows[ROWS - 1]["image_sha256"] == hashlib.sha256(first).hexdigest()  # its own staged copy, unchanged


def test_a_staged_file_replaced_after_its_chunk_ran_is_stored_again(base, tmp_path, make_jpeg):
    def replace(lake, job_id: str, row0: str, data: bytes) -> None:
        if base.startswith("s3://"):
            lake.storage.write_bytes(f"{keys.pending_batch(job_id)}/{row0}", data)  # another ETag
            return
        (tmp_path / "other.jpg").write_bytes(data)
        os.replace(tmp_path / "other.jpg", lake.storage.path(f"{keys.processing_batch(job_id)}/{row0}"))

    changed_after_its_chunk(base, tmp_path, make_jpeg, replace)


def test_a_staged_file_rewritten_in_place_with_its_mtime_set_back_is_stored_again(tmp_path, make_jpeg):
    """What size, mtime and inode cannot tell (a local file; an S3 object has no in-place write): the ctime can."""

    def rewrite(lake, job_id: str, row0: str, data: bytes) -> None:
        staged = lake.storage.path(f"{keys.processing_batch(job_id)}/{row0}")
        before = staged.stat()
        staged.write_bytes(data)
        os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = staged.stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)

    changed_after_its_chunk(str(tmp_path / "lake"), tmp_path, make_jpeg, rewrite)


def test_a_row_rejected_for_another_column_is_quarantined_with_the_file_a_chunk_stored(base, tmp_path, make_jpeg):
    """Row 7's thumbnail is truncated, its image fine (a chunk stored it; an S3 commit does not download it): the
    quarantined row still comes with both files, so it can be fixed and resubmitted."""
    images = [str(make_jpeg(tmp_path / "src" / f"i{i:02}.jpg")) for i in range(12)]
    thumbs = [str(make_jpeg(tmp_path / "src" / f"t{i:02}.jpg", size=(16, 12))) for i in range(12)]
    Path(thumbs[7]).write_bytes(Path(thumbs[7]).read_bytes()[:200])
    frame = pd.DataFrame({"image": images, "thumb": thumbs})
    DatalakeClient(base, progress=False).upload_raw_data(frame, "inhouse", "chunky", "two", ["image", "thumb"])
    [job_id] = claimed(base)
    lake = open_lake(base)
    options = ProcessOptions(num_proc=2)
    for chunk in lake.plan_chunks([job_id], 5):
        lake.store_chunk(chunk, options)
    [result] = lake.process([job_id], options, chunks=True)
    assert (result.status, result.rows_added, result.rows_rejected) == ("done", 11, 1)
    quarantined = sorted(o.size for o in lake.storage.list(keys.rejected_batch(job_id)) if "/files/" in o.key)
    assert quarantined == sorted(Path(p).stat().st_size for p in (images[7], thumbs[7]))
