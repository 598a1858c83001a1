"""Staging: atomic, self-contained batches from Parquet, DataFrames, folders and HF image structs."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest import staging
from datalake_pipelines.core.ingest.processing import list_pending


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def by_sha(rows, column="image"):
    return {r[f"{column}_sha256"]: r for r in rows}


def test_staged_batch_has_manifest_data_and_files(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / "src" / f"{i}.jpg") for i in range(3)]
    df = pd.DataFrame({"image": [str(p) for p in paths], "text": ["a", "b", "c"]})
    staging_dir, job_id = client.upload_task_data(
        df, "aihub", "docs", "ocr", "base_ocr", meta={"lang": "ko", "src": "real"}, dataset_description="d"
    )
    batch = lake.pending_batch(job_id)
    assert staging_dir == str(batch)
    manifest = json.loads((batch / "_metadata.json").read_text())
    for key, value in {
        "data_type": "task",
        "provider": "aihub",
        "dataset": "docs",
        "task": "ocr",
        "variant": "base_ocr",
        "meta": {"lang": "ko", "src": "real"},
        "description": "d",
        "row_count": 3,
        "image_columns": ["image"],
    }.items():
        assert manifest[key] == value, key
    assert manifest["created_at"]
    assert len(manifest["files"]) == 3
    table = pq.read_table(batch / "data.parquet")
    assert table.column("text").to_pylist() == ["a", "b", "c"]
    for rel, src, entry in zip(table.column("image").to_pylist(), paths, manifest["files"]):
        assert not os.path.isabs(rel)
        assert sha(batch / rel) == sha(src)
        assert entry["size"] == src.stat().st_size
    assert list_pending(lake) == [job_id]


def test_batch_appears_in_pending_only_complete(client, lake, tmp_path, make_jpeg, monkeypatch):
    paths = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(5)]
    seen = {}
    real_rename = os.rename

    def spy(src, dst):
        src = os.fspath(src)
        seen["src_name"] = os.path.basename(src)
        seen["pending_before"] = list_pending(lake)
        seen["complete"] = all(os.path.exists(os.path.join(src, n)) for n in ("_metadata.json", "data.parquet"))
        seen["files"] = len(os.listdir(os.path.join(src, "files", "image")))
        return real_rename(src, dst)

    monkeypatch.setattr(staging.os, "rename", spy)
    _, job_id = client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in paths]}), "inhouse", "scans")
    assert seen == {"src_name": f".tmp-{job_id}", "pending_before": [], "complete": True, "files": 5}
    assert list_pending(lake) == [job_id]


def test_half_written_batch_is_never_listed_or_processed(client, lake, tmp_path, make_jpeg):
    tmp = lake.pending_temp("halfway")
    (tmp / "files").mkdir(parents=True)
    make_jpeg(tmp / "files" / "a.jpg")
    (tmp / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "x"}))
    assert list_pending(lake) == []
    assert client.process_pending() == []
    assert tmp.is_dir() and not lake.processing_batch(".tmp-halfway").exists()


def test_failed_staging_leaves_nothing_behind(client, lake, tmp_path, make_jpeg):
    good = make_jpeg(tmp_path / "good.jpg")
    df = pd.DataFrame({"image": [str(good), str(tmp_path / "missing.jpg")]})
    with pytest.raises(ValidationError, match="missing.jpg"):
        client.upload_raw_data(df, "inhouse", "scans", job_id="broken-upload")
    assert list(lake.pending.iterdir()) == []


def test_staged_batch_is_self_contained(client, lake, tmp_path, make_jpeg, read_catalog):
    src = tmp_path / "src"
    paths = [make_jpeg(src / f"{i}.jpg") for i in range(3)]
    hashes = {sha(p) for p in paths}
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in paths]}), "inhouse", "scans")
    for p in paths:
        p.unlink()
    src.rmdir()
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert {r["image_sha256"] for r in read_catalog()} == hashes


def test_unknown_provider_is_refused_before_staging(client, lake, tmp_path, make_jpeg):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    with pytest.raises(ValidationError, match="unknown provider 'nobody'"):
        client.upload_raw_data(df, "nobody", "scans")
    assert list(lake.pending.iterdir()) == []


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"lang": "ko"}, "missing required field 'src'"),
        ({}, "missing required field 'lang'"),
        ({"lang": "fr", "src": "real"}, "lang='fr' is not one of"),
        ({"lang": "ko", "src": "scraped"}, "src='scraped' is not one of"),
    ],
)
def test_missing_or_disallowed_meta_is_refused_before_staging(client, lake, tmp_path, make_jpeg, meta, match):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    with pytest.raises(ValidationError, match=match):
        client.upload_task_data(df, "aihub", "docs", "ocr", "base_ocr", meta=meta)
    assert list(lake.pending.iterdir()) == []


def test_unknown_task_and_bad_names_are_refused(client, lake, tmp_path, make_jpeg):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    with pytest.raises(ValidationError, match="unknown task"):
        client.upload_task_data(df, "aihub", "docs", "nope", "v1", meta={})
    with pytest.raises(ValidationError, match="invalid dataset name"):
        client.upload_raw_data(df, "aihub", "Docs 2024")
    assert list(lake.pending.iterdir()) == []


def test_reused_job_id_is_refused(client, lake, tmp_path, make_jpeg):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    client.upload_raw_data(df, "inhouse", "scans", job_id="job-1")
    with pytest.raises(ValidationError, match="already used"):
        client.upload_raw_data(df, "inhouse", "scans", job_id="job-1")
    [result] = client.process_pending()
    assert result.status == "done"
    with pytest.raises(ValidationError, match="already used"):  # the job record still holds it
        client.upload_raw_data(df, "inhouse", "scans", job_id="job-1")
    with pytest.raises(ValidationError, match="invalid job id"):
        client.upload_raw_data(df, "inhouse", "scans", job_id="../escape")
    assert list_pending(lake) == []


def test_parquet_with_paths_relative_to_the_parquet_file(client, tmp_path, make_jpeg, read_catalog, monkeypatch):
    src = tmp_path / "dataset"
    paths = [make_jpeg(src / "imgs" / f"{i}.jpg", size=(40 + i, 30)) for i in range(3)]
    pq.write_table(
        pa.table({"image_path": [f"imgs/{i}.jpg" for i in range(3)], "label": ["x", "y", "z"]}), src / "data.parquet"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client.upload_raw_data(str(src / "data.parquet"), "huggingface", "coco")
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = by_sha(read_catalog(), "image_path")
    for i, p in enumerate(paths):
        row = rows[sha(p)]
        assert (row["image_path_width"], row["image_path_height"], row["image_path_format"]) == (40 + i, 30, "JPEG")
        assert row["label"] == "xyz"[i]
        assert (row["task"], row["variant"]) == ("raw", "mixed")


def test_dataframe_with_bytes_column(client, tmp_path, make_jpeg, read_catalog):
    blobs = [make_jpeg(tmp_path / f"{i}.jpg", size=(20, 10 + i)).read_bytes() for i in range(3)]
    df = pd.DataFrame({"image": blobs, "caption": ["one", "two", "three"]})
    client.upload_task_data(df, "aihub", "docs", "vqa", "v1", meta={"lang": "en", "src": "synthetic"})
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = by_sha(read_catalog())
    for i, blob in enumerate(blobs):
        row = rows[hashlib.sha256(blob).hexdigest()]
        assert (row["image_height"], row["caption"], row["lang"], row["src"]) == (
            10 + i,
            ["one", "two", "three"][i],
            "en",
            "synthetic",
        )


def test_hf_style_image_struct_column(client, tmp_path, make_jpeg, read_catalog):
    blobs = [make_jpeg(tmp_path / f"{i}.jpg").read_bytes() for i in range(2)]
    struct = pa.array(
        [{"bytes": b, "path": f"orig_{i}.jpg"} for i, b in enumerate(blobs)],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": struct, "text": ["a", "b"]}), tmp_path / "hf.parquet")
    client.upload_raw_data(str(tmp_path / "hf.parquet"), "huggingface", "hf_set")
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = read_catalog()
    assert sorted(r["image_sha256"] for r in rows) == sorted(hashlib.sha256(b).hexdigest() for b in blobs)
    assert {r["image_format"] for r in rows} == {"JPEG"}


def test_folder_upload_keeps_original_file_names(client, tmp_path, make_jpeg, read_catalog):
    folder = tmp_path / "drop"
    a = make_jpeg(folder / "a.jpg")
    b = make_jpeg(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    _, job_id = client.upload_raw_data(str(folder), "inhouse", "scans")
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert (result.rows_added, result.images_new, result.images_deduplicated) == (3, 3, 0)  # 2 images + 1 file
    rows = read_catalog()
    assert {r["variant"] for r in rows} == {"image"}
    images = {r["image_sha256"]: r["file_name"] for r in rows if r["image"]}
    assert images == {sha(a): "a.jpg", sha(b): os.path.join("sub", "b.jpg")}
    [notes] = [r for r in rows if r["file"]]  # not an image: stored as a file row, not dropped
    assert (notes["file_name"], notes["file_size"], notes["image"]) == ("notes.txt", 12, None)
    assert notes["file_sha256"] == sha(folder / "notes.txt")


def test_malformed_parquet_input_is_refused_with_its_name(client, lake, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValidationError, match="bad.parquet"):
        client.upload_raw_data(str(bad), "inhouse", "scans")
    with pytest.raises(ValidationError, match="does not exist"):
        client.upload_raw_data(str(tmp_path / "nope.parquet"), "inhouse", "scans")
    assert list(lake.pending.iterdir()) == []
