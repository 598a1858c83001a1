"""The reference's single-file calls: ``create_data_file`` (content-addressed, lake-wide dedup, chunked
streaming / multipart with bounded memory) and ``upload_data_file(..., use_chunked_upload=...)``."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc

import pytest
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.collection import file_copy
from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines.core.lake.s3 import S3Lake
from datalake_pipelines.core.storage.backends import S3Storage

KiB, MiB = 1024, 1024 * 1024


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def peak_of(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_image_file_id_is_its_hash_and_dedups_lake_wide(client, lake, tmp_path, make_jpeg):
    src = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[274] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(src, exif=exif)
    first = client.create_data_file(src)
    assert first["id"] == first["sha256"] == sha(src)
    assert (first["kind"], first["format"], first["width"], first["height"], first["orientation"]) == (
        "image",
        "JPEG",
        20,
        40,
        6,
    )
    assert not first["deduplicated"] and not first["chunked"] and first["size"] == src.stat().st_size
    stored = lake.base / first["path"]
    assert stored.read_bytes() == src.read_bytes() and first["path"].startswith("assets/provider=data_files/")
    again = client.create_data_file(src, use_chunked_upload=True)
    assert again["deduplicated"] and again["id"] == first["id"] and again["path"] == first["path"]
    assert HashIndex(lake.hash_index).get(first["id"]).orientation == 6

    folder = tmp_path / "batch"  # the same content in a batch is a dedup hit on the data file's asset
    folder.mkdir()
    (folder / "copy.jpg").write_bytes(src.read_bytes())
    client.upload_raw_data(folder, provider="inhouse", dataset="scans")
    [result] = client.process_pending()
    assert (result.images_new, result.images_deduplicated) == (0, 1)


def test_plain_file_and_a_broken_image(client, lake, tmp_path):
    notes = tmp_path / "notes.bin"
    notes.write_bytes(b"\x00\x01 not an image")
    doc = client.create_data_file(notes, provider="inhouse", dataset="blobs")
    assert doc["kind"] == "file" and doc["width"] is None and doc["path"].endswith(f"{sha(notes)}.bin")
    assert (lake.base / doc["path"]).read_bytes() == notes.read_bytes()
    png = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png)
    png.write_bytes(png.read_bytes()[:-30])
    with pytest.raises(ValidationError, match="cut.png"):
        client.create_data_file(png)
    assert HashIndex(lake.hash_index).get(sha(png)) is None
    with pytest.raises(ValidationError, match="not a file"):
        client.create_data_file(tmp_path / "nope.bin")


@pytest.mark.parametrize("keep", [2, 20, 542])
def test_a_jpeg_cut_inside_its_header_is_refused_as_folder_uploads_refuse_it(client, lake, tmp_path, make_jpeg, keep):
    """Found in review: a .jpg cut so early that Pillow cannot identify it was stored as a plain file; a folder
    upload rejects the same file (the extension names an image format), and so must ``create_data_file``."""
    whole = make_jpeg(tmp_path / "whole.jpg", size=(300, 200)).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[:keep])
    with pytest.raises(ValidationError, match="cut.jpg"):
        client.create_data_file(cut)
    assert not lake.hash_index.exists() or HashIndex(lake.hash_index).get(sha(cut)) is None


def test_chunked_local_copy_streams_with_bounded_memory(lake, tmp_path, capsys):
    client = DatalakeClient(lake.base, progress=True)
    small = tmp_path / "small.bin"  # without the flag: one read, unless above the threshold (also warms imports)
    small.write_bytes(os.urandom(100 * KiB))
    assert not client.create_data_file(small, threshold=512 * KiB)["chunked"]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 * MiB))
    doc, peak = peak_of(lambda: client.create_data_file(big, use_chunked_upload=True, threshold=512 * KiB))
    assert doc["chunked"] and doc["id"] == sha(big) and (lake.base / doc["path"]).read_bytes() == big.read_bytes()
    assert peak < big.stat().st_size / 8, f"peak {peak / MiB:.2f} MiB"
    assert "copying big.bin" in capsys.readouterr().err  # the tqdm progress bar

    bigger = tmp_path / "bigger.bin"
    bigger.write_bytes(os.urandom(4 * MiB))
    doc, peak = peak_of(lambda: client.create_data_file(bigger, threshold=512 * KiB))
    assert doc["chunked"] and peak < bigger.stat().st_size / 8


@pytest.fixture
def s3_lake_own_process(monkeypatch, tmp_path):
    """A lake on a moto server in its own process: tracemalloc then sees the client's memory only."""
    import uuid

    import boto3

    from datalake_pipelines_tests.support.s3_server import MotoS3

    with MotoS3(process=True) as moto:
        for name, value in moto.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DATALAKE_CACHE_DIR", str(tmp_path / "lake-cache"))
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/lake"


def test_s3_multipart_above_the_threshold_bytes_memory_and_index(s3_lake_own_process, tmp_path, monkeypatch, capsys):
    s3_lake = s3_lake_own_process
    monkeypatch.setenv("DATALAKE_CHUNKED_THRESHOLD_MB", "6")
    client = DatalakeClient(s3_lake, progress=True)
    storage = S3Storage(s3_lake)
    small = tmp_path / "small.bin"  # one PUT (and warm imports before memory is measured)
    small.write_bytes(b"tiny")
    one = client.create_data_file(small)
    assert (one["chunked"], one["parts"]) == (False, None) and storage.read_bytes(one["path"]) == b"tiny"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * MiB))
    doc, peak = peak_of(lambda: client.create_data_file(big, use_chunked_upload=True))
    assert doc["chunked"] and doc["parts"] == 5  # 5 MiB parts (S3's minimum), memory bounded by the parts in flight
    assert peak < big.stat().st_size / 4, f"peak {peak / MiB:.2f} MiB"
    assert "uploading big.bin" in capsys.readouterr().err
    assert storage.sha256(doc["path"]) == doc["id"] == sha(big) and doc["uri"] == f"{s3_lake}/{doc['path']}"
    segments = [o.key for o in storage.list("index/segments")]
    assert len(segments) == 2  # each object is published, then its one-entry segment
    fresh = DatalakeClient(s3_lake, progress=False)  # another client: dedup through the published segments
    assert fresh.create_data_file(big, use_chunked_upload=True)["deduplicated"]
    assert S3Lake(s3_lake).index_cache().index.count() == 2


def test_upload_data_file_honours_use_chunked_upload(lake, collection, tmp_path, make_jpeg, monkeypatch, capsys):
    image = make_jpeg(tmp_path / "u1.jpg", size=(800, 800))
    note = tmp_path / "u1.json"
    note.write_text(json.dumps({"words": ["a"]}))
    unit = {"files": {"image": image, "annotation": note}, "meta": {"origin_file_stem": "u1"}}
    monkeypatch.setattr(file_copy, "CHUNK_SIZE", 64 * KiB)
    client = DatalakeClient(lake.base, progress=True)
    plain, plain_peak = peak_of(lambda: client.upload_data_file(unit, collection.id))
    chunked, chunked_peak = peak_of(lambda: client.upload_data_file(unit, collection.id, use_chunked_upload=True))
    assert plain["files"]["image"]["sha256"] == chunked["files"]["image"]["sha256"] == sha(image)
    size = image.stat().st_size
    assert plain_peak >= size > 4 * chunked_peak, (size, plain_peak, chunked_peak)  # read whole vs streamed
    assert "uploading" in capsys.readouterr().err
