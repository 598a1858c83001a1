"""No catalog row points at a missing asset: ``catalog verify``, the asset check, and the S3 index cache.

S3 tests run against moto's HTTP server (``s3_lake`` fixture); the bucket-recreation test is the issue's
scenario: a cache folder that outlived its bucket must not turn fresh uploads into "deduplicated" rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.s3 import refresh_duckdb_s3
from datalake_pipelines.core.ingest.s3_index import segment_bytes, segment_entries
from datalake_pipelines.core.ingest.verify import check_asset_files
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.s3 import S3Lake
from datalake_pipelines.core.storage.backends import S3Storage, cache_dir_for, split_s3_uri

RAW = PartitionRef("inhouse", "scans", "raw", "image")


def ingest(client: DatalakeClient, folder: Path, dataset: str = "scans") -> list:
    client.upload_raw_data(folder, provider="inhouse", dataset=dataset)
    results = client.process_pending()
    assert [r.status for r in results] == ["done"], [r.error for r in results]
    return results


def images(make_jpeg, folder: Path, n: int = 3) -> Path:
    for i in range(n):
        make_jpeg(folder / f"img{i}.jpg", color=(10 * i, 80, 160))  # fixed colours: the same bytes every call
    return folder


def verify(base, *args: str, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["--base-path", str(base), "catalog", "verify", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


# local lake --------------------------------------------------------------------------------------------
def test_verify_local_clean_then_finds_missing_truncated_and_corrupt_assets(client, lake, tmp_path, make_jpeg, capsys):
    ingest(client, images(make_jpeg, tmp_path / "src"))
    code, report = verify(lake.base, capsys=capsys)
    assert code == 0 and report["ok"] and report["references"] == 3
    assert [p["partition"] for p in report["partitions"]] == [RAW.key]

    rows = pads.dataset(lake.catalog_root, partitioning="hive").to_table().to_pylist()
    gone, cut, flipped = (lake.base / r["image"] for r in rows)
    gone.unlink()
    cut.write_bytes(cut.read_bytes()[:-10])  # wrong size: found without re-hashing
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0xFF  # same size, other content: only --hashes finds it
    flipped.write_bytes(bytes(data))

    code, report = verify(lake.base, "--partition", RAW.key, capsys=capsys)
    assert code == 1 and not report["ok"]
    [part] = report["partitions"]
    assert part["missing"] == [gone.relative_to(lake.base).as_posix()]
    assert any("bytes, expected" in p and cut.name in p for p in part["problems"])
    assert not any(flipped.name in p for p in part["problems"])
    code, report = verify(lake.base, "--hashes", capsys=capsys)
    assert code == 1 and any(flipped.name in p and "sha256" in p for p in report["partitions"][0]["problems"])

    capsys.readouterr()
    assert main(["--base-path", str(lake.base), "catalog", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"missing: {gone.relative_to(lake.base).as_posix()}" in out and "PROBLEMS FOUND" in out


def test_verify_names_an_unknown_partition(lake, capsys):
    assert main(["--base-path", str(lake.base), "catalog", "verify", "--partition", "a/b/c/d"]) == 1
    assert "no partition a/b/c/d" in capsys.readouterr().err


def test_asset_check_covers_deduplicated_rows_of_the_run(client, lake, tmp_path, make_jpeg):
    """A second dataset whose rows are all dedup hits: the check of its run still looks at every asset."""
    ingest(client, images(make_jpeg, tmp_path / "src"))
    [second] = ingest(client, images(make_jpeg, tmp_path / "src2"), dataset="copies")
    ref = PartitionRef("inhouse", "copies", "raw", "image")
    assert check_asset_files(lake, ref, [second.job_id]).passed
    rows = pads.dataset(lake.catalog_root, partitioning="hive").to_table().to_pylist()
    (lake.base / rows[0]["image"]).unlink()
    outcome = check_asset_files(lake, ref, [second.job_id], hashes=False)
    assert not outcome.passed and outcome.missing == [rows[0]["image"]]


def test_asset_check_hashes_many_assets_in_parallel_and_finds_the_one_changed(client, lake, tmp_path, make_jpeg):
    """Enough assets for the threaded hashing (8 or more): every one is hashed, a same-size change is found."""
    ingest(client, images(make_jpeg, tmp_path / "src", n=12))
    assert check_asset_files(lake, RAW).checked == 12 and check_asset_files(lake, RAW).passed
    rows = pads.dataset(lake.catalog_root, partitioning="hive").to_table().to_pylist()
    flipped = lake.base / rows[7]["image"]
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0xFF
    flipped.write_bytes(bytes(data))
    outcome = check_asset_files(lake, RAW)
    assert not outcome.passed and len(outcome.problems) == 1
    assert flipped.name in outcome.problems[0] and "sha256" in outcome.problems[0]


# S3 lake -----------------------------------------------------------------------------------------------
def empty_and_recreate(bucket: str) -> None:
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)


def referenced_assets(base: str) -> list[str]:
    storage = S3Storage(base)
    fs, root = storage.arrow()
    table = pads.dataset(f"{root}/catalog", filesystem=fs, partitioning="hive").to_table(columns=["image"])
    return table.column("image").to_pylist()


def test_recreated_bucket_with_the_same_cache_uploads_every_asset_again(s3_lake, make_jpeg, tmp_path, capsys):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    ingest(client, images(make_jpeg, tmp_path / "src"))
    cache = S3Lake(s3_lake).cache
    assert (cache / "index" / "hash_index.sqlite").is_file()

    bucket, _ = split_s3_uri(s3_lake)
    empty_and_recreate(bucket)  # same name, same endpoint, same DATALAKE_CACHE_DIR
    [result] = ingest(client, images(make_jpeg, tmp_path / "src"))
    assert result.images_new == 3 and result.images_deduplicated == 0

    storage = S3Storage(s3_lake)
    paths = referenced_assets(s3_lake)
    assert len(paths) == 3 and all(storage.exists(p) for p in paths)
    code, report = verify(s3_lake, "--hashes", capsys=capsys)
    assert code == 0 and report["ok"] and report["references"] == 3

    # and a third ingest of the same images is a clean dedup against the new bucket's segments
    [again] = ingest(client, images(make_jpeg, tmp_path / "src"), dataset="copies")
    assert again.images_deduplicated == 3 and again.images_new == 0


def test_cache_folder_is_keyed_by_endpoint(monkeypatch):
    base = "s3://bucket/lake"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    one = cache_dir_for(base)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    assert cache_dir_for(base) != one
    assert cache_dir_for(base, "https://s3.eu-west-1.amazonaws.com") == cache_dir_for(base, "https://s3.amazonaws.com")
    assert one.parts[-2:] == ("bucket", "lake")


def test_verify_s3_finds_a_deleted_asset(s3_lake, make_jpeg, tmp_path, capsys):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    [result] = ingest(client, images(make_jpeg, tmp_path / "src"))
    code, report = verify(s3_lake, capsys=capsys)
    assert code == 0 and report["references"] == 3
    victim = referenced_assets(s3_lake)[1]
    S3Storage(s3_lake).delete([victim])
    code, report = verify(s3_lake, "--partition", RAW.key, capsys=capsys)
    assert code == 1 and report["partitions"][0]["missing"] == [victim]

    s3_lake_obj = S3Lake(s3_lake)  # the asset check of that run sees it too
    with s3_lake_obj.work_lake(["check"]) as work:
        s3_lake_obj.fetch_partition(work, RAW)
        outcome = check_asset_files(
            work,
            RAW,
            [result.job_id],
            s3_lake_obj.asset_sha256,
            storage=s3_lake_obj.storage,
            sizes_of=s3_lake_obj.asset_sizes,
        )
    assert not outcome.passed and outcome.missing == [victim]


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_stale_segment_drops_the_cache(s3_lake, make_jpeg, tmp_path, change):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    ingest(client, images(make_jpeg, tmp_path / "src"))
    s3 = S3Lake(s3_lake)
    [segment] = [o.key for o in s3.storage.list("index/segments")]
    if change == "delete":
        s3.storage.delete([segment])
    else:  # same key, other content (another store's segment under the same name)
        entries = segment_entries(s3.storage.read_bytes(segment))
        s3.storage.write_bytes(segment, segment_bytes(entries[:1]))
    cache = s3.index_cache()
    assert cache.index.count() == (0 if change == "delete" else 1)


def test_dedup_hit_on_a_deleted_object_stores_the_content_again(s3_lake, make_jpeg, tmp_path, capsys):
    """The segment still names the asset, but its object is gone: the next run re-uploads, never points at it."""
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    ingest(client, images(make_jpeg, tmp_path / "src"))
    victim = referenced_assets(s3_lake)[0]
    S3Storage(s3_lake).delete([victim])
    [again] = ingest(client, images(make_jpeg, tmp_path / "src"), dataset="copies")
    assert (again.images_new, again.images_deduplicated) == (1, 2)
    copies = PartitionRef("inhouse", "copies", "raw", "image")
    code, report = verify(s3_lake, "--partition", copies.key, capsys=capsys)
    assert code == 0 and report["references"] == 3
    [third] = ingest(client, images(make_jpeg, tmp_path / "src"), dataset="thirds")  # the cache took the new entry
    assert (third.images_new, third.images_deduplicated) == (0, 3)


def test_segments_written_before_orientation_still_load(s3_lake, make_jpeg, tmp_path):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    ingest(client, images(make_jpeg, tmp_path / "src"))
    s3 = S3Lake(s3_lake)
    [segment] = [o.key for o in s3.storage.list("index/segments")]
    old = pq.read_table(pa.BufferReader(s3.storage.read_bytes(segment))).drop_columns(["orientation"])
    sink = pa.BufferOutputStream()
    pq.write_table(old, sink)
    s3.storage.write_bytes(segment, sink.getvalue().to_pybytes())  # what an older version wrote
    entries = segment_entries(s3.storage.read_bytes(segment))
    assert all(e.orientation is None and e.needs_geometry for e in entries)
    assert s3.index_cache().index.count() == 3
    assert refresh_duckdb_s3(s3_lake)["assets"] == 3
    [again] = ingest(client, images(make_jpeg, tmp_path / "src"), dataset="copies")
    assert again.images_deduplicated == 3
    table = pads.dataset(
        f"{S3Storage(s3_lake).arrow()[1]}/catalog/provider=inhouse/dataset=copies",
        filesystem=S3Storage(s3_lake).arrow()[0],
    ).to_table()
    assert set(table.column("image_width").to_pylist()) == {64} and table.column("image_orientation").null_count == 3


def test_s3_dedup_hit_on_a_truncated_object_stores_the_bytes_again(s3_lake, make_jpeg, tmp_path, capsys):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    src = images(make_jpeg, tmp_path / "src", n=1)
    ingest(client, src)
    storage = S3Storage(s3_lake)
    [victim] = referenced_assets(s3_lake)
    original = storage.read_bytes(victim)
    storage.write_bytes(victim, original[:-9])  # wrong size: the same as a missing object
    again = tmp_path / "again"
    again.mkdir()
    (again / "copy.jpg").write_bytes((src / "img0.jpg").read_bytes())
    [result] = ingest(client, again, dataset="scans")
    assert (result.images_new, result.images_deduplicated) == (1, 0)
    assert storage.read_bytes(victim) == original
    code, _report = verify(s3_lake, capsys=capsys)
    assert code == 0
