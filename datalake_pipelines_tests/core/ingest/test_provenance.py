"""The source record a batch carries (core/ingest/provenance.py): what each digest is of, and that a hand drop's
source is computed by the lake, a source its writer declared kept beside it."""

from __future__ import annotations

import hashlib
import json

import pytest

from datalake_pipelines.core.ingest.manifest import load_manifest
from datalake_pipelines.core.ingest.provenance import batch_source, list_digest, upload_source


def test_a_file_source_is_the_files_sha256_and_a_folder_one_its_listing(tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"PAR1 not really")
    src = upload_source(data, "cli", tmp_path / "unused")
    assert (src["method"], src["kind"], src["path"]) == ("cli", "file", str(data.resolve()))
    assert src["sha256"] == hashlib.sha256(b"PAR1 not really").hexdigest() and src["bytes"] == 15
    assert src["user"] and src["host"] and src["staged_at"]
    folder = tmp_path / "f"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("x")
    (folder / "b" / "c.txt").write_text("yz")
    src = upload_source(folder, "client", tmp_path / "unused")
    assert src["kind"] == "folder" and src["sha256"] == list_digest(["b/c.txt\t2", "a.txt\t1"])
    (folder / "a.txt").write_text("xx")  # a changed size changes the digest
    assert upload_source(folder, "client", tmp_path / "unused")["sha256"] != src["sha256"]
    with pytest.raises(ValueError, match="upload method 'web'"):
        upload_source(folder, "web", tmp_path / "unused")


def test_a_hand_drops_declared_source_is_kept_but_not_trusted(tmp_path):
    drop = tmp_path / "drop-1"
    drop.mkdir()
    (drop / "a.txt").write_text("hello")
    declared = {"method": "client", "url": "https://example.org/a.zip"}
    (drop / "_metadata.json").write_text(json.dumps({"provider": "p", "dataset": "d", "source": declared}))
    src = batch_source(drop, load_manifest(drop))
    assert (src["method"], src["path"], src["declared"]) == ("hand_drop", "staging/pending/drop-1", declared)
    size = (drop / "_metadata.json").stat().st_size
    assert src["sha256"] == list_digest([f"_metadata.json\t{size}", "a.txt\t5"]) and src["user"]
