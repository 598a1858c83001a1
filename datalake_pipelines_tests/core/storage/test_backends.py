"""The storage chooser: which kind a location is, what ``open_storage`` opens, boto3 only for S3, and the S3
storage's "no such key" answers (moto's real HTTP server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datalake_pipelines.core.storage.backends import LocalStorage, S3Storage, open_storage, storage_kind

ROOT = Path(__file__).resolve().parents[3]


def test_storage_kind_and_what_open_storage_opens(tmp_path, s3_lake):
    assert storage_kind("s3://bucket/prefix") == storage_kind("s3://bucket") == "s3"
    assert storage_kind(tmp_path) == storage_kind(str(tmp_path)) == storage_kind("bucket/s3://x") == "local"
    assert storage_kind(Path("s3://bucket/x")) == "local"  # a Path collapses "//": a folder named "s3:"
    local, s3 = open_storage(tmp_path), open_storage(s3_lake)
    assert isinstance(local, LocalStorage) and local.kind == "local" and local.uri == str(tmp_path)
    assert isinstance(s3, S3Storage) and s3.kind == "s3" and s3.uri == s3_lake
    with pytest.raises(ValueError, match="no bucket"):
        open_storage("s3://")


def test_a_local_lake_never_imports_boto3(tmp_path):
    """Opening, querying, exporting from and choosing for a local lake leave boto3 unloaded (it costs ~0.3 s)."""
    script = textwrap.dedent(
        f"""
        import sys
        from datalake_pipelines.core.catalog.query import DuckDBClient
        from datalake_pipelines.core.export.destination import open_destination
        from datalake_pipelines.core.export.source import open_source
        from datalake_pipelines.core.lake.open import duckdb_file_of, lake_kind, open_lake
        from datalake_pipelines.core.storage.backends import open_storage, storage_kind

        base = {str(tmp_path / "lake")!r}
        lake = open_lake(base)
        lake.refresh_warehouse()
        assert lake.duckdb_file == duckdb_file_of(base) and lake.duckdb_file.exists()
        with DuckDBClient(base) as duck:
            assert duck.retrieve_partitions().empty
        assert open_source(base).select() == []
        open_destination({str(tmp_path / "out")!r})
        open_storage(base).write_bytes("x", b"1")
        assert lake_kind(base) == storage_kind(base) == "local" and lake_kind("s3://b/l") == "s3"
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "s3transfer")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_s3_storage_answers_for_a_missing_key(s3_lake):
    storage = S3Storage(s3_lake)
    storage.write_bytes("here.txt", b"abc")
    assert storage.exists("here.txt") and storage.info("here.txt").size == 3
    assert not storage.exists("gone.txt")
    for read in (storage.info, storage.read_bytes, storage.sha256):
        with pytest.raises(FileNotFoundError, match=f"{s3_lake}/gone.txt"):
            read("gone.txt")
    assert storage.create_exclusive("once.txt", b"1") and not storage.create_exclusive("once.txt", b"2")
    assert storage.read_bytes("once.txt") == b"1"


def test_s3_storage_raises_what_is_not_a_missing_key(s3_lake):
    from botocore.exceptions import ClientError

    storage = S3Storage("s3://no-such-bucket-here/lake")
    for call in (storage.read_bytes, storage.sha256, lambda key: storage.create_exclusive(key, b"1")):
        with pytest.raises(ClientError, match="NoSuchBucket"):
            call("x")
