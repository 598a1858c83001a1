"""Image fidelity through catalog, downloads and exports: one geometry convention, high bit depth kept.

Inputs from ``../shared/corpus/fidelity``: ``exif_orientation_6.jpg`` (stored 40x20, EXIF orientation 6,
displayed 20x40) and ``depth_16bit.png`` (16x16 ``I;16`` holding 1000 and 60000).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import datasets
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from datalake_pipelines.core.errors import DatalakeError
from datalake_pipelines.core.export.download import download
from datalake_pipelines.core.export.hdf5 import Hdf5ExportWriter
from datalake_pipelines.core.export.tasks import run_export
from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines_tests.conftest import CORPUS_ROOT

# ``DATALAKE_TEST_CORPUS`` points elsewhere when the project is checked out outside the ../shared setup.
FIDELITY = Path(os.environ.get("DATALAKE_TEST_CORPUS") or CORPUS_ROOT) / "fidelity"


@pytest.fixture
def fidelity() -> Path:
    if not (FIDELITY / "exif_orientation_6.jpg").is_file():
        pytest.skip(f"fidelity inputs not found at {FIDELITY}")
    return FIDELITY


def ingest_folder(client, tmp_path, files: list[Path], dataset: str = "fid") -> None:
    folder = tmp_path / f"src-{dataset}"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    client.upload_raw_data(folder, provider="inhouse", dataset=dataset)
    results = client.process_pending()
    assert [r.status for r in results] == ["done"], [r.error for r in results]


def group_of(f: h5py.File) -> h5py.Group:
    found = []
    f.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Group) and "schema" in obj.attrs else None)
    assert len(found) == 1
    return found[0]


def test_exif_orientation_catalog_records_displayed_size_and_orientation(client, lake, tmp_path, fidelity):
    src = fidelity / "exif_orientation_6.jpg"
    ingest_folder(client, tmp_path, [src])
    [row] = pq.read_table(next(lake.catalog_root.rglob("part-*.parquet"))).to_pylist()
    assert (row["image_width"], row["image_height"], row["image_orientation"]) == (20, 40, 6)
    with Image.open(src) as im:  # the fact the convention rests on: displayed = exif_transpose's size
        assert ImageOps.exif_transpose(im).size == (row["image_width"], row["image_height"])
    assert (lake.base / row["image"]).read_bytes() == src.read_bytes()  # bytes never rewritten


def test_exif_orientation_same_geometry_in_every_output(client, lake, tmp_path, fidelity):
    src = fidelity / "exif_orientation_6.jpg"
    ingest_folder(client, tmp_path, [src])
    with Image.open(src) as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert shown.shape == (40, 20, 3)

    download(lake, None, "hf", tmp_path / "hf", progress=False)
    [hf_row] = datasets.load_from_disk(str(tmp_path / "hf"))
    assert hf_row["image"].size == (hf_row["image_width"], hf_row["image_height"]) == (20, 40)
    assert hf_row["image_orientation"] == 6

    download(lake, None, "parquet", tmp_path / "pq", progress=False)
    [pq_row] = pq.read_table(tmp_path / "pq" / "data.parquet").to_pylist()
    assert (pq_row["image_width"], pq_row["image_height"], pq_row["image_orientation"]) == (20, 40, 6)

    resized = run_export(
        lake,
        {
            "destination": str(tmp_path / "exp"),
            "export_all": True,
            "file_type": "hdf5",
            "options": {"hdf5_images": "resized", "hdf5_image_shape": [40, 20, 3]},
        },
    )
    with h5py.File(next(Path(resized["path"]).rglob("*.h5")), "r") as f:
        pixels = group_of(f)["image"][0]
    assert pixels.shape == (40, 20, 3)
    np.testing.assert_array_equal(pixels, shown)  # displayed orientation, same pixels as exif_transpose

    raw = run_export(
        lake, {"destination": str(tmp_path / "exp2"), "export_all": True, "file_type": "hdf5", "options": {}}
    )
    with h5py.File(next(Path(raw["path"]).rglob("*.h5")), "r") as f:
        assert group_of(f)["image"][0].tobytes() == src.read_bytes()  # bytes mode: the stored file


def test_images_without_orientation_have_null_orientation(client, lake, tmp_path, make_jpeg):
    ingest_folder(client, tmp_path, [make_jpeg(tmp_path / "plain.jpg", size=(30, 10))])
    [row] = pq.read_table(next(lake.catalog_root.rglob("part-*.parquet"))).to_pylist()
    assert (row["image_width"], row["image_height"], row["image_orientation"]) == (30, 10, None)


def test_dedup_hit_on_an_index_row_from_before_orientation_recomputes_geometry(client, lake, tmp_path, fidelity):
    src = fidelity / "exif_orientation_6.jpg"
    ingest_folder(client, tmp_path, [src], "first")
    with sqlite3.connect(lake.hash_index) as con:  # what an older version wrote: stored size, no orientation
        con.execute("UPDATE assets SET width = 40, height = 20, orientation = NULL")
    ingest_folder(client, tmp_path, [src], "second")
    rows = [pq.read_table(p).to_pylist()[0] for p in sorted(lake.catalog_root.rglob("part-*.parquet"))]
    assert [(r["image_width"], r["image_height"], r["image_orientation"]) for r in rows] == [(20, 40, 6)] * 2
    assert rows[0]["image"] == rows[1]["image"]  # still a dedup hit: one asset


def test_old_index_file_gains_the_orientation_column(tmp_path):
    path = tmp_path / "hash_index.sqlite"
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE assets (sha256 TEXT PRIMARY KEY, stored_sha256 TEXT NOT NULL, path TEXT NOT NULL, "
            "size INTEGER NOT NULL, kind TEXT NOT NULL, format TEXT, width INTEGER, height INTEGER, mode TEXT, "
            "provider TEXT NOT NULL, dataset TEXT NOT NULL, first_batch_id TEXT NOT NULL, "
            "created_at TEXT NOT NULL) WITHOUT ROWID"
        )
        con.execute(
            "INSERT INTO assets VALUES ('ab', 'ab', 'assets/x.jpg', 3, 'image', 'JPEG', 40, 20, 'RGB', "
            "'p', 'd', 'j', '2026-01-01')"
        )
    entry = HashIndex(path).get("ab")
    assert entry.orientation is None and entry.needs_geometry
    assert HashIndex(path).get("ab").width == 40  # opening twice is fine


def test_16bit_png_keeps_its_values_in_hdf5_resized(client, lake, tmp_path, fidelity):
    src = fidelity / "depth_16bit.png"
    ingest_folder(client, tmp_path, [src])
    with Image.open(src) as im:
        original = np.asarray(im)
    assert set(np.unique(original)) == {1000, 60000}
    for shape in ([16, 16, 1], [16, 16, 3]):
        result = run_export(
            lake,
            {
                "destination": str(tmp_path / f"exp{shape[2]}"),
                "export_all": True,
                "file_type": "hdf5",
                "options": {"hdf5_images": "resized", "hdf5_image_shape": shape},
            },
        )
        with h5py.File(next(Path(result["path"]).rglob("*.h5")), "r") as f:
            pixels = group_of(f)["image"][0]
        assert pixels.dtype == np.uint16
        for channel in range(shape[2]):
            np.testing.assert_array_equal(pixels[:, :, channel], original)  # never clamped to 255


def test_hdf5_column_widens_when_a_deeper_image_follows(tmp_path):
    """uint8 rows first, then 16-bit and float ones: the dataset widens and earlier rows keep their values."""
    images = {
        "a.png": Image.new("L", (4, 4), 200),
        "b.png": Image.fromarray(np.full((4, 4), 60000, np.uint16)),
        "c.tif": Image.fromarray(np.full((4, 4), 0.25, np.float32)),
    }
    blobs = {}
    for name, im in images.items():
        path = tmp_path / name
        im.save(path)
        blobs[name] = path.read_bytes()
    writer = Hdf5ExportWriter(
        tmp_path / "out.h5", blobs.__getitem__, image_columns=["img"], image_mode="resized", image_shape=(4, 4, 1)
    )
    for name in images:  # one batch per row: the dataset exists before the deeper image arrives
        writer.write(pa.table({"provider": ["p"], "dataset": ["d"], "task": ["t"], "variant": ["v"], "img": [name]}))
    writer.close()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        data = group_of(f)["img"][:]
    assert data.dtype == np.float32
    assert [float(data[i, 0, 0, 0]) for i in range(3)] == [200.0, 60000.0, 0.25]


def test_hdf5_resized_exports_an_asset_above_pillows_default_guard(tmp_path, monkeypatch):
    """A 190 Mpx asset accepted under a raised DATALAKE_MAX_IMAGE_PIXELS exports in a fresh process too:
    the export raises Pillow's decompression-bomb guard to the lake's limit instead of refusing its own asset."""
    path = tmp_path / "p190.png"
    Image.new("1", (19_000, 10_000), 1).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # a fresh process: Pillow's default guard
    monkeypatch.setenv("DATALAKE_MAX_IMAGE_PIXELS", "200000000")
    blobs = {"p190.png": path.read_bytes()}
    writer = Hdf5ExportWriter(
        tmp_path / "out.h5", blobs.__getitem__, image_columns=["img"], image_mode="resized", image_shape=(4, 4, 1)
    )
    writer.write(pa.table({"provider": ["p"], "dataset": ["d"], "task": ["t"], "variant": ["v"], "img": ["p190.png"]}))
    writer.close()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert group_of(f)["img"][:].shape == (1, 4, 4, 1)


def test_hdf5_names_the_asset_and_the_setting_when_pillow_refuses_it(tmp_path, monkeypatch):
    path = tmp_path / "p190.png"
    Image.new("1", (19_000, 10_000), 1).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    monkeypatch.delenv("DATALAKE_MAX_IMAGE_PIXELS", raising=False)
    writer = Hdf5ExportWriter(
        tmp_path / "out.h5", {"p190.png": path.read_bytes()}.__getitem__, image_columns=["img"],
        image_mode="resized", image_shape=(4, 4, 1),
    )  # fmt: skip
    row = pa.table({"provider": ["p"], "dataset": ["d"], "task": ["t"], "variant": ["v"], "img": ["p190.png"]})
    with pytest.raises(DatalakeError, match="p190.png.*DATALAKE_MAX_IMAGE_PIXELS"):
        writer.write(row)
    writer.abort()
