"""download(): Parquet (single file and hive), Arrow IPC and HuggingFace outputs with a checksummed manifest."""

from __future__ import annotations

import hashlib
import json

import datasets
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datalake_pipelines.core.catalog.parts import CatalogError
from datalake_pipelines.core.export.download import Selection, download
from datalake_pipelines_tests.core.catalog.test_query import OTHER, lake  # noqa: F401 - fixture


def manifest_of(out) -> dict:
    return json.loads((out / "download.json").read_text())


def test_parquet_single_file_with_checksums(lake, tmp_path):
    out = tmp_path / "dl"
    result = download(lake, {"providers": ["acme"], "tasks": ["ocr"]}, "parquet", out, batch_size=2, progress=False)
    table = pq.read_table(out / "data.parquet")
    assert table.num_rows == 4 == result["rows"]
    assert {"provider", "variant", "ocr_result", "image", "image_sha256", "lang"} <= set(table.column_names)
    doc = manifest_of(out)
    assert doc["format"] == "parquet" and doc["rows"] == 4
    assert doc["selection"]["providers"] == ["acme"]
    assert {p["key"] for p in doc["partitions"]} == {"acme/invoices/ocr/base", "acme/invoices/ocr/ja"}
    assert doc["catalog_snapshot_at"]
    assert set(doc["files"]) == {"data.parquet"}
    for name, facts in doc["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == facts["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_parquet_hive_output(lake, tmp_path):
    out = tmp_path / "hive"
    download(lake, Selection(datasets=["invoices", "receipts"]), "parquet", out, hive=True, progress=False)
    parts = sorted(p.relative_to(out / "data").parent.as_posix() for p in (out / "data").rglob("*.parquet"))
    assert "provider=acme/dataset=invoices/task=raw/variant=image" in parts
    assert "provider=globex/dataset=receipts/task=ocr/variant=base" in parts
    table = pads.dataset(out / "data", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 7
    doc = manifest_of(out)
    assert all(name.startswith("data/") for name in doc["files"])
    for name, facts in doc["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == facts["sha256"]


def test_arrow_output_is_readable(lake, tmp_path):
    out = tmp_path / "arrow"
    download(lake, {"providers": "globex"}, "arrow", out, progress=False)
    with pa.ipc.open_file(out / "data.arrow") as reader:
        table = reader.read_all()
    assert table.num_rows == 1 and table["provider"].to_pylist() == ["globex"]
    assert pads.dataset(out / "data.arrow", format="arrow").to_table().num_rows == 1


def test_hf_dataset_has_decoded_images_and_metadata(lake, tmp_path):
    out = tmp_path / "hf"
    download(lake, {"providers": "acme", "tasks": "raw"}, "hf", out, batch_size=1, progress=False)
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 2
    first = ds[0]
    assert isinstance(first["image"], Image.Image)
    assert {first["image"].size, ds[1]["image"].size} == {(20, 10), (10, 20)}
    assert first["image"].size == (first["image_width"], first["image_height"])
    assert first["caption"] in ("a cat", "a dog") and first["provider"] == "acme"
    assert first["image_format"] == "PNG" and len(first["image_sha256"]) == 64
    assert "batch_id" in ds.column_names and "ingested_at" in ds.column_names
    doc = manifest_of(out)
    assert doc["rows"] == 2 and doc["files"]
    for name, facts in doc["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == facts["sha256"]


def test_text_search_selection(lake, tmp_path):
    out = tmp_path / "search"
    sel = {"column": "ocr_result", "text": "INVOICE", "json_path": "$.words[*].text"}
    download(lake, sel, "parquet", out, progress=False)
    table = pq.read_table(out / "data.parquet")
    assert sorted(table["provider"].to_pylist()) == ["acme", "globex"]
    assert "matched_snippet" in table.column_names


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "hf"])
def test_empty_selection_gives_valid_empty_output(lake, tmp_path, fmt):
    out = tmp_path / fmt
    result = download(lake, {"providers": "acme", "where": {"lang": "xx"}}, fmt, out, progress=False)
    assert result["rows"] == 0 and manifest_of(out)["rows"] == 0
    if fmt == "parquet":
        assert pq.read_table(out / "data.parquet").num_rows == 0
    elif fmt == "arrow":
        assert pa.ipc.open_file(out / "data.arrow").read_all().num_rows == 0
    else:
        assert len(datasets.load_from_disk(str(out))) == 0


def test_empty_lake_hive_and_hf(tmp_path):
    from datalake_pipelines.core.lake.layout import LakeLayout

    layout = LakeLayout(tmp_path / "empty")
    download(layout, None, "parquet", tmp_path / "h", hive=True, progress=False)
    assert (tmp_path / "h" / "data").is_dir() and manifest_of(tmp_path / "h")["rows"] == 0
    download(layout, None, "hf", tmp_path / "e", progress=False)
    assert len(datasets.load_from_disk(str(tmp_path / "e"))) == 0


def test_existing_output_and_bad_input(lake, tmp_path):
    out = tmp_path / "dl"
    download(lake, {"providers": "globex"}, "parquet", out, progress=False)
    with pytest.raises(FileExistsError):
        download(lake, {"providers": "globex"}, "parquet", out, progress=False)
    download(lake, {"providers": "acme"}, "parquet", out, progress=False, overwrite=True)
    assert manifest_of(out)["rows"] == 6
    with pytest.raises(ValueError, match="unknown download format"):
        download(lake, None, "csv", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown selection key"):
        download(lake, {"provider": "acme"}, "parquet", tmp_path / "x", progress=False)


def test_corrupt_file_fails_cleanly(lake, tmp_path):
    lake.part_file(OTHER, "job-bad").write_bytes(b"garbage")
    out = tmp_path / "dl"
    with pytest.raises(CatalogError, match="part-job-bad.parquet"):
        download(lake, None, "arrow", out, progress=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    download(lake, {"providers": "acme"}, "arrow", out, progress=False)  # other partitions still download
    assert manifest_of(out)["rows"] == 6
