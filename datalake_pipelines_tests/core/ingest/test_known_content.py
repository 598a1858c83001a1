"""Content the lake holds is not staged again (core/ingest/known_content.py): the upload names it by SHA-256 and
processing finds it in the hash index without reading a byte; a manifest hash never names new content."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow.parquet as pq

from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines.core.lake.layout import BATCH_MANIFEST, PartitionRef

PARTITION = PartitionRef("inhouse", "scans", "raw", "mixed")


def upload(client, paths, run):
    df = pd.DataFrame({"image": [str(p) for p in paths], "run": run})
    return client.upload_raw_data(df, "inhouse", "scans", image_columns=["image"])[1]


def manifest(lake, job_id):
    return json.loads((lake.pending_batch(job_id) / BATCH_MANIFEST).read_text())


def staged_files(lake, job_id):
    return sorted(p.name for p in (lake.pending_batch(job_id) / "files").rglob("*") if p.is_file())


def test_a_re_ingest_stages_no_file_the_lake_holds_and_processing_reads_none(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(3)]
    first = upload(client, paths, "first")
    assert all("sha256" not in f for f in manifest(lake, first)["files"])  # an empty lake: nothing to look up
    [done] = client.process_pending()
    assert (done.status, done.images_new) == ("done", 3)
    new = make_jpeg(tmp_path / "new.jpg")
    second = upload(client, [*paths, new], "second")
    files = manifest(lake, second)["files"]
    assert all(len(f["sha256"]) == 64 for f in files)
    assert staged_files(lake, second) == ["00000003.jpg"]  # only the new image was copied
    [again] = client.process_pending()
    assert (again.status, again.rows_added, again.images_new, again.images_deduplicated) == ("done", 4, 1, 3)
    rows = pq.read_table(lake.part_file(PARTITION, second)).to_pylist()
    firsts = {r["image_sha256"]: r for r in pq.read_table(lake.part_file(PARTITION, first)).to_pylist()}
    for row in rows[:3]:  # the same asset and facts as the first ingest gave
        old = firsts[row["image_sha256"]]
        assert (row["image"], row["image_width"], row["image_height"]) == (
            old["image"],
            old["image_width"],
            old["image_height"],
        )


def test_content_gone_from_the_lake_after_the_upload_rejects_only_its_row(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(4)]
    upload(client, paths, "first")
    client.process_pending()
    job_id = upload(client, [*paths, make_jpeg(tmp_path / "new.jpg")], "second")
    assert staged_files(lake, job_id) == ["00000004.jpg"]
    gone = manifest(lake, job_id)["files"][0]["sha256"]
    index = HashIndex(lake.hash_index)
    index.remove_paths({index.get(gone).path})  # collected between the upload and processing
    [result] = client.process_pending()
    assert (result.status, result.rows_added, result.rows_rejected) == ("done", 4, 1)
    [rejected] = result.rejected
    assert rejected["row"] == 0 and "upload the file again" in rejected["reason"]


def test_a_manifest_hash_never_names_new_content(client, lake, tmp_path, make_jpeg):
    upload(client, [make_jpeg(tmp_path / "seed.jpg")], "seed")
    client.process_pending()
    new = make_jpeg(tmp_path / "new.jpg")
    job_id = upload(client, [new], "second")
    path = lake.pending_batch(job_id) / BATCH_MANIFEST
    doc = json.loads(path.read_text())
    doc["files"][0]["sha256"] = "0" * 64  # wrong: processing hashes the staged file itself
    path.write_text(json.dumps(doc))
    [result] = client.process_pending()
    assert (result.status, result.images_new) == ("done", 1)
    [row] = pq.read_table(lake.part_file(PARTITION, job_id)).to_pylist()
    assert row["image_sha256"] == hashlib.sha256(new.read_bytes()).hexdigest()
