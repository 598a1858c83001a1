"""Processing: dedup by SHA-256, content-addressed assets, hive catalog, idempotence, compaction."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from datalake_pipelines.core.catalog.parts import compact_partition, partition_files
from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines.core.ingest.processing import ProcessOptions, claim_batch, process_batch
from datalake_pipelines.core.lake.layout import PartitionRef


def sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def asset_files(lake):
    return sorted(p for p in lake.assets_root.rglob("*") if p.is_file())


def upload_images(client, paths, dataset="scans", **extra):
    df = pd.DataFrame({"image": [str(p) for p in paths], **extra})
    return client.upload_raw_data(df, "inhouse", dataset, image_columns=["image"])


def test_assets_are_named_by_sha256_and_sharded(client, lake, tmp_path, make_jpeg, read_catalog):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(6)]
    upload_images(client, paths)
    [result] = client.process_pending()
    assert result.status == "done", result.error
    files = asset_files(lake)
    assert len(files) == 6
    for f in files:
        digest = sha_bytes(f.read_bytes())
        assert f.name == f"{digest}.jpg"
        assert f.relative_to(lake.assets_root).parts == (
            "provider=inhouse",
            "dataset=scans",
            digest[:2],
            digest[2:4],
            f.name,
        )
    originals = {sha_bytes(p.read_bytes()) for p in paths}
    rows = read_catalog()
    assert {r["image_sha256"] for r in rows} == originals
    for r in rows:
        assert lake.resolve(r["image"]).is_file()
        assert r["image"].endswith(f"{r['image_sha256']}.jpg")
        assert r["batch_id"] == result.job_id and r["ingested_at"] is not None
    assert result.bytes_stored == sum(p.stat().st_size for p in paths)


def test_catalog_reads_as_hive_dataset_with_partition_columns(client, lake, tmp_path, make_jpeg):
    upload_images(client, [make_jpeg(tmp_path / "a.jpg")])
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "b.jpg"))], "text": ["hello"]})
    client.upload_task_data(df, "aihub", "docs", "ocr", "base_ocr", meta={"lang": "ja", "src": "real"})
    results = client.process_pending()
    assert [r.status for r in results] == ["done", "done"]
    table = ds.dataset(lake.catalog_root, partitioning="hive").to_table(
        columns=["provider", "dataset", "task", "variant", "image_sha256"]
    )
    assert sorted(tuple(r[c] for c in ("provider", "dataset", "task", "variant")) for r in table.to_pylist()) == [
        ("aihub", "docs", "ocr", "base_ocr"),
        ("inhouse", "scans", "raw", "mixed"),
    ]
    meta = json.loads(lake.partition_metadata(PartitionRef("aihub", "docs", "ocr", "base_ocr")).read_text())
    assert meta["row_count"] == 1 and meta["meta"] == {"lang": "ja", "src": "real"}
    [ocr_job] = [r.job_id for r in results if r.partition == "aihub/docs/ocr/base_ocr"]
    assert [b["job_id"] for b in meta["batches"]] == [ocr_job]


def test_same_images_uploaded_twice_add_nothing(client, lake, tmp_path, make_jpeg, read_catalog):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(5)]
    upload_images(client, paths)
    [first] = client.process_pending()
    files_before = {f: f.stat().st_mtime_ns for f in asset_files(lake)}
    rows_before = read_catalog()
    upload_images(client, paths)
    [second] = client.process_pending()
    assert second.status == "done", second.error
    assert (first.images_new, second.images_new, second.bytes_stored) == (5, 0, 0)
    assert (second.rows_added, second.rows_duplicate, second.images_deduplicated) == (0, 5, 5)
    assert {f: f.stat().st_mtime_ns for f in asset_files(lake)} == files_before
    rows_after = read_catalog()
    assert len(rows_after) == len(rows_before) == 5
    assert HashIndex(lake.hash_index).count() == 5


def test_same_image_in_two_rows_is_stored_once(client, lake, tmp_path, make_jpeg, read_catalog):
    img = make_jpeg(tmp_path / "same.jpg")
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(img, copy)
    other = make_jpeg(tmp_path / "other.jpg")
    upload_images(client, [img, copy, other], label=["a", "b", "c"])
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert (result.rows_added, result.images_new, result.images_deduplicated) == (3, 2, 1)
    assert len(asset_files(lake)) == 2
    rows = read_catalog()
    assert sorted(r["label"] for r in rows) == ["a", "b", "c"]
    assert len({r["image"] for r in rows}) == 2


def test_identical_rows_in_one_batch_are_all_kept_and_a_reupload_adds_none(
    client, lake, tmp_path, make_jpeg, read_catalog
):
    img = make_jpeg(tmp_path / "same.jpg")
    upload_images(client, [img, img, img], label=["a", "a", "a"])
    [result] = client.process_pending()
    assert (result.rows_added, result.rows_duplicate, result.images_new) == (3, 0, 1)
    rows = read_catalog()
    assert len(rows) == 3 and len({r["row_hash"] for r in rows}) == 3
    upload_images(client, [img, img, img], label=["a", "a", "a"])
    [again] = client.process_pending()
    assert (again.status, again.rows_added, again.rows_duplicate) == ("done", 0, 3)
    assert len(read_catalog()) == 3


def test_processing_a_batch_again_after_a_crash_never_duplicates(client, lake, tmp_path, make_jpeg, read_catalog):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(6)]
    _, job_id = upload_images(client, paths)
    backup = tmp_path / "backup"
    shutil.copytree(lake.pending_batch(job_id), backup)
    [first] = client.process_pending()
    assert first.rows_added == 6
    rows = sorted(r["row_hash"] for r in read_catalog())
    # Crash after the catalog commit but before the batch folder was removed: it is still in processing/.
    shutil.copytree(backup, lake.processing_batch(job_id))
    again = process_batch(lake, job_id, ProcessOptions(num_proc=2, batch_size=4))
    assert again.status == "done", again.error
    assert (again.images_new, again.bytes_stored) == (0, 0)
    assert sorted(r["row_hash"] for r in read_catalog()) == rows
    ref = PartitionRef("inhouse", "scans", "raw", "mixed")
    assert json.loads(lake.partition_metadata(ref).read_text())["row_count"] == 6
    # ...or the operator moved it back to pending/. Such a crash leaves no job record (it is written after the
    # clean-up); with one, the pending batch would be another batch reusing a done job id, refused unprocessed.
    lake.job_record(job_id).unlink()
    shutil.copytree(backup, lake.pending_batch(job_id))
    [third] = client.process_pending()
    assert third.status == "done", third.error
    assert sorted(r["row_hash"] for r in read_catalog()) == rows
    assert len(asset_files(lake)) == 6


def test_compaction_keeps_the_same_rows(client, lake, tmp_path, make_jpeg, read_catalog):
    for batch in range(3):
        upload_images(client, [make_jpeg(tmp_path / f"{batch}-{i}.jpg") for i in range(4)], label=[str(batch)] * 4)
    assert [r.status for r in client.process_pending()] == ["done"] * 3
    ref = PartitionRef("inhouse", "scans", "raw", "mixed")
    assert len(partition_files(lake, ref)) == 3

    def key(r):
        return (r["row_hash"], r["image"], r["image_sha256"], r["label"], r["batch_id"])

    before = sorted(map(key, read_catalog()))
    result = compact_partition(lake, ref)
    assert (result.files_before, result.rows, result.duplicates_dropped) == (3, 12, 0)
    assert [p.name for p in partition_files(lake, ref)] == ["data.parquet"]
    assert sorted(map(key, read_catalog())) == before
    assert json.loads(lake.partition_metadata(ref).read_text())["row_count"] == 12
    # idempotent, and a later batch still dedups against the compacted file
    compact_partition(lake, ref)
    assert sorted(map(key, read_catalog())) == before
    upload_images(client, [tmp_path / "0-0.jpg"], label=["0"])
    [dup] = client.process_pending()
    assert (dup.rows_added, dup.rows_duplicate) == (0, 1)


def test_compaction_interrupted_before_removing_parts_is_repaired(client, lake, tmp_path, make_jpeg, read_catalog):
    for batch in range(2):
        upload_images(client, [make_jpeg(tmp_path / f"{batch}-{i}.jpg") for i in range(3)])
    client.process_pending()
    ref = PartitionRef("inhouse", "scans", "raw", "mixed")
    parts = tmp_path / "parts"
    parts.mkdir()
    for p in partition_files(lake, ref):
        shutil.copy2(p, parts / p.name)
    before = sorted(r["row_hash"] for r in read_catalog())
    compact_partition(lake, ref)
    # A crash after data.parquet was published but before the part files were deleted:
    for p in parts.iterdir():
        shutil.copy2(p, lake.partition_dir(ref) / p.name)
    result = compact_partition(lake, ref)
    assert (result.rows, result.duplicates_dropped) == (6, 6)
    assert sorted(r["row_hash"] for r in read_catalog()) == before


def test_claim_is_exclusive(client, lake, tmp_path, make_jpeg):
    _, job_id = upload_images(client, [make_jpeg(tmp_path / "a.jpg")])
    assert claim_batch(lake, job_id) is True
    assert claim_batch(lake, job_id) is False
    assert lake.processing_batch(job_id).is_dir()


def test_job_record_is_written(client, lake, tmp_path, make_jpeg):
    _, job_id = upload_images(client, [make_jpeg(tmp_path / "a.jpg"), make_jpeg(tmp_path / "b.jpg")])
    client.process_pending()
    record = json.loads(lake.job_record(job_id).read_text())
    assert (record["status"], record["rows_in"], record["rows_added"], record["partition"]) == (
        "done",
        2,
        2,
        "inhouse/scans/raw/mixed",
    )
    assert not lake.processing_batch(job_id).exists() and not lake.pending_batch(job_id).exists()
    assert pq.read_table(record["part_file"]).num_rows == 2


def test_parallel_and_batched_processing_gives_the_same_catalog(lake, tmp_path, make_jpeg):
    from datalake_pipelines.client import DatalakeClient

    paths = [make_jpeg(tmp_path / f"{i}.jpg", size=(16, 16)) for i in range(25)]
    outcomes = []
    for n, (num_proc, batch_size) in enumerate([(1, 1000), (2, 3)]):
        c = DatalakeClient(tmp_path / f"lake{n}", num_proc=num_proc, batch_size=batch_size, progress=False)
        upload_images(c, paths)
        [result] = c.process_pending()
        assert result.rows_added == 25
        rows = ds.dataset(c.layout.catalog_root, partitioning="hive").to_table().to_pylist()
        outcomes.append(sorted((r["image"], r["row_hash"]) for r in rows))
        part_dir = c.layout.catalog_root / "provider=inhouse/dataset=scans/task=raw/variant=mixed"
        assert len(list(os.scandir(part_dir))) >= 2
    assert outcomes[0] == outcomes[1]
