"""Staging a Parquet file or a zip of images at a URL (a local HTTP server) into an S3 lake (moto) and a local lake."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datalake_pipelines.cli.main import main
from datalake_pipelines.client import DatalakeClient
from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.remote_batch import stage_remote, stage_url
from datalake_pipelines.core.ingest.remote_zip import member_path
from datalake_pipelines.core.lake.s3 import S3Lake
from datalake_pipelines.core.storage.backends import S3Storage, split_s3_uri
from datalake_pipelines.core.storage.transfer import MiB, TransferError, TransferSettings
from datalake_pipelines_tests.support.s3_pipeline import run, tick
from datalake_pipelines_tests.support.s3_server import BodyServer

PARTS = TransferSettings(part_size=5 * MiB, max_concurrency=2, max_attempts=2, backoff_base=0.01)
IMAGES = ["a.jpg", "b.jpeg", "sub/c.png", "big.png"]  # what the zip's images become (files/<name>)
HOSTILE = {"../evil.jpg": "path contains '..'", "/abs.jpg": "absolute path"}


# a web server with real files ----------------------------------------------------------------------------
def _image(fmt: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, fmt)
    return buf.getvalue()


def _write_files(root: Path) -> dict[str, bytes]:
    pq.write_table(pa.table({"id": list(range(5)), "text": list("abcde")}), root / "table.parquet")
    blobs = [os.urandom(1000) for _ in range(7000)]  # ~7 MB, so the transfer is multipart with 5 MiB parts
    pq.write_table(pa.table({"id": list(range(7000)), "blob": blobs}), root / "big.parquet", compression="none")
    pq.write_table(pa.table({"image": [b"\xff\xd8"], "label": ["x"]}), root / "embedded.parquet")
    (root / "bad.parquet").write_bytes(b"this is not parquet " * 100)
    (root / "bad.zip").write_bytes(b"this is not a zip " * 100)
    members = {"a.jpg": _image("JPEG"), "b.jpeg": _image("JPEG"), "sub/c.png": _image("PNG")}
    members["big.png"] = _image("PNG", (1400, 1400))  # > 5 MiB: uploaded to S3 in parts
    with zipfile.ZipFile(root / "images.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sub/", b"")
        for name, data in members.items():
            zf.writestr(name, data, zipfile.ZIP_STORED if name == "big.png" else zipfile.ZIP_DEFLATED)
        zf.writestr("../evil.jpg", members["a.jpg"])
        zf.writestr("/abs.jpg", members["b.jpeg"])
        zf.writestr("./a.jpg", b"a second a.jpg")
        zf.writestr("notes.txt", b"not an image")
        zf.writestr("__MACOSX/._a.jpg", b"resource fork")
    return members


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    members = _write_files(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", root=root, members=members)
    finally:
        server.shutdown()
        server.server_close()


# the real sensor and job (as in test_s3_lake) ------------------------------------------------------------
@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def ingest_one(instance, s3_lake, job: str) -> dict:
    result = tick(instance, s3_lake)
    assert [r.run_key for r in result.run_requests] == [job]
    outcome = run(instance, s3_lake, result.run_requests[0], result)
    assert outcome.success
    return {k: v.value for k, v in outcome.asset_materializations_for_node("catalog_partition")[0].metadata.items()}


def keys(s3_lake: str, prefix: str) -> list[str]:
    return sorted(o.key for o in S3Storage(s3_lake).list(prefix))


def bucket_keys(s3_lake: str) -> list[str]:
    bucket, _ = split_s3_uri(s3_lake)
    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


def open_uploads(s3_lake: str) -> list:
    bucket, _ = split_s3_uri(s3_lake)
    return boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# S3 lake ---------------------------------------------------------------------------------------------------
def test_parquet_url_is_staged_on_s3_and_ingested(instance, s3_lake, web):
    uri, job = stage_url(f"{web.url}/table.parquet", s3_lake, "aihub", "receipts")
    prefix = f"staging/pending/{job}"
    assert uri == f"{s3_lake}/{prefix}"
    assert keys(s3_lake, prefix) == [f"{prefix}/{n}" for n in ("_metadata.json", "data.parquet", "source.json")]
    storage = S3Storage(s3_lake)
    body = (web.root / "table.parquet").read_bytes()
    assert storage.read_bytes(f"{prefix}/data.parquet") == body
    source = json.loads(storage.read_bytes(f"{prefix}/source.json"))
    assert source["sha256"] == hashlib.sha256(body).hexdigest() and source["bytes"] == len(body)
    manifest = S3Lake(s3_lake).read_manifest(job)
    assert (manifest.row_count, manifest.variant, manifest.image_columns) == (5, "mixed", [])
    assert source["sha256"] in manifest.description  # provenance survives in the partition metadata

    mat = ingest_one(instance, s3_lake, job)
    assert mat["rows_added"] == 5 and mat["rows_rejected"] == 0
    fs, root = storage.arrow()
    part = f"{root}/catalog/provider=aihub/dataset=receipts/task=raw/variant=mixed/part-{job}.parquet"
    assert pq.read_table(part, filesystem=fs).column("text").to_pylist() == list("abcde")
    assert keys(s3_lake, "staging/pending") == []


def test_zip_url_is_unpacked_in_s3_hostile_members_refused_and_ingested(instance, s3_lake, web):
    batch = stage_remote(f"{web.url}/images.zip", s3_lake, "aihub", "receipts", settings=PARTS)
    job, prefix = batch.job_id, f"staging/pending/{batch.job_id}"
    expected = [f"{prefix}/files/{n}" for n in IMAGES] + [f"{prefix}/{n}" for n in ("_metadata.json", "data.parquet")]
    assert keys(s3_lake, prefix) == sorted(expected + [f"{prefix}/source.json"])
    assert not any("evil" in k or "abs.jpg" in k for k in bucket_keys(s3_lake))  # nothing escaped the batch
    assert keys(s3_lake, "staging/incoming") == [] and open_uploads(s3_lake) == []
    refused = {r["name"]: r["reason"] for r in batch.refused}
    assert refused == {**HOSTILE, "./a.jpg": "clashes with another member of the same path"}
    storage = S3Storage(s3_lake)
    source = json.loads(storage.read_bytes(f"{prefix}/source.json"))
    assert source["refused"] == batch.refused and source["skipped"] == 2 and source["members"] == 4
    assert source["sha256"] == hashlib.sha256((web.root / "images.zip").read_bytes()).hexdigest()
    for name, data in web.members.items():
        assert storage.read_bytes(f"{prefix}/files/{name}") == data
    fs, root = storage.arrow()
    table = pq.read_table(f"{root}/{prefix}/data.parquet", filesystem=fs)
    assert table.column("image").to_pylist() == [f"files/{n}" for n in IMAGES]
    assert table.column("file_name").to_pylist() == IMAGES
    manifest = S3Lake(s3_lake).read_manifest(job)
    assert manifest.image_columns == ["image"] and manifest.row_count == 4 and manifest.variant == "image"

    mat = ingest_one(instance, s3_lake, job)
    assert (mat["rows_added"], mat["images_new"], mat["rows_rejected"]) == (4, 4, 0)
    assert len(keys(s3_lake, "assets")) == 4 and keys(s3_lake, "staging/pending") == []


@pytest.mark.parametrize(
    "name, message",
    [
        ("bad.parquet", "not a readable Parquet file"),
        ("embedded.parquet", r"columns \['image'\] hold image bytes"),
        ("bad.zip", "not a readable zip file"),
    ],
)
def test_an_unusable_body_leaves_nothing_staged(s3_lake, web, name, message):
    with pytest.raises(ValidationError, match=message):
        stage_url(f"{web.url}/{name}", s3_lake, "aihub", "receipts")
    assert keys(s3_lake, "staging") == [] and open_uploads(s3_lake) == []


def test_zip_bomb_limit(s3_lake, web):
    with pytest.raises(ValidationError, match=r"would unpack to [\d,]+ bytes, above the limit of 1,000,000"):
        stage_remote(f"{web.url}/images.zip", s3_lake, "aihub", "receipts", max_unzipped_bytes=1_000_000)
    assert keys(s3_lake, "staging") == []


def test_failed_downloads_leave_no_upload_and_nothing_staged(s3_lake, web):
    with BodyServer() as body:
        urls = [f"{web.url}/missing.parquet", f"{web.url}/missing.zip", body.url(12 * MiB, die_after=7 * MiB)]
        for url, match in zip(urls, ["HTTP 404", "HTTP 404", "ended after 7340032 of 12582912"]):
            with pytest.raises(TransferError, match=match):
                stage_url(url, s3_lake, "aihub", "receipts", settings=PARTS, kind="parquet" if "body" in url else None)
    assert open_uploads(s3_lake) == []  # the multipart upload of the broken body was aborted
    assert keys(s3_lake, "staging") == []


def test_a_bad_manifest_fails_before_any_transfer(s3_lake, web):
    with pytest.raises(ValidationError, match="unknown provider"):
        stage_url(f"{web.url}/table.parquet", s3_lake, "nobody", "receipts")
    with pytest.raises(ValidationError, match='kind="parquet" or kind="zip"'):
        stage_url(f"{web.url}/data.csv", s3_lake, "aihub", "receipts")
    _uri, job = stage_url(f"{web.url}/table.parquet", s3_lake, "aihub", "receipts")
    with pytest.raises(ValidationError, match="already used"):
        stage_url(f"{web.url}/table.parquet", s3_lake, "aihub", "receipts", job_id=job)
    assert len(keys(s3_lake, "staging")) == 3


_WRITES: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WRITES:
        path, mode, flags = args
        writing = set(mode) & set("wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)
        if writing:
            _WRITES[-1].append(str(path))


@contextlib.contextmanager
def files_opened_for_writing():
    """Every file this process opens for writing (Python ``open``/``os.open``, any thread) inside the block."""
    if not getattr(sys, "_remote_batch_audit", False):
        sys.addaudithook(_audit)  # hooks cannot be removed; it records only while a block is active
        sys._remote_batch_audit = True
    writes: list[str] = []
    _WRITES.append(writes)
    try:
        yield writes
    finally:
        _WRITES.remove(writes)


def test_s3_staging_makes_no_local_copy(s3_lake, web, tmp_path, monkeypatch):
    # moto runs in this process and spools objects over 5 MB to temp files; keep them in its memory instead
    monkeypatch.setenv("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(64 * MiB))
    empty = tmp_path / "tmp"
    empty.mkdir()
    monkeypatch.setenv("TMPDIR", str(empty))
    monkeypatch.setattr(tempfile, "tempdir", str(empty))
    with files_opened_for_writing() as probe:  # the watch itself works
        (tmp_path / "probe.bin").write_bytes(b"x")
    assert probe == [str(tmp_path / "probe.bin")]
    with files_opened_for_writing() as writes:
        jobs = [
            stage_url(f"{web.url}/{name}", s3_lake, "aihub", "receipts", settings=PARTS)[1]
            for name in ("big.parquet", "images.zip")  # > 5 MiB bodies, a > 5 MiB member
        ]
    assert list(empty.iterdir()) == []
    # the one local write is the lake's schema: S3Lake.schema() loads config/schema.yaml through a temp folder
    assert [w for w in writes if not w.endswith("config/schema.yaml")] == []
    # the big body and the big member went up as multipart uploads (ETag "<md5>-<parts>"), from memory
    bucket, prefix = split_s3_uri(s3_lake)
    for key in (f"staging/pending/{jobs[0]}/data.parquet", f"staging/pending/{jobs[1]}/files/big.png"):
        assert boto3.client("s3").head_object(Bucket=bucket, Key=f"{prefix}/{key}")["ETag"].endswith('-2"')


# local lake ------------------------------------------------------------------------------------------------
def test_local_lake_parquet_and_zip(lake, web, read_catalog, tmp_path):
    uri, job = stage_url(f"{web.url}/table.parquet", lake.base, "aihub", "receipts")
    assert Path(uri) == lake.pending_batch(job)
    assert sorted(os.listdir(uri)) == ["_metadata.json", "data.parquet", "source.json"]
    batch = stage_remote(f"{web.url}/images.zip", lake.base, "aihub", "photos")
    zip_dir = lake.pending_batch(batch.job_id)
    staged = sorted(p.relative_to(zip_dir).as_posix() for p in zip_dir.rglob("*") if p.is_file())
    assert staged == sorted([f"files/{n}" for n in IMAGES] + ["_metadata.json", "data.parquet", "source.json"])
    assert sorted(os.listdir(lake.pending)) == sorted([job, batch.job_id])  # no .tmp- folder, no zip left
    assert {r["name"] for r in batch.refused} >= set(HOSTILE)
    assert not list(tmp_path.rglob("evil.jpg")) and not list(tmp_path.rglob("abs.jpg"))

    results = DatalakeClient(lake.base, num_proc=2, progress=False).process_pending()
    assert sorted((r.status, r.rows_added) for r in results) == [("done", 4), ("done", 5)]
    assert len(read_catalog()) == 9


def test_local_lake_failure_leaves_nothing(lake, web):
    for name, error in (("bad.parquet", ValidationError), ("missing.zip", TransferError)):
        with pytest.raises(error):
            stage_url(f"{web.url}/{name}", lake.base, "aihub", "receipts")
    assert os.listdir(lake.pending) == []


# CLI and helpers -------------------------------------------------------------------------------------------
def test_cli_ingest_url_stage(lake, s3_lake, web, capsys):
    args = ["ingest-url", f"{web.url}/table.parquet", "--stage", "--provider", "aihub", "--dataset", "receipts"]
    task = ["--task", "ocr", "--variant", "word", "--meta", "lang=ko", "--meta", "src=real"]
    assert main(["--base-path", str(lake.base), *args, *task, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    manifest = json.loads((lake.pending_batch(doc["job_id"]) / "_metadata.json").read_text())
    assert (manifest["task"], manifest["meta"], doc["rows"]) == ("ocr", {"lang": "ko", "src": "real"}, 5)

    zip_args = ["ingest-url", f"{web.url}/images.zip", "--stage", "--provider", "aihub", "--dataset", "receipts"]
    assert main([*zip_args, "--base-path", s3_lake]) == 0
    out = capsys.readouterr().out
    assert "refused zip member '../evil.jpg': path contains '..'" in out and f"{s3_lake}/staging/pending/" in out

    assert main(["--base-path", s3_lake, "ingest-url", f"{web.url}/bad.parquet", "--stage", *args[3:]]) == 1
    assert "not a readable Parquet file" in capsys.readouterr().err
    assert main(["--base-path", s3_lake, "ingest-url", f"{web.url}/table.parquet", "--stage"]) == 2  # no provider
    assert main(["ingest-url", f"{web.url}/table.parquet", "--stage", "--to", "s3://b/k"]) == 2
    assert main(["ingest-url", f"{web.url}/table.parquet"]) == 2


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a/b.jpg", ("a/b.jpg", None)),
        ("./a//b.jpg", ("a/b.jpg", None)),
        ("a\\..\\..\\x.jpg", (None, "path contains '..'")),
        ("/etc/x.jpg", (None, "absolute path")),
        ("C:/x.jpg", (None, "absolute path")),
        ("./", (None, "empty name")),
    ],
)
def test_member_path(name, expected):
    assert member_path(name) == expected


# an unknown kind is named as the caller spells the choice ------------------------------------------------
UNKNOWN = "http://127.0.0.1:9/export/data.csv"  # refused before any request: nothing listens there


def test_python_caller_is_told_the_keyword(lake):
    with pytest.raises(ValidationError) as err:
        stage_url(UNKNOWN, lake.base, "aihub", "receipts")
    message = str(err.value)
    assert 'kind="parquet" or kind="zip"' in message and "'.csv'" in message and "--kind" not in message
    with pytest.raises(ValidationError, match="kind 'csv' is none of parquet, zip"):
        stage_url(UNKNOWN, lake.base, "aihub", "receipts", kind="csv")
    assert os.listdir(lake.pending) == []


def test_cli_caller_is_told_the_flag(lake, capsys):
    args = ["--base-path", str(lake.base), "ingest-url", UNKNOWN, "--stage", "--provider", "aihub", "--dataset", "d"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--kind parquet or --kind zip" in err and "kind=" not in err
    assert os.listdir(lake.pending) == []
