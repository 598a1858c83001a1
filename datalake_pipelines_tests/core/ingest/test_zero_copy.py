"""Zero extra copies on a local lake: the upload copies once (never links the user's files), processing links.

See core/ingest/asset_store.py: a staged file is published into ``assets/`` by hard link and made read-only; a
failed batch keeps its files intact in ``staging/failed/``; a re-ingest writes no asset bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pandas as pd
import pytest

from datalake_pipelines.core.ingest import asset_store
from datalake_pipelines.core.ingest.asset_store import StagedFileChanged, publish
from datalake_pipelines.core.ingest.processing import BatchProcessor, ProcessOptions, claim_batch
from datalake_pipelines.core.storage import files
from datalake_pipelines.core.storage.files import copy_file


def upload(client, paths, **extra):
    df = pd.DataFrame({"image": [str(p) for p in paths], **extra})
    return client.upload_raw_data(df, "inhouse", "scans", image_columns=["image"])


def asset_files(lake):
    return sorted(p for p in lake.assets_root.rglob("*") if p.is_file())


def process_keeping_staged(lake, job_id):
    """Process one batch, returning the staged files' stats as they were before the batch was discarded."""
    assert claim_batch(lake, job_id)
    staged = {p.name: os.stat(p) for p in lake.processing_batch(job_id).rglob("*.jpg")}
    return BatchProcessor(lake, ProcessOptions(num_proc=2)).process(job_id), staged


def test_processing_publishes_the_staged_file_by_hard_link(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / f"{i}.jpg", color=(i * 40, 10, 10)) for i in range(3)]
    _, job_id = upload(client, paths)
    result, staged = process_keeping_staged(lake, job_id)
    assert result.status == "done", result.error
    assets = asset_files(lake)
    assert len(assets) == 3
    # each asset is the staged file's inode (no second write of the bytes) and read-only
    assert {os.stat(a).st_ino for a in assets} == {st.st_ino for st in staged.values()}
    for a in assets:
        assert os.stat(a).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0
    assert result.bytes_stored == sum(p.stat().st_size for p in paths)


def test_the_upload_copies_and_never_links_the_users_files(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / f"{i}.jpg", color=(10, i * 40, 10)) for i in range(2)]
    originals = [p.read_bytes() for p in paths]
    _, job_id = upload(client, paths)
    staged = sorted(lake.pending_batch(job_id).rglob("*.jpg"))
    assert {os.stat(s).st_ino for s in staged}.isdisjoint({os.stat(p).st_ino for p in paths})
    assert all(os.stat(p).st_nlink == 1 for p in paths)
    [result] = client.process_pending()
    assert result.status == "done", result.error
    for p in paths:  # the user edits the sources after the upload: the lake does not change
        with open(p, "r+b") as fh:
            fh.write(b"\0" * 64)
    assert sorted(a.read_bytes() for a in asset_files(lake)) == sorted(originals)


def test_a_failed_batch_keeps_its_files_intact(client, lake, tmp_path, make_jpeg):
    good = make_jpeg(tmp_path / "good.jpg")
    bad = [tmp_path / f"bad{i}.jpg" for i in range(2)]
    for b in bad:
        b.write_bytes(b"not an image at all")
    _, job_id = upload(client, [good, *bad])
    staged = {
        p.relative_to(lake.pending_batch(job_id)): p.read_bytes() for p in lake.pending_batch(job_id).rglob("*.jpg")
    }
    [result] = client.process_pending()
    assert result.status == "failed"  # 2 of 3 rows rejected, above max_reject_ratio
    failed = lake.failed_batch(job_id)
    assert {rel: (failed / rel).read_bytes() for rel in staged} == staged
    for a in asset_files(lake):  # the good image may be published: a read-only link to the kept file
        assert a.read_bytes() == good.read_bytes()
        assert os.stat(a).st_mode & stat.S_IWUSR == 0


def test_a_reingest_writes_no_new_bytes(client, lake, tmp_path, make_jpeg):
    paths = [make_jpeg(tmp_path / f"{i}.jpg", color=(10, 10, i * 40)) for i in range(3)]
    upload(client, paths, run="a")
    [first] = client.process_pending()
    before = {a: os.stat(a).st_ino for a in asset_files(lake)}
    upload(client, paths, run="b")
    [second] = client.process_pending()
    assert first.status == second.status == "done"
    assert second.bytes_stored == 0 and second.images_new == 0 and second.images_deduplicated == 3
    assert {a: os.stat(a).st_ino for a in asset_files(lake)} == before


def test_a_staged_file_changed_after_it_was_hashed_is_not_published(tmp_path):
    staged = tmp_path / "staged.bin"
    staged.write_bytes(b"hashed bytes")
    read = os.stat(staged)
    os.utime(staged, ns=(read.st_atime_ns, read.st_mtime_ns + 1_000_000))  # changed in place after the read
    target = tmp_path / "assets" / "ab" / "asset.bin"
    with pytest.raises(StagedFileChanged):
        publish(staged, target, read)
    assert not target.exists()
    assert publish(staged, target, os.stat(staged)) == len(b"hashed bytes")


def test_publish_copies_once_when_the_file_system_refuses_a_link(tmp_path, monkeypatch):
    staged = tmp_path / "staged.bin"
    staged.write_bytes(b"some content")
    real_link = os.link

    def no_cross_device(src, dst, *args, **kwargs):
        if os.fspath(src) == os.fspath(staged):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(asset_store.os, "link", no_cross_device)
    target = tmp_path / "assets" / "asset.bin"
    assert publish(staged, target, os.stat(staged)) == len(b"some content")
    assert target.read_bytes() == b"some content"
    assert os.stat(target).st_ino != os.stat(staged).st_ino
    assert os.stat(target).st_mode & stat.S_IWUSR == 0


@pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024 + 7])
def test_copy_file_copies_every_byte_and_falls_back_when_the_kernel_copy_is_refused(tmp_path, monkeypatch, size):
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(size))
    assert copy_file(source, tmp_path / "kernel.bin") == size
    assert (tmp_path / "kernel.bin").read_bytes() == source.read_bytes()

    def refused(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "copy_file_range", refused)
    assert copy_file(source, tmp_path / "fallback.bin") == size
    assert (tmp_path / "fallback.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("size", [0, 5, asset_store.CHUNK * 2 + 3])
def test_a_staged_file_is_hashed_whole(tmp_path, size):
    staged = tmp_path / "staged.bin"
    staged.write_bytes(os.urandom(size))
    hashed = asset_store._read_and_hash(str(staged))
    assert (hashed.data, hashed.sha256) == (staged.read_bytes(), hashlib.sha256(staged.read_bytes()).hexdigest())


def test_publish_links_without_a_stat_first_and_never_replaces_an_asset(tmp_path):
    staged, other = tmp_path / "staged.bin", tmp_path / "other.bin"
    staged.write_bytes(b"first")
    other.write_bytes(b"other")
    target = tmp_path / "assets" / "ab" / "cd" / "asset.bin"
    assert publish(staged, target, os.stat(staged)) == len(b"first")
    assert publish(other, target, os.stat(other)) == 0  # the link fails on the existing name: nothing replaced
    assert target.read_bytes() == b"first"
    with pytest.raises(FileNotFoundError):
        publish(tmp_path / "gone.bin", tmp_path / "assets" / "ef" / "01" / "asset.bin", None)
    assert not (tmp_path / "assets" / "ef" / "01" / "asset.bin").exists()
