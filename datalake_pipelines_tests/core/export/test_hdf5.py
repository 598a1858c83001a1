"""HDF5 exports: groups per partition, attributes, exact bytes, equal-length vlen batches, resized images."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from PIL import Image

from datalake_pipelines.core.export.hdf5 import Hdf5ExportWriter, iter_hdf5_batches
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import run_export
from datalake_pipelines_tests.core.export.test_export import lake_rows  # noqa: F401 - fixture


def h5_export(lake, tmp_path, **params):
    params = {"destination": str(tmp_path / "out"), "file_type": "hdf5", **params}
    result = run_export(lake, params)
    return f"{result['path']}/data.h5", result


def test_groups_attributes_and_exact_image_bytes(lake, lake_rows, tmp_path):
    path, result = h5_export(lake, tmp_path, export_all=True, options={"batch_size": 2})
    by_hash = {r["row_hash"]: r for r in lake_rows}
    with h5py.File(path, "r") as f:
        assert set(f) == {"aihub", "inhouse"}
        group = f["/aihub/docs/ocr/base"]
        assert group.attrs["row_count"] == 3 and group.attrs["provider"] == "aihub"
        assert json.loads(group.attrs["meta"]) == {"lang": "ko", "src": "real"}
        assert group.attrs["meta.lang"] == "ko"
        assert json.loads(group.attrs["partition_meta"])["data_type"] == "task"
        schema = {c["name"]: c["encoding"] for c in json.loads(group.attrs["schema"])}
        assert schema["image"] == "image_bytes" and schema["text"] == "utf8" and schema["score"] == "number"
        assert schema["ingested_at"] == "timestamp" and "provider" not in schema
        images = group["image"]
        assert images.maxshape == (None,) and images.chunks is not None
        assert h5py.check_vlen_dtype(images.dtype) == np.dtype("uint8")
        hashes = group["row_hash"].asstr()[:]
        for h, data in zip(hashes, images[:]):
            assert data.tobytes() == lake.resolve(by_hash[h]["image"]).read_bytes()
        assert list(group["text"].asstr()[:]) == [by_hash[h]["text"] or "" for h in hashes]
        assert list(group["_nulls/text"][:]) == [by_hash[h]["text"] is None for h in hashes]
        assert group["score"].dtype == np.int64
        assert sum(f[g].attrs["row_count"] for g in ("/aihub/docs/ocr/base", "/aihub/docs/ocr/en")) == 5
    rows = [
        (group_path, dict(zip(batch, values)))
        for group_path, batch in iter_hdf5_batches(path, batch_size=2)
        for values in zip(*batch.values())
    ]
    assert len(rows) == 7
    for group_path, row in rows:
        original = by_hash[row["row_hash"]]
        assert group_path == "/" + "/".join(original[k] for k in ("provider", "dataset", "task", "variant"))
        assert row["image"] == lake.resolve(original["image"]).read_bytes()
        assert row["text"] == original["text"] and row["score"] == original["score"]
        assert row["ingested_at"] == original["ingested_at"] and row["lang"] == original["lang"]


def test_reader_helper_gives_record_batches_with_partition_columns(lake, lake_rows, tmp_path):
    path, _ = h5_export(lake, tmp_path, filter={"lang": ["ko"]})
    batches = list(iter_export_batches(path, batch_size=1))
    assert len(batches) == 5 and all(b.num_rows == 1 for b in batches)
    table = pa.Table.from_batches(batches[:1])
    assert {"provider", "dataset", "task", "variant", "image", "row_hash"} <= set(table.column_names)
    assert pa.types.is_binary(table.schema.field("image").type)
    folder_batches = list(iter_export_batches(path.rsplit("/", 1)[0], batch_size=10))  # the export folder
    assert sum(b.num_rows for b in folder_batches) == 5


def test_equal_length_vlen_batches_and_nulls(tmp_path):
    """h5py cannot broadcast a batch of equal-length vlen arrays; the writer must still store them exactly."""
    blobs = {f"a/{i}.jpg": bytes([i]) * 7 for i in range(5)}  # every image the same length
    path = tmp_path / "eq.h5"
    writer = Hdf5ExportWriter(path, read_asset=blobs.__getitem__, image_columns=["image"])
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    for start in (0, 3):
        n = 3 if start == 0 else 2
        writer.write(
            pa.table(
                {
                    "provider": ["p"] * n, "dataset": ["d"] * n, "task": ["t"] * n, "variant": ["v"] * n,
                    "image": [f"a/{i}.jpg" for i in range(start, start + n)],
                    "blob": pa.array([b"xyz"] * n, pa.binary()),
                    "tags": [["a", "b"]] * n,
                    "when": pa.array([stamp] * n, pa.timestamp("us", tz="UTC")),
                    "ratio": [0.5, None, 1.5][:n],
                    "empty": pa.array([None] * n, pa.string()),
                }
            )
        )  # fmt: skip
    writer.close()
    with h5py.File(path, "r") as f:
        group = f["/p/d/t/v"]
        assert [v.tobytes() for v in group["image"][:]] == list(blobs.values())
        assert "empty" not in group and json.loads(group.attrs["null_columns"]) == ["empty"]
    [(group_path, batch)] = list(iter_hdf5_batches(path, batch_size=10))
    assert group_path == "/p/d/t/v"
    assert batch["blob"] == [b"xyz"] * 5 and batch["tags"] == [["a", "b"]] * 5
    assert batch["when"] == [stamp] * 5
    assert batch["ratio"] == [0.5, None, 1.5, 0.5, None]


def test_resized_images_are_a_fixed_shape_compressed_dataset(lake, lake_rows, tmp_path):
    options = {"hdf5_images": "resized", "hdf5_image_shape": [16, 20, 3], "hdf5_compression": "gzip"}
    path, _ = h5_export(lake, tmp_path, filter={"provider": ["inhouse"]}, options=options)
    source = pads.dataset(lake.catalog_root, partitioning="hive").to_table(filter=pads.field("provider") == "inhouse")
    by_hash = dict(zip(source.column("row_hash").to_pylist(), source.column("image").to_pylist()))
    with h5py.File(path, "r") as f:
        images = f["/inhouse/scans/ocr/base/image"]
        assert images.shape == (2, 16, 20, 3) and images.dtype == np.uint8
        assert images.maxshape == (None, 16, 20, 3) and images.compression == "gzip"
        for h, pixels in zip(f["/inhouse/scans/ocr/base/row_hash"].asstr()[:], images[:]):
            with Image.open(io.BytesIO(lake.resolve(by_hash[h]).read_bytes())) as img:
                expected = np.asarray(img.convert("RGB").resize((20, 16), Image.Resampling.BILINEAR))
            assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 8
    [batch] = list(iter_export_batches(path, batch_size=5))
    assert batch.column("image").type.shape == [16, 20, 3]


# chunks bounded by the data -------------------------------------------------------------------------------
def datasets(path) -> dict[str, h5py.Dataset]:
    """Every dataset of the file by path (the file stays open while they are used)."""
    found: dict[str, h5py.Dataset] = {}

    def keep(name: str, obj) -> None:  # visititems stops at the first callback returning anything but None
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    h5py.File(path, "r").visititems(keep)
    assert found
    return found


def test_a_three_row_export_is_small_and_round_trips(lake, lake_rows, tmp_path):
    path, result = h5_export(lake, tmp_path, filter={"provider": ["aihub"], "lang": ["ko"]})
    assert result["scan_data_count"] == 3
    assert Path(path).stat().st_size < 64 * 1024  # 1024-row chunks of a dozen columns were ~200 KB
    by_hash = {r["row_hash"]: r for r in lake_rows}
    [table] = [pa.Table.from_batches(list(iter_export_batches(path, batch_size=10)))]
    assert table.num_rows == 3
    for row in table.to_pylist():
        original = by_hash[row["row_hash"]]
        assert row["image"] == lake.resolve(original["image"]).read_bytes()
        assert {k: row[k] for k in ("text", "score", "ingested_at", "lang")} == {
            k: original[k] for k in ("text", "score", "ingested_at", "lang")
        }


def test_each_partition_chunks_by_its_own_rows(lake, lake_rows, tmp_path):
    path, _ = h5_export(lake, tmp_path, export_all=True)
    with h5py.File(path, "r") as f:
        rows = {name: f[name].attrs["row_count"] for name in ("aihub/docs/ocr/base", "aihub/docs/ocr/en")}
    assert rows == {"aihub/docs/ocr/base": 3, "aihub/docs/ocr/en": 2}
    checked = 0
    for name, ds in datasets(path).items():
        group = name.split("/_nulls/")[0] if "/_nulls/" in name else name.rsplit("/", 1)[0]
        if group in rows:
            assert ds.chunks == (rows[group],), name
            checked += 1
    assert checked > 10


def test_resized_images_take_the_room_of_their_rows(lake, lake_rows, tmp_path):
    path, _ = h5_export(lake, tmp_path, filter={"provider": ["inhouse"]}, options={"hdf5_images": "resized"})
    pixels = 2 * 224 * 224 * 3  # two rows of the default 224 x 224 RGB: a 1 MiB chunk holds six
    assert Path(path).stat().st_size < pixels + 64 * 1024
    images = datasets(path)["inhouse/scans/ocr/base/image"]
    assert images.chunks == (2, 224, 224, 3) and images.maxshape == (None, 224, 224, 3)


def test_big_partitions_keep_full_chunks(tmp_path):
    """The bound only shrinks chunks: a partition of many rows keeps 1024-row (1-D) and ~1 MiB (image) chunks."""
    blobs = {"a.jpg": _jpeg()}
    n = 5000
    writer = Hdf5ExportWriter(
        tmp_path / "big.h5",
        read_asset=blobs.__getitem__,
        image_columns=["image"],
        image_mode="resized",
        image_shape=(64, 64, 3),
        partition_rows={("p", "d", "t", "v"): n},
    )
    writer.write(pa.table({"provider": ["p"] * n, "dataset": ["d"] * n, "task": ["t"] * n, "variant": ["v"] * n,
                           "image": ["a.jpg"] * n, "score": list(range(n))}))  # fmt: skip
    writer.close()
    found = datasets(tmp_path / "big.h5")
    assert found["p/d/t/v/score"].chunks == (1024,)
    assert found["p/d/t/v/image"].chunks == ((1 << 20) // (64 * 64 * 3), 64, 64, 3)
    assert found["p/d/t/v/score"][:].tolist() == list(range(n))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()
