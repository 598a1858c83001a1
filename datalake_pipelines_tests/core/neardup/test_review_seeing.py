"""Issue 18 review: near-duplicate keep order, near-constant images, missing pHashes, bad partition keys, and
``exclude_near_duplicates`` with a ``limit``."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datalake_pipelines.core.export.download import download
from datalake_pipelines.core.lake.layout import InvalidNameError
from datalake_pipelines.core.neardup.report import near_duplicate_report
from datalake_pipelines_tests.core.neardup.test_near_dups import make_image

META = {"lang": "en", "src": "real"}


def ingest(client, rows, dataset="shots"):
    client.upload_task_data(pd.DataFrame(rows), "inhouse", dataset, "ocr", "v1", meta=META)
    assert [r.status for r in client.process_pending()] == ["done"]


def test_a_bad_partition_key_type_is_an_invalid_name(client, lake):
    with pytest.raises(InvalidNameError, match="provider/dataset/task/variant"):
        client.near_duplicates(partition=5)


def test_within_one_batch_the_first_uploaded_row_is_kept(client, lake, tmp_path):
    path = tmp_path / "same.png"
    make_image(3).save(path)
    ids = [f"row{i}" for i in range(8)]
    ingest(client, [{"image": str(path), "doc_id": i} for i in ids])
    catalog = pq.read_table(next((lake.base / "catalog").rglob("*.parquet"))).to_pylist()
    hashes = {r["doc_id"]: r["row_hash"] for r in catalog}
    assert min(hashes.values()) != hashes["row0"]  # so row_hash order alone would keep another row
    report = near_duplicate_report(str(lake.base))
    (cluster,) = report["clusters"]
    assert cluster["members"][0]["row_hash"] == hashes["row0"] and cluster["members"][0]["kept"]
    assert [m["row_hash"] for m in cluster["members"]] == [hashes[i] for i in ids]  # upload order


def test_near_constant_images_are_left_out_of_clusters_and_counted(client, lake, tmp_path):
    rows = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (255, 255, 255)]):
        p = tmp_path / f"plain{i}.png"
        Image.new("RGB", (120, 90), colour).save(p)
        rows.append({"image": str(p), "doc_id": f"plain{i}"})
    p = tmp_path / "photo.png"
    make_image(5).save(p)
    rows.append({"image": str(p), "doc_id": "photo"})
    ingest(client, rows)
    report = near_duplicate_report(str(lake.base))
    assert report["cluster_count"] == 0 and report["images_near_constant"] == 3 and report["images"] == 1  # clustered
    report = near_duplicate_report(str(lake.base), include_near_constant=True)
    assert report["cluster_count"] == 1 and report["clusters"][0]["size"] == 3  # red, blue, white: distance <= 1


def test_exclusion_reports_rows_without_phash(client, lake, tmp_path, monkeypatch):
    monkeypatch.setenv("DATALAKE_PHASH", "0")
    rows = []
    for i in range(3):
        p = tmp_path / f"old{i}.png"
        make_image(10 + i).save(p)
        rows.append({"image": str(p), "doc_id": f"old{i}"})
    ingest(client, rows)
    manifest = download(lake, {"datasets": ["shots"]}, "parquet", tmp_path / "d", progress=False,
                        exclude_near_duplicates=8)  # fmt: skip
    assert manifest["rows"] == 3 and manifest["near_duplicates"]["images_without_phash"] == 3


def test_a_limited_download_names_only_kept_rows_it_holds(client, lake, tmp_path):
    rows = []
    for i in range(3):
        p = tmp_path / f"u{i}.png"
        make_image(20 + i).save(p)
        rows.append({"image": str(p), "doc_id": f"u{i}"})
    dup = tmp_path / "dup.png"
    make_image(30).save(dup)
    ingest(client, [*rows, {"image": str(dup), "doc_id": "d0"}])
    again = tmp_path / "dup-again.jpg"
    make_image(30).save(again, quality=80)
    ingest(client, [{"image": str(again), "doc_id": "d1"}])  # later: excluded, d0 kept
    whole = download(lake, {"datasets": ["shots"]}, "parquet", tmp_path / "all", progress=False,
                     exclude_near_duplicates=8)  # fmt: skip
    assert whole["rows"] == 4 and whole["near_duplicates"]["rows_excluded"] == 1
    out = tmp_path / "two"
    manifest = download(lake, {"datasets": ["shots"], "limit": 2}, "parquet", out, progress=False,
                        exclude_near_duplicates=8)  # fmt: skip
    written = set(pq.read_table(out / "data.parquet").column("row_hash").to_pylist())
    listed = json.loads((out / "near_duplicates.json").read_text())
    assert manifest["rows"] == 2
    assert all(e["kept_row_hash"] in written for e in listed["excluded"])
    assert listed["rows_excluded"] == len(listed["excluded"]) and listed["rows_excluded_in_selection"] == 1
