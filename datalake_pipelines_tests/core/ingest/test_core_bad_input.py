"""Bad input: rows escaping the batch, missing files, bad manifests, malformed Parquet, empty batches."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.hash_index import HashIndex


def sha_file(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (symlinks recorded by target)."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            out[rel] = ("link", os.readlink(p)) if os.path.islink(p) else sha_file(p)
    return out


def stage(client, tmp_path, make_jpeg, n=4, **kwargs):
    paths = [make_jpeg(tmp_path / "src" / f"{i}.jpg") for i in range(n)]
    _, job_id = client.upload_raw_data(
        pd.DataFrame({"image": [str(p) for p in paths], "n": list(range(n))}),
        "inhouse",
        "scans",
        image_columns=["image"],
        **kwargs,
    )
    return job_id, paths


def edit_rows(batch, column, values):
    table = pq.read_table(batch / "data.parquet")
    idx = table.schema.get_field_index(column)
    table = table.set_column(idx, column, pa.array(values, pa.string()))
    pq.write_table(table, batch / "data.parquet")


def asset_hashes(lake):
    return {p.name.split(".")[0] for p in lake.assets_root.rglob("*") if p.is_file()}


def test_rows_pointing_outside_the_batch_are_rejected_and_never_read(client, lake, tmp_path, make_jpeg, read_catalog):
    job_id, paths = stage(client, tmp_path, make_jpeg, n=5)
    batch = lake.pending_batch(job_id)
    # Valid images outside the batch: if processing read them they would be ingested.
    sibling = make_jpeg(lake.pending / "x")
    absolute = make_jpeg(tmp_path / "outside" / "abs.jpg")
    linked = make_jpeg(tmp_path / "outside" / "linked.jpg")
    os.symlink(linked, batch / "files" / "link.jpg")
    outside_dir = tmp_path / "outside" / "dir"
    make_jpeg(outside_dir / "in_dir.jpg")
    os.symlink(outside_dir, batch / "files" / "dirlink")
    table = pq.read_table(batch / "data.parquet")
    values = table.column("image").to_pylist()
    values[0] = "../x"
    values[1] = str(absolute)
    values[2] = "files/link.jpg"
    values[3] = "files/dirlink/in_dir.jpg"
    edit_rows(batch, "image", values)
    [result] = client.process_pending(max_reject_ratio=0.9)
    assert result.status == "done", result.error
    reasons = {r["row"]: r["reason"] for r in result.rejected}
    assert sorted(reasons) == [0, 1, 2, 3]
    assert "'..'" in reasons[0]
    assert "absolute" in reasons[1]
    assert "symlink" in reasons[2] and "symlink" in reasons[3]
    rows = read_catalog()
    assert [r["n"] for r in rows] == [4]
    outside = {sha_file(p) for p in (sibling, absolute, linked, outside_dir / "in_dir.jpg")}
    assert not outside & asset_hashes(lake)
    index = HashIndex(lake.hash_index)
    assert all(index.get(h) is None for h in outside)
    # The quarantined batch holds the rows, but no copy of anything outside the batch.
    rejected = lake.rejected_batch(job_id)
    assert pq.read_table(rejected / "data.parquet").column("n").to_pylist() == [0, 1, 2, 3]
    assert not outside & set(snapshot(rejected).values())


def test_symlinked_data_parquet_fails_the_batch(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=2)
    batch = lake.pending_batch(job_id)
    outside = tmp_path / "outside.parquet"
    os.replace(batch / "data.parquet", outside)
    os.symlink(outside, batch / "data.parquet")
    [result] = client.process_pending()
    assert result.status == "failed"
    assert "data.parquet" in result.error
    assert not list(lake.catalog_root.rglob("*.parquet"))


def test_missing_image_file_is_a_rejected_row(client, lake, tmp_path, make_jpeg, read_catalog):
    job_id, paths = stage(client, tmp_path, make_jpeg, n=4)
    batch = lake.pending_batch(job_id)
    staged = pq.read_table(batch / "data.parquet").column("image").to_pylist()
    (batch / staged[2]).unlink()
    [result] = client.process_pending()
    assert result.status == "done"
    assert [(r["row"], r["file"]) for r in result.rejected] == [(2, staged[2])]
    assert "missing" in result.rejected[0]["reason"]
    assert sorted(r["n"] for r in read_catalog()) == [0, 1, 3]
    error = json.loads((lake.rejected_batch(job_id) / "error.json").read_text())
    assert error["rejected"][0]["row"] == 2


def test_too_many_rejected_rows_fail_the_whole_batch(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=4)
    batch = lake.pending_batch(job_id)
    for rel in pq.read_table(batch / "data.parquet").column("image").to_pylist()[:3]:
        (batch / rel).write_bytes(b"not an image at all")
    before = snapshot(batch)
    [result] = client.process_pending()  # 3/4 rejected > default 0.5
    assert result.status == "failed"
    assert "max_reject_ratio" in result.error
    failed = lake.failed_batch(job_id)
    error = json.loads((failed / "error.json").read_text())
    assert sorted(r["row"] for r in error["rejected"]) == [0, 1, 2]
    after = snapshot(failed)
    after.pop("error.json")
    assert after == before
    assert not list(lake.catalog_root.rglob("*.parquet"))
    # An image that was already stored stays a complete, content-addressed file (never half-written).
    for asset in (p for p in lake.assets_root.rglob("*") if p.is_file()):
        assert asset.name == f"{sha_file(asset)}.jpg"


def test_every_row_rejected_fails_even_with_a_permissive_ratio(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=2)
    batch = lake.pending_batch(job_id)
    for rel in pq.read_table(batch / "data.parquet").column("image").to_pylist():
        (batch / rel).write_bytes(b"garbage")
    [result] = client.process_pending(max_reject_ratio=1.0)
    assert result.status == "failed"
    assert "every row" in result.error
    assert (lake.failed_batch(job_id) / "error.json").is_file()


def test_unknown_provider_in_a_hand_edited_manifest_fails_the_batch(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=2)
    batch = lake.pending_batch(job_id)
    manifest = json.loads((batch / "_metadata.json").read_text())
    manifest["provider"] = "nobody"
    (batch / "_metadata.json").write_text(json.dumps(manifest))
    before = snapshot(batch)
    [result] = client.process_pending()
    assert result.status == "failed"
    failed = lake.failed_batch(job_id)
    error = json.loads((failed / "error.json").read_text())
    assert "unknown provider 'nobody'" in error["error"]
    after = snapshot(failed)
    after.pop("error.json")
    assert after == before
    assert not list(lake.catalog_root.rglob("*.parquet"))


def test_disallowed_meta_in_a_hand_edited_manifest_fails_the_batch(client, lake, tmp_path, make_jpeg):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    _, job_id = client.upload_task_data(df, "aihub", "docs", "ocr", "v1", meta={"lang": "ko", "src": "real"})
    path = lake.pending_batch(job_id) / "_metadata.json"
    manifest = json.loads(path.read_text())
    manifest["meta"] = {"lang": "klingon"}
    path.write_text(json.dumps(manifest))
    [result] = client.process_pending()
    assert result.status == "failed"
    error = json.loads((lake.failed_batch(job_id) / "error.json").read_text())
    assert "lang='klingon'" in error["error"] and "missing required field 'src'" in error["error"]


@pytest.mark.parametrize("content", [b"", b"PAR1garbagePAR1", b"\x00" * 100])
def test_malformed_parquet_fails_the_batch_naming_the_file(client, lake, tmp_path, make_jpeg, content):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=2)
    batch = lake.pending_batch(job_id)
    (batch / "data.parquet").write_bytes(content)
    before = snapshot(batch)
    [result] = client.process_pending()
    assert result.status == "failed"
    failed = lake.failed_batch(job_id)
    error = json.loads((failed / "error.json").read_text())
    assert "data.parquet" in error["error"] and "malformed Parquet" in error["error"]
    after = snapshot(failed)
    after.pop("error.json")
    assert after == before
    assert not list(lake.catalog_root.rglob("*.parquet"))


def test_truncated_parquet_fails_without_a_partial_catalog_part(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=12)
    data = lake.pending_batch(job_id) / "data.parquet"
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2] + raw[-8:])  # footer kept, column chunks cut
    [result] = client.process_pending()
    assert result.status == "failed"
    assert not [p for p in lake.catalog_root.rglob("*") if p.is_file()]


def test_manifest_that_is_not_json_fails_the_batch(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=1)
    (lake.pending_batch(job_id) / "_metadata.json").write_text("{not json")
    [result] = client.process_pending()
    assert result.status == "failed"
    assert "_metadata.json" in result.error and "not valid JSON" in result.error


def test_empty_upload_is_refused_at_upload_and_an_empty_hand_drop_fails_with_a_reason(client, lake, tmp_path):
    with pytest.raises(ValidationError, match="no rows"):
        client.upload_raw_data(
            pd.DataFrame({"image": pd.Series([], dtype=object)}), "inhouse", "scans", image_columns=["image"]
        )
    assert not [p for p in lake.pending.iterdir() if p.is_dir()]
    # a hand-dropped data.parquet never passed through upload: processing refuses it
    folder = lake.pending / "empty-drop"
    folder.mkdir()
    pq.write_table(pa.table({"t": pa.array([], pa.string())}), folder / "data.parquet")
    (folder / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "scans"}))
    [result] = client.process_pending()
    assert result.status == "failed"
    error = json.loads((lake.failed_batch("empty-drop") / "error.json").read_text())
    assert "empty batch" in error["error"]
    assert not list(lake.catalog_root.rglob("*.parquet"))


def test_batch_without_data_or_manifest_fails(client, lake, tmp_path, make_jpeg):
    job_id, _ = stage(client, tmp_path, make_jpeg, n=1)
    (lake.pending_batch(job_id) / "data.parquet").unlink()
    (lake.pending / "no-manifest").mkdir()
    results = {r.job_id: r for r in client.process_pending()}
    assert results[job_id].status == "failed" and "no data.parquet" in results[job_id].error
    assert results["no-manifest"].status == "failed" and "_metadata.json" in results["no-manifest"].error


def test_hand_dropped_folder_with_a_symlink_out_is_quarantined(client, lake, tmp_path, make_jpeg, read_catalog):
    drop = lake.pending / "hand-drop-1"
    good = {sha_file(make_jpeg(drop / f"{i}.jpg")) for i in range(3)}
    outside = make_jpeg(tmp_path / "secret.jpg")
    os.symlink(outside, drop / "zz_link.jpg")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert {r["image_sha256"] for r in read_catalog()} == good
    assert [r["file"] for r in result.rejected] == ["zz_link.jpg"]
    assert sha_file(outside) not in asset_hashes(lake)


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_a_text_table_path_is_refused_with_what_to_do(client, lake, tmp_path, name):
    """Found in review: ``upload --data rows.csv`` failed with Arrow's "Parquet magic bytes not found" only."""
    path = tmp_path / name
    path.write_text("image,text\na.jpg,hello\n" if name.endswith(".csv") else '{"text": "hello"}\n')
    with pytest.raises(ValidationError, match=r"not a readable Parquet file.*pd\.read_csv.*DataFrame"):
        client.upload_task_data(path, "aihub", "d", "ocr", "v", meta={"lang": "ko", "src": "real"})
    assert not lake.pending.exists() or not any(lake.pending.iterdir())  # nothing staged
