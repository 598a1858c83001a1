"""Time travel on both backends: ``as_of`` (a timestamp or a catalog version id) gives the catalog as it was then,
for queries, downloads and exports; deleted rows come back while their retained files exist, and an ``as_of``
older than the retention still holds is refused with a clear error."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lifecycle.as_of import AsOfError, AsOfTooOldError
from datalake_pipelines.core.lifecycle.versions import UnknownVersionError


def images(make_jpeg, path: Path, colors) -> Path:
    for i, color in enumerate(colors):
        make_jpeg(path / f"im{i}.jpg", color=color)
    return path


def ingest(client, make_jpeg, path: Path, colors, dataset: str = "alpha") -> None:
    client.upload_raw_data(images(make_jpeg, path, colors), "inhouse", dataset)
    assert [r.status for r in client.process_pending()] == ["done"]


def now() -> datetime:
    moment = datetime.now(timezone.utc)
    time.sleep(0.02)  # a later row's ingested_at is strictly after
    return moment


def hashes(client, as_of=None, **filters) -> set[str]:
    with DuckDBClient(client.base_path) as duck:
        table = duck.retrieve_with_existing_cols(**filters, as_arrow=True, as_of=as_of)
    return set(table.column("row_hash").to_pylist()) if table.num_rows else set()


def test_as_of_before_a_second_batch_returns_the_first_batch(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    first = hashes(client)
    between = now()
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    assert len(first) == 2 and len(hashes(client)) == 3
    assert hashes(client, as_of=between) == first
    assert hashes(client, as_of=between.isoformat()) == first
    assert hashes(client, as_of=between.replace(tzinfo=None).isoformat()) == first  # naive: UTC
    assert hashes(client, as_of="2000-01-01T00:00:00Z") == set()
    with pytest.raises(AsOfError, match="neither an ISO 8601 timestamp"):
        hashes(client, as_of="yesterday")


def test_as_of_before_a_deletion_returns_the_deleted_rows_until_gc_purges_them(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)], dataset="beta")
    everything = hashes(client)
    before = now()
    client.delete(dataset="inhouse/alpha")
    after = now()
    assert len(hashes(client)) == 1
    assert hashes(client, as_of=before) == everything
    assert hashes(client, as_of=before, datasets=["alpha"]) == everything - hashes(client)
    assert hashes(client, as_of=after) == hashes(client)
    client.gc(grace="24h", retention=0)
    with pytest.raises(AsOfTooOldError, match="oldest time available is") as refused:
        hashes(client, as_of=before)
    assert "retention" in str(refused.value)
    assert hashes(client, as_of=after) == hashes(client)  # after the purged deletion: still answered


def export_hashes(client, tmp_path: Path, name: str, as_of) -> tuple[set[str], dict]:
    task_id = client.create_export(tmp_path / name, export_all=True, as_of=as_of, wait=True)
    info = client.export_info(task_id)
    assert info["task_status"] == "done", info
    rows = [r for b in iter_export_batches(info["export_path"]) for r in b.column("row_hash").to_pylist()]
    return set(rows), info


def test_download_and_export_as_of_before_a_second_batch(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    first = hashes(client)
    between = now()
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    manifest = client.download({"datasets": ["alpha"]}, "parquet", tmp_path / "dl", as_of=between.isoformat())
    assert manifest["rows"] == 2 and manifest["catalog_snapshot_at"] == between.isoformat()
    assert set(pq.read_table(tmp_path / "dl" / "data.parquet").column("row_hash").to_pylist()) == first
    assert manifest["selection"]["as_of"] == between.isoformat()
    searched = client.download(
        {"column": "image", "text": "assets", "as_of": between.isoformat()}, "parquet", tmp_path / "search"
    )
    assert searched["rows"] == 2
    exported, info = export_hashes(client, tmp_path, "exports", between.isoformat())
    assert exported == first and info["process_info"]["total_data_count"] == 2
    assert export_hashes(client, tmp_path, "now", None)[0] == hashes(client)


def test_export_as_of_past_the_retention_fails_with_a_code(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1)])
    before = now()
    client.delete(dataset="inhouse/alpha")
    client.gc(grace="24h", retention=0)
    task_id = client.create_export(tmp_path / "x", export_all=True, as_of=before.isoformat(), wait=True)
    info = client.export_info(task_id)
    assert info["task_status"] == "fail"
    assert info["process_info"]["err_code"] == "AS_OF_UNAVAILABLE"
    assert "oldest time available" in info["process_info"]["err_msg"]


def test_versions_are_recorded_listed_and_usable_as_of(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    first = hashes(client)
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    (v1, v2) = client.catalog_versions("inhouse/alpha/raw/image")
    assert (v1["action"], v1["rows"], v2["rows"]) == ("ingest", 2, 3)
    assert v1["version_id"] < v2["version_id"] and len(v2["files"]) == 2
    assert hashes(client, as_of=v1["version_id"]) == first
    assert hashes(client, as_of=v2["version_id"]) == hashes(client)
    rebuilt = client.lake.rebuild_partition(PartitionRef("inhouse", "alpha", "raw", "image"), 100)
    done = client.delete(dataset="inhouse/alpha")
    versions = client.catalog_versions()
    assert [v["action"] for v in versions] == ["ingest", "ingest", "rebuild", "delete"]
    assert versions[2]["version_id"] == rebuilt.catalog_version and versions[2]["rows"] == 3
    assert versions[2]["files"][0]["key"].endswith("/data.parquet") and len(versions[2]["files"]) == 1
    assert done["catalog_versions"] == [versions[3]["version_id"]] and versions[3]["rows"] == 0
    assert hashes(client, as_of=v1["version_id"]) == first  # from the deletion's retained files
    assert hashes(client, as_of=versions[3]["version_id"]) == set()
    assert client.catalog_versions("inhouse/beta/raw/image") == []
    with pytest.raises(UnknownVersionError, match="unknown catalog version"):
        hashes(client, as_of="v20260101T000000000000Z-abcdef01")


def test_compaction_keeps_every_row_and_its_ingested_at(client, make_jpeg, tmp_path):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    first = hashes(client)
    between = now()
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    with DuckDBClient(client.base_path) as duck:
        before = duck.sql("SELECT row_hash, ingested_at FROM catalog ORDER BY row_hash", as_arrow=True)
    result = client.lake.rebuild_partition(PartitionRef("inhouse", "alpha", "raw", "image"), 1)
    assert result.files_before == 2 and result.duplicates_dropped == 0
    with DuckDBClient(client.base_path) as duck:
        after = duck.sql("SELECT row_hash, ingested_at FROM catalog ORDER BY row_hash", as_arrow=True)
    assert after.equals(before)
    assert hashes(client, as_of=between) == first  # no retained copy needed: ingested_at says it all


def test_cli_as_of_and_catalog_versions(client, make_jpeg, tmp_path, base, capsys):
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1)])
    first = hashes(client)
    between = now()
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    assert main(["--base-path", base, "catalog", "versions", "--json", "--partition", "inhouse/alpha/raw/image"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["rows"] for v in listed] == [1, 2]
    assert main(["--base-path", base, "catalog", "versions"]) == 0
    assert listed[0]["version_id"] in capsys.readouterr().out
    for i, as_of in enumerate((between.isoformat(), listed[0]["version_id"])):
        out = tmp_path / f"dl-{i}"
        assert main(["--base-path", base, "download", "--all", "--as-of", as_of, "--out", str(out)]) == 0
        assert set(pq.read_table(out / "data.parquet").column("row_hash").to_pylist()) == first
    capsys.readouterr()
    assert main(["--base-path", base, "download", "--all", "--as-of", "soon", "--out", str(tmp_path / "x")]) == 1
    assert "neither an ISO 8601 timestamp" in capsys.readouterr().err
    dest = tmp_path / "exports"
    code = main(["--base-path", base, "--json", "export", "create", "--export-all", "--now", "--destination",
                 str(dest), "--as-of", between.isoformat()])  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r for b in iter_export_batches(info["export_path"]) for r in b.column("row_hash").to_pylist()}
    assert rows == first
    assert main(["--base-path", base, "catalog", "versions", "--partition", "nope"]) == 1


def test_a_deletion_still_copying_is_not_read_as_complete(client, make_jpeg, tmp_path, monkeypatch):
    """A deletion interrupted while it copies a partition's files (record written, one part retained, the
    partition unchanged): an as_of before it reads the partition itself, not the partial copy."""
    ingest(client, make_jpeg, tmp_path / "one", [(1, 1, 1), (2, 2, 2)])
    ingest(client, make_jpeg, tmp_path / "two", [(3, 3, 3)])
    everything = hashes(client)
    before = now()
    copy, copied = client.lake.storage.copy, []

    def copy_once(src: str, dst: str) -> None:
        if src.endswith(".parquet") and any(k.endswith(".parquet") for k in copied):
            raise OSError("interrupted")
        copied.append(dst)
        copy(src, dst)

    monkeypatch.setattr(client.lake.storage, "copy", copy_once)
    with pytest.raises(OSError, match="interrupted"):
        client.delete(dataset="inhouse/alpha")
    monkeypatch.setattr(client.lake.storage, "copy", copy)  # not undo(): that would drop the S3 environment too
    assert [k for k in copied if k.endswith(".parquet")] and hashes(client) == everything
    assert hashes(client, as_of=before) == everything
    assert hashes(client, as_of=now()) == everything
