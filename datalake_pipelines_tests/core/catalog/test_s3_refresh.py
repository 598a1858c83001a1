"""The incremental refresh of an S3 lake's ``catalog.duckdb`` (moto's real HTTP server): after any sequence of
ingests, compactions, dropped partitions, re-uploads, new, rewritten and deleted hash-index segments, the file
holds what a full build from the bucket holds, and only the changed partitions' footers were read."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.catalog.s3 import S3Catalog, cached_duckdb_file, refresh_duckdb_s3
from datalake_pipelines.core.catalog.warehouse import HASH_INDEX_SCHEMA
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.storage.backends import S3Storage, download_tree
from datalake_pipelines_tests.core.catalog.test_query import write_batch_files

REFS = [PartitionRef(p, d, "ocr", v) for p in ("acme", "globex") for d in ("inv", "rec") for v in ("base", "ja")][:6]
TIMES = ["2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+02:00", "2024-01-02T00:00:00", "not a time", None]


class Bucket:
    """A lake on moto plus a local mirror of its partitions (where parts are written before their upload)."""

    def __init__(self, base: str, tmp: Path):
        self.base, self.storage = base, S3Storage(base)
        self.local = LakeLayout(tmp / "mirror")
        self.jobs = 0
        self.touched: set[str] = set()  # partitions whose objects changed since the last refresh

    def job(self) -> str:
        self.jobs += 1
        return f"job-{self.jobs:04d}"

    def add(self, ref: PartitionRef, n: int = 2) -> None:
        """An ingest: a new part and the partition's ``_metadata.json`` (uploaded last)."""
        job = self.job()
        write_batch_files(self.local, ref, job, {"lang": ["en"] * n, "n": list(range(n))})
        folder = self.local.partition_dir(ref)
        self.storage.upload(folder / f"part-{job}.parquet", keys.part_file(ref, job))
        self.storage.upload(folder / keys.PARTITION_METADATA, keys.partition_metadata(ref))
        self.touched.add(ref.key)

    def rebuild(self, ref: PartitionRef) -> None:
        """The lake's own compaction (``data.parquet`` uploaded, parts deleted, ``_metadata.json`` rewritten)."""
        open_lake(self.base).rebuild_partition(ref, 1000)
        shutil.rmtree(self.local.partition_dir(ref), ignore_errors=True)
        download_tree(self.storage, keys.partition(ref), self.local.partition_dir(ref))
        self.touched.add(ref.key)

    def drop(self, ref: PartitionRef) -> None:
        open_lake(self.base).drop_partition(ref)
        shutil.rmtree(self.local.partition_dir(ref), ignore_errors=True)
        self.touched.add(ref.key)

    def reupload(self, ref: PartitionRef, rng: random.Random) -> None:
        """A part or ``_metadata.json`` put again: the same bytes, or the metadata with another last batch."""
        names = sorted(o.key for o in self.storage.list(keys.partition(ref)))
        if not names:
            return
        name = rng.choice(names)
        data = self.storage.read_bytes(name)
        if name.endswith(keys.PARTITION_METADATA) and rng.random() < 0.5:
            data = data.replace(b'"ingested_at": "', b'"ingested_at": "1')  # batches end in another order
        self.storage.write_bytes(name, data)
        self.touched.add(ref.key)

    def segment(self, rng: random.Random) -> None:
        """A new hash-index segment; sha256s, times and paths from small pools so that rows compete."""
        rows = [
            {**{c: None for c in HASH_INDEX_SCHEMA.names}, "sha256": f"{rng.randrange(12):064x}",
             "path": f"assets/{rng.choice('abc')}.jpg", "size": rng.randrange(3), "created_at": rng.choice(TIMES),
             "first_batch_id": rng.choice(["job-a", "job-b", None]), "kind": rng.choice(["image", "doc"])}
            for _ in range(rng.randrange(1, 8))
        ]  # fmt: skip
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=HASH_INDEX_SCHEMA), sink)
        self.storage.write_bytes(keys.index_segment(self.job()), sink.getvalue())

    def forget(self, rng: random.Random) -> None:
        """A GC or delete: the lake rewrites (or deletes) every segment naming the path."""
        open_lake(self.base).forget_assets({f"assets/{rng.choice('abc')}.jpg"})


def full_build(base: str) -> tuple[list, list]:
    """``partitions`` and ``hash_index`` as the full build computes them (a listing per partition, every footer,
    every segment), in memory."""
    catalog = S3Catalog(base)
    with duckdb.connect() as con:
        con.register("stats", catalog.stats())
        partitions = con.execute("SELECT * FROM stats ORDER BY ALL").fetchall()
        catalog.build_hash_index(con)
        return partitions, con.execute("SELECT * FROM hash_index ORDER BY sha256").fetchall()


def tables(path: Path | str) -> tuple[list, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        partitions = con.execute("SELECT * FROM partitions ORDER BY ALL").fetchall()
        return partitions, con.execute("SELECT * FROM hash_index ORDER BY sha256").fetchall()


@pytest.fixture
def bucket(s3_lake, tmp_path) -> Bucket:
    return Bucket(s3_lake, tmp_path)


@pytest.fixture
def footers(monkeypatch) -> list[str]:
    """The URIs whose footer an ``S3Catalog`` reads."""
    read: list[str] = []
    real = S3Catalog._fragment

    def spy(self, uri):
        read.append(uri)
        return real(self, uri)

    monkeypatch.setattr(S3Catalog, "_fragment", spy)
    return read


def refresh_and_check(bucket: Bucket, footers: list[str]) -> dict:
    footers.clear()
    summary = refresh_duckdb_s3(bucket.base)
    by_refresh = list(footers)
    read = {uri.removeprefix(bucket.base + "/") for uri in footers}
    read_keys = {"/".join(s.split("=", 1)[1] for s in k.split("/")[1:5]) for k in read if k.startswith("catalog/")}
    if summary["incremental"]:  # a full build reads every footer
        assert read_keys <= bucket.touched
        assert summary["changed"] <= len(bucket.touched)
    bucket.touched.clear()
    assert tables(cached_duckdb_file(bucket.base)) == full_build(bucket.base)
    assert S3Storage(bucket.base).read_bytes(keys.DUCKDB) == cached_duckdb_file(bucket.base).read_bytes()
    footers[:] = by_refresh  # the refresh's reads, not the full build's
    return summary


def count_requests(storage: S3Storage) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(model, **_):
        counts[model.name] = counts.get(model.name, 0) + 1

    storage.client.meta.events.register("before-call.s3", count)
    return counts


def test_incremental_refresh_reads_only_what_changed(bucket, footers, tmp_path):
    for ref in REFS[:4]:
        bucket.add(ref, 3)
    rng = random.Random(1)
    bucket.segment(rng)
    first = refresh_and_check(bucket, footers)
    assert not first["incremental"] and first["partitions"] == 4 and first["changed"] == 4 and first["rows"] == 12
    assert len(footers) == 4 + 1  # every part and the segment

    storage = S3Storage(bucket.base)
    requests = count_requests(storage)
    bucket.add(REFS[0], 2)
    footers.clear()
    second = refresh_duckdb_s3(bucket.base, storage=storage)
    assert second["incremental"] and second["changed"] == 1 and not second["index_rebuilt"] and second["rows"] == 14
    assert sorted(f.rsplit("/", 1)[1] for f in footers) == ["part-job-0001.parquet", "part-job-0006.parquet"]
    # one listing of the catalog, one of the segments, the changed partition's _metadata.json, the upload
    assert requests == {"ListObjectsV2": 2, "GetObject": 1, "PutObject": 1}
    bucket.touched.clear()
    assert tables(cached_duckdb_file(bucket.base)) == full_build(bucket.base)

    bucket.rebuild(REFS[1])
    bucket.drop(REFS[2])
    bucket.segment(rng)
    third = refresh_and_check(bucket, footers)
    assert third["changed"] == 1 and third["partitions"] == 3 and not third["index_rebuilt"]
    assert [f.rsplit("/", 1)[1] for f in footers if "/catalog/" in f] == ["data.parquet"]

    bucket.forget(random.Random(0))  # rewrites or deletes segments: the index is rebuilt from every segment
    fourth = refresh_and_check(bucket, footers)
    assert fourth["changed"] == 0 and fourth["index_rebuilt"] and not [f for f in footers if "/catalog/" in f]

    # a fresh full build (no previous file) through the same listing gives the same tables
    fresh = refresh_duckdb_s3(bucket.base, tmp_path / "fresh.duckdb")
    assert not fresh["incremental"] and tables(tmp_path / "fresh.duckdb") == full_build(bucket.base)


def test_listing_skips_what_select_skips(bucket, footers):
    bucket.add(REFS[0])
    junk = {
        "catalog/provider=Bad Name/dataset=x/task=y/variant=z/part-a.parquet": b"x",  # invalid name
        "catalog/provider=a/dataset=b/task=c/part-a.parquet": b"x",  # too shallow
        "catalog/provider=a/dataset=b/task=c/variant=d/nested/part-a.parquet": b"x",  # a partition, no file
        "catalog/provider=a/dataset=b/task=c/variant=e/_metadata.json": b"not json",  # a partition, no file
        f"{keys.partition(REFS[0])}/.hidden.parquet": b"x",
        f"{keys.partition(REFS[0])}/_common.parquet": b"x",
        "catalog/notes.txt": b"x",
    }
    for key, data in junk.items():
        bucket.storage.write_bytes(key, data)
    bucket.touched |= {"a/b/c/d", "a/b/c/e"}
    summary = refresh_and_check(bucket, footers)
    assert summary["partitions"] == 3 and summary["files"] == 1
    bucket.storage.write_bytes("catalog/provider=a/dataset=b/task=c/variant=d/nested/other.parquet", b"x")
    bucket.touched.add("a/b/c/d")
    assert refresh_and_check(bucket, footers)["partitions"] == 3


def test_an_unusable_previous_file_means_a_full_build(bucket, footers, tmp_path):
    bucket.add(REFS[0])
    refresh_and_check(bucket, footers)
    target = cached_duckdb_file(bucket.base)
    with duckdb.connect(str(target)) as con:  # another lake's file
        con.execute("UPDATE s3_refresh_state SET base = 'elsewhere'")
    assert not refresh_and_check(bucket, footers)["incremental"]
    assert refresh_and_check(bucket, footers)["incremental"]
    with duckdb.connect(str(target)) as con:  # an older version's file: no state
        con.execute("DROP TABLE s3_refresh_state")
    assert not refresh_and_check(bucket, footers)["incremental"]
    target.write_bytes(b"not a database")
    assert not refresh_and_check(bucket, footers)["incremental"]
    bucket.storage.write_bytes(f"{keys.partition(REFS[1])}/part-bad.parquet", b"PAR1 not parquet")
    before = target.read_bytes()
    with pytest.raises(Exception, match="part-bad.parquet"):
        refresh_duckdb_s3(bucket.base)
    assert target.read_bytes() == before and not [p for p in target.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_sequences_match_a_full_build(bucket, footers, seed):
    rng = random.Random(seed)
    for _ in range(10):
        for _ in range(rng.randrange(1, 4)):
            op = rng.choice(["add", "add", "add", "segment", "segment", "reupload", "drop", "rebuild", "forget"])
            ref = rng.choice(REFS)
            if op == "add":
                bucket.add(ref, rng.randrange(1, 4))
            elif op == "segment":
                bucket.segment(rng)
            elif op == "reupload":
                bucket.reupload(ref, rng)
            elif op == "drop":
                bucket.drop(ref)
            elif op == "rebuild" and bucket.storage.exists(keys.partition_metadata(ref)):
                bucket.rebuild(ref)
            elif op == "forget":
                bucket.forget(rng)
        refresh_and_check(bucket, footers)


def test_rows_tied_on_time_and_path_keep_one_winner(bucket, footers):
    """Rows of one sha256 differing only after created_at, path and first_batch_id: the row kept does not depend
    on which segment is listed (scanned) first, so a segment added later whose key sorts first changes nothing."""

    def put(key: str, kind: str) -> None:
        row = {**{c: None for c in HASH_INDEX_SCHEMA.names}, "sha256": "0" * 64, "path": "assets/a.jpg",
               "created_at": TIMES[0], "first_batch_id": "job-a", "kind": kind}  # fmt: skip
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([row], schema=HASH_INDEX_SCHEMA), sink)
        bucket.storage.write_bytes(f"{keys.SEGMENTS}/{key}.parquet", sink.getvalue())

    for first, second in (("image", "video"), ("video", "image")):
        bucket.storage.delete([o.key for o in bucket.storage.list(keys.SEGMENTS)])
        put("job-b", first)
        refresh_and_check(bucket, footers)
        put("job-a", second)
        assert not refresh_and_check(bucket, footers)["index_rebuilt"]
        assert tables(cached_duckdb_file(bucket.base))[1][0][4] == "image"


def test_rebuild_starts_from_scratch(bucket, footers):
    """`catalog rebuild` on S3: rows deleted inside the cached file by hand come back; every footer is read."""
    for ref in REFS[:3]:
        bucket.add(ref)
    refresh_and_check(bucket, footers)
    with duckdb.connect(str(cached_duckdb_file(bucket.base))) as con:
        con.execute("DELETE FROM partitions WHERE variant = 'base'")
    assert refresh_duckdb_s3(bucket.base)["incremental"] is True  # what changed in the bucket: nothing
    footers.clear()
    summary = open_lake(bucket.base).refresh_warehouse(rebuild=True)
    assert summary["incremental"] is False and len(footers) == 3
    assert tables(cached_duckdb_file(bucket.base)) == full_build(bucket.base)
