"""refresh_duckdb() and check_catalog_files() on a real catalog and hash index."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import duckdb
import pytest

from datalake_pipelines.core.catalog.parts import CatalogError
from datalake_pipelines.core.catalog.refresh import refresh_duckdb
from datalake_pipelines.core.catalog.warehouse import check_catalog_files, partition_stats
from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry
from datalake_pipelines.core.lake.changes import partition_writer
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines_tests.core.catalog.test_query import OCR, OTHER, add_batch, lake  # noqa: F401 - fixture


def fill_index(layout: LakeLayout, n: int) -> None:
    index = HashIndex(layout.hash_index)
    index.add_many(
        IndexEntry(f"{i:064x}", f"{i:064x}", f"assets/x/{i}.jpg", 100 + i, "image", "JPEG", 10, 20, "RGB",
                   "acme", "invoices", "job-a", "2024-01-01T00:00:00+00:00")
        for i in range(n)
    )  # fmt: skip
    index.close()


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def test_refresh_builds_view_partitions_and_hash_index(lake):
    fill_index(lake, 5)
    summary = refresh_duckdb(lake, batch_size=2)
    assert summary["partitions"] == 4 and summary["rows"] == 7 and summary["assets"] == 5
    assert summary["seconds"] >= 0 and lake.duckdb_file.exists()
    with duckdb.connect(str(lake.duckdb_file), read_only=True) as con:
        assert count(con, "SELECT count(*) FROM catalog") == 7
        assert count(con, "SELECT count(*) FROM catalog WHERE provider = 'globex' AND variant = 'base'") == 1
        rows = con.execute("SELECT provider, task, variant, rows, bytes, last_batch FROM partitions").fetchall()
        by_key = {r[:3]: r[3:] for r in rows}
        assert by_key[("acme", "ocr", "base")][0] == 3 and by_key[("acme", "ocr", "base")][2] == "job-a"
        assert all(r[4] > 0 for r in rows)
        assert count(con, "SELECT count(*) FROM hash_index") == 5
        assert count(con, "SELECT max(size) FROM hash_index") == 104
    assert not [p for p in lake.base.iterdir() if p.name.startswith(".")]  # no temp file left


def test_refresh_of_empty_lake_has_partition_columns(tmp_path):
    layout = LakeLayout(tmp_path / "lake")
    summary = refresh_duckdb(layout)
    assert summary == {**summary, "partitions": 0, "rows": 0, "assets": 0, "files": 0}
    with duckdb.connect(str(layout.duckdb_file), read_only=True) as con:
        names = [d[0] for d in con.execute("SELECT * FROM catalog").description]
        assert names == ["provider", "dataset", "task", "variant"]
        assert count(con, "SELECT count(*) FROM catalog") == 0
        assert count(con, "SELECT count(*) FROM partitions") == 0


def test_refresh_while_reader_holds_connection(lake):
    refresh_duckdb(lake)
    reader = duckdb.connect(str(lake.duckdb_file), read_only=True)
    # a reader in another process holds the file too
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(lake.duckdb_file)!r}, read_only=True)
            print(con.execute("SELECT count(*) FROM partitions").fetchone()[0], flush=True)
            sys.stdin.readline()
            print(con.execute("SELECT count(*) FROM partitions").fetchone()[0], flush=True)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "4"
        add_batch(lake, PartitionRef("initech", "forms", "ocr", "base"), "job-new", {"lang": ["en"]})
        summary = refresh_duckdb(lake)
        assert summary["partitions"] == 5
        # old readers keep a consistent (old) snapshot and are not broken
        assert count(reader, "SELECT count(*) FROM partitions") == 4
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "4"
    finally:
        holder.communicate(timeout=30)
    reader.close()
    with duckdb.connect(str(lake.duckdb_file), read_only=True) as fresh:
        assert count(fresh, "SELECT count(*) FROM partitions") == 5
        assert count(fresh, "SELECT count(*) FROM catalog WHERE provider = 'initech'") == 1


def test_check_catalog_files_names_corrupt_file(lake):
    assert check_catalog_files(lake) == 4
    assert check_catalog_files(lake, deep=True) == 4
    bad = lake.part_file(OTHER, "job-broken")
    bad.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(CatalogError, match="part-job-broken.parquet"):
        check_catalog_files(lake)


def test_truncated_file_found_by_deep_check(lake):
    path = next(lake.partition_dir(OCR).glob("part-*.parquet"))
    data = path.read_bytes()
    # keep the footer but damage the column chunks
    path.write_bytes(data[:4] + b"\xff" * (len(data) - 2000) + data[-(2000 - 4) :])
    with pytest.raises(CatalogError, match=path.name):
        check_catalog_files(lake, deep=True)


@pytest.mark.parametrize("how", ["writer", "by_hand"])
def test_refresh_with_corrupt_file_fails_and_keeps_old_db(lake, how):
    refresh_duckdb(lake)
    before = lake.duckdb_file.stat().st_mtime_ns
    with partition_writer(lake, OTHER) if how == "writer" else contextlib.nullcontext():
        lake.part_file(OTHER, "job-broken").write_bytes(b"junk")
    with pytest.raises(CatalogError, match="part-job-broken.parquet"):
        refresh_duckdb(lake, walk=how == "by_hand")  # no writer named the partition: only a walk finds it
    assert lake.duckdb_file.stat().st_mtime_ns == before
    assert not [p for p in lake.base.iterdir() if p.name.startswith(".")]


def test_partition_stats_reads_footers(lake):
    stats = {(r["provider"], r["task"], r["variant"]): r for r in partition_stats(lake).to_pylist()}
    assert stats[("acme", "ocr", "base")]["rows"] == 3
    assert stats[("acme", "ocr", "base")]["files"] == 1
    assert stats[("acme", "ocr", "base")]["last_ingested_at"] is not None


def test_refresh_names_a_path_string_it_cannot_take(tmp_path):
    # a path or URI string is not a LakeLayout: a clear TypeError naming the way for any lake, not AttributeError
    for base in (str(tmp_path), "s3://bucket/lake"):
        with pytest.raises(TypeError, match=r"takes a LakeLayout \(any lake: open_lake\(base\).refresh_warehouse"):
            refresh_duckdb(base)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
