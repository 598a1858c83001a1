"""run_export over a catalog built by the real pipeline: filters, formats, snapshot, sampling and error codes."""

from __future__ import annotations

import hashlib
import json

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import ExportError, run_export

BASE = ("aihub", "docs", "ocr", "base")  # lang=ko src=real, 3 rows (one null text)
EN = ("aihub", "docs", "ocr", "en")  # lang=en src=synthetic, 2 rows
SCANS = ("inhouse", "scans", "ocr", "base")  # lang=ko src=real, 2 rows


def upload(client, tmp_path, make_jpeg, ref, meta, texts, scores, tag):
    images = [str(make_jpeg(tmp_path / "src" / f"{tag}-{i}.jpg")) for i in range(len(texts))]
    df = pd.DataFrame({"image": images, "text": texts, "score": scores})
    client.upload_task_data(df, *ref, meta=meta, image_columns=["image"])
    results = client.process_pending()
    assert all(r.status == "done" for r in results), [r.error for r in results]


@pytest.fixture
def lake_rows(client, lake, tmp_path, make_jpeg, read_catalog):
    """A lake of 7 rows in 3 partitions; returns the catalog rows."""
    upload(client, tmp_path, make_jpeg, BASE, {"lang": "ko", "src": "real"}, ["가", "b", None], [1, 2, 3], "base")
    upload(client, tmp_path, make_jpeg, EN, {"lang": "en", "src": "synthetic"}, ["d", "e"], [4, 5], "en")
    upload(client, tmp_path, make_jpeg, SCANS, {"lang": "ko", "src": "real"}, ["f", "g"], [6, 7], "scans")
    return read_catalog()


def export(lake, tmp_path, **params):
    params.setdefault("destination", str(tmp_path / "out"))
    return run_export(lake, params)


def hashes(path) -> set[str]:
    return {h for b in iter_export_batches(path, 2) for h in b.column("row_hash").to_pylist()}


def part_of(row) -> tuple:
    return (row["provider"], row["dataset"], row["task"], row["variant"])


def test_filter_is_and_across_partition_and_row_columns(lake, lake_rows, tmp_path):
    result = export(lake, tmp_path, filter={"provider": ["aihub"], "lang": ["ko", "en"], "src": ["real"]})
    expected = {r["row_hash"] for r in lake_rows if part_of(r) == BASE}
    assert hashes(result["path"]) == expected
    assert result["total_filter_count"] == result["scan_data_count"] == 3
    assert result["total_data_count"] == 5  # rows of the selected (aihub) partitions at the snapshot
    assert result["task_progress"] == "100%"
    both = export(lake, tmp_path, filter={"lang": ["ko"], "score": ["2", "6", "7"]})  # text cast per column
    assert hashes(both["path"]) == {r["row_hash"] for r in lake_rows if r["score"] in (2, 6, 7)}
    numbers = export(lake, tmp_path, filter={"score": [4, 5]})
    assert hashes(numbers["path"]) == {r["row_hash"] for r in lake_rows if part_of(r) == EN}


def test_export_all_ignores_filter_and_samples_five_rows(lake, lake_rows, tmp_path):
    result = export(lake, tmp_path, export_all=True, filter={"nope": []})
    assert hashes(result["path"]) == {r["row_hash"] for r in lake_rows}
    assert result["total_data_count"] == result["total_filter_count"] == 7
    assert len(result["sampled_data"]) == 5
    json.dumps(result["sampled_data"])  # JSON-safe (timestamps as text)
    assert isinstance(result["sampled_timestamp"], int)
    assert {"provider", "row_hash", "ingested_at", "image"} <= set(result["sampled_data"][0])
    manifest = json.loads((tmp_path / "out" / result["path"].rsplit("/", 1)[1] / "export.json").read_text())
    assert manifest["rows"] == 7 and manifest["file_type"] == "parquet"


def catalog_table(lake, rows_filter) -> pa.Table:
    table = pads.dataset(lake.catalog_root, partitioning="hive").to_table()
    keep = [i for i, r in enumerate(table.to_pylist()) if rows_filter(r)]
    return table.take(keep).sort_by("row_hash")


@pytest.mark.parametrize("file_type", ["parquet", "arrow", "jsonl", "hf"])
def test_every_format_reads_back_exactly_in_batches(lake, lake_rows, tmp_path, file_type):
    result = export(lake, tmp_path, filter={"provider": ["aihub"]}, file_type=file_type)
    batches = list(iter_export_batches(result["path"], batch_size=2))
    assert all(b.num_rows <= 2 for b in batches) and sum(b.num_rows for b in batches) == 5
    got = pa.Table.from_batches(batches).sort_by("row_hash")
    want = catalog_table(lake, lambda r: r["provider"] == "aihub")
    assert got.column("row_hash").to_pylist() == want.column("row_hash").to_pylist()
    assert got.column("text").to_pylist() == want.column("text").to_pylist()  # incl. "가" and the null
    assert got.column("score").to_pylist() == want.column("score").to_pylist()
    if file_type in ("parquet", "arrow"):
        for name in want.column_names:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    if file_type == "hf":
        ds = datasets.load_from_disk(result["path"])
        assert len(ds) == 5
        paths = dict(zip(want.column("row_hash").to_pylist(), want.column("image").to_pylist()))
        for row in got.to_pylist():
            asset = lake.resolve(paths[row["row_hash"]]).read_bytes()
            assert row["image"]["bytes"] == asset
            assert hashlib.sha256(asset).hexdigest() == row["image_sha256"]
    if file_type == "parquet":
        assert pq.ParquetFile(f"{result['path']}/data.parquet").metadata.num_rows == 5


def test_snapshot_excludes_rows_ingested_during_the_export(client, lake, lake_rows, tmp_path, make_jpeg):
    calls = []

    def ingest_meanwhile(info):
        calls.append(info["stage"])
        if len(calls) in (1, 3):  # once after the snapshot is fixed (before listing files), once mid-export
            tag = f"late{len(calls)}"
            upload(client, tmp_path, make_jpeg, BASE, {"lang": "ko", "src": "real"}, [tag], [99], tag)

    result = run_export(
        lake,
        {"destination": str(tmp_path / "out"), "filter": {"provider": ["aihub"]}, "options": {"batch_size": 1}},
        progress_cb=ingest_meanwhile,
    )
    assert calls.count("exporting") >= 5  # a report per batch
    before = {r["row_hash"] for r in lake_rows if r["provider"] == "aihub"}
    assert hashes(result["path"]) == before
    assert result["total_data_count"] == result["total_filter_count"] == 5
    late = pads.dataset(lake.catalog_root, partitioning="hive").to_table(filter=pads.field("score") == 99)
    assert late.num_rows == 2  # both late batches landed in the same partition, after sampled_timestamp
    sampled = result["sampled_timestamp"]
    assert all(int(ts.timestamp() * 1_000_000) > sampled for ts in late.column("ingested_at").to_pylist())


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"filter": {"provider": ["nope"]}}, "UNKNOWN_PARTITION"),
        ({"filter": {"provider": ["aihub"], "dataset": ["scans"]}}, "UNKNOWN_PARTITION"),
        ({"filter": {"colour": ["red"]}}, "INVALID_FILTER_FIELD"),
        ({"filter": {"lang": []}}, "EMPTY_FILTER_VALUES"),
        ({"filter": {"lang": "ko"}}, "INVALID_FILTER_TYPE"),
        ({"filter": {"lang": [5]}}, "INVALID_FILTER_TYPE"),
        ({"filter": {"score": ["high"]}}, "INVALID_FILTER_TYPE"),
        ({"filter": {"lang": [{"a": 1}]}}, "INVALID_FILTER_TYPE"),
        ({"filter": ["lang"]}, "INVALID_FILTER_TYPE"),
        ({"export_all": True, "file_type": "csv"}, "INVALID_FILE_TYPE"),
        ({"export_all": True, "options": {"hdf5_images": "jpeg"}}, "INVALID_OPTION"),
    ],
)
def test_invalid_requests_have_stable_codes(lake, lake_rows, tmp_path, params, code):
    with pytest.raises(ExportError) as err:
        export(lake, tmp_path, **params)
    assert err.value.code == code
    assert code in str(err.value)
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())


def test_unwritable_destinations(lake, lake_rows, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for destination in (a_file, a_file / "below", "s3://bucket/prefix"):
        with pytest.raises(ExportError) as err:
            export(lake, tmp_path, export_all=True, destination=str(destination))
        assert err.value.code == "UNWRITABLE_DESTINATION"


def test_failure_midway_leaves_no_complete_looking_output(lake, lake_rows, tmp_path):
    seen = []

    def explode(info):
        seen.append(info["scan_data_count"])
        if info["scan_data_count"] >= 2:
            raise RuntimeError("disk on fire")

    for file_type in ("parquet", "hdf5", "hf"):
        with pytest.raises(ExportError) as err:
            run_export(
                lake,
                {"destination": str(tmp_path / "out"), "export_all": True, "file_type": file_type,
                 "options": {"batch_size": 1}},
                progress_cb=explode,
            )  # fmt: skip
        assert err.value.code == "EXPORT_FAILED" and "disk on fire" in err.value.message
    assert list((tmp_path / "out").iterdir()) == []  # no export folder, no temp leftovers
