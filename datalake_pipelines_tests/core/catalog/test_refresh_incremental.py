"""The incremental refresh of catalog.duckdb: only the partitions the change log names are read, the hash index's
changed keys are carried over from its journal, and the result always equals a full build."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from datalake_pipelines.core.catalog import warehouse
from datalake_pipelines.core.catalog.refresh import refresh_duckdb
from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry
from datalake_pipelines.core.lake.changes import partition_writer
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines_tests.core.catalog.test_query import OCR, OTHER, add_batch, lake  # noqa: F401 - fixture

NEW = PartitionRef("initech", "forms", "ocr", "base")


def entry(i: int, created_at: str = "2024-01-01T00:00:00+00:00") -> IndexEntry:
    return IndexEntry(f"{i:064x}", f"{i:064x}", f"assets/x/{i}.jpg", 100 + i, "image", "JPEG", 10, 20, "RGB",
                      "acme", "invoices", "job-a", created_at)  # fmt: skip


def add_entries(layout: LakeLayout, ids: range, created_at: str) -> None:
    index = HashIndex(layout.hash_index)
    index.add_many(entry(i, created_at) for i in ids)
    index.close()


def tables(path) -> dict[str, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            "partitions": con.execute("SELECT * FROM partitions ORDER BY ALL").fetchall(),
            "hash_index": con.execute("SELECT * FROM hash_index ORDER BY sha256").fetchall(),
            "catalog": con.execute("SELECT count(*) FROM catalog").fetchall(),
        }


def assert_same_as_full_build(layout: LakeLayout, tmp_path) -> None:
    fresh = tmp_path / "fresh.duckdb"
    fresh.unlink(missing_ok=True)
    assert refresh_duckdb(layout, fresh)["incremental"] is False
    assert tables(layout.duckdb_file) == tables(fresh)


def test_only_changed_partitions_are_read_and_the_result_equals_a_full_build(lake, tmp_path, monkeypatch):
    add_entries(lake, range(5), "2024-01-01T00:00:00+00:00")
    first = refresh_duckdb(lake)
    assert first["incremental"] is False and first["changed"] == first["partitions"] == 4

    read = []
    stats = warehouse.partition_stats
    spy = lambda layout, refs: read.append(refs) or stats(layout, refs)  # noqa: E731
    monkeypatch.setattr("datalake_pipelines.core.catalog.refresh.partition_stats", spy)
    assert refresh_duckdb(lake)["changed"] == 0 and read == [[]]  # nothing new: no footer, no _metadata.json

    add_batch(lake, OCR, "job-more", {"lang": ["en"], "src": ["real"]})
    add_batch(lake, NEW, "job-new", {"lang": ["en"]})
    add_entries(lake, range(5, 8), "2024-01-02T00:00:00+00:00")
    summary = refresh_duckdb(lake)
    assert summary["incremental"] is True and summary["changed"] == 2 and summary["partitions"] == 5
    assert sorted(r.key for r in read[-1]) == sorted([OCR.key, NEW.key])
    assert summary["assets"] == 8
    assert_same_as_full_build(lake, tmp_path)


def test_a_dropped_partition_leaves_the_table(lake, tmp_path):
    refresh_duckdb(lake)
    with partition_writer(lake, OTHER):  # as a delete drops a partition it emptied
        shutil.rmtree(lake.partition_dir(OTHER))
    summary = refresh_duckdb(lake)
    assert summary["incremental"] is True and summary["partitions"] == 3 and summary["walked"] is False
    assert_same_as_full_build(lake, tmp_path)


def test_what_no_writer_recorded_is_found_by_the_walk(lake, tmp_path, monkeypatch):
    """A partition removed and one copied in by hand: the change log cannot name them, the walk does (asked for,
    or every DATALAKE_CATALOG_WALK_SECONDS)."""
    refresh_duckdb(lake)
    shutil.rmtree(lake.partition_dir(OTHER))
    shutil.copytree(lake.partition_dir(OCR), lake.partition_dir(NEW))
    summary = refresh_duckdb(lake)
    assert summary["walked"] is False and summary["partitions"] == 4  # not seen yet: documented
    summary = refresh_duckdb(lake, walk=True)
    assert summary["walked"] is True and summary["partitions"] == 4 and summary["changed"] == 1
    assert_same_as_full_build(lake, tmp_path)

    shutil.rmtree(lake.partition_dir(NEW))
    monkeypatch.setenv("DATALAKE_CATALOG_WALK_SECONDS", "0")
    summary = refresh_duckdb(lake)
    assert summary["walked"] is True and summary["partitions"] == 3


@pytest.mark.parametrize("change", ["forget", "phash", "late_older_entry"])
def test_every_kind_of_index_change_is_carried_over_without_a_copy(lake, tmp_path, change):
    add_entries(lake, range(6), "2024-01-02T00:00:00+00:00")
    refresh_duckdb(lake)
    index = HashIndex(lake.hash_index)
    if change == "forget":  # gc or a delete removed entries, and a new one came in
        index.remove_paths({"assets/x/1.jpg", "assets/x/2.jpg"})
        index.add_many([entry(100, "2024-01-03T00:00:00+00:00")])
    elif change == "phash":  # the near-duplicate backfill filled a pHash of an old entry
        index.fill_phash({f"{3:064x}": 12345})
    else:  # an ingest that started before the last refresh committed after it
        index.add_many([entry(200, "2024-01-01T12:00:00+00:00")])
    index.close()
    summary = refresh_duckdb(lake)
    assert summary["incremental"] is True and summary["index_copied"] is False  # the journal's keys only
    assert summary["assets"] == {"forget": 5, "phash": 6, "late_older_entry": 7}[change]
    assert_same_as_full_build(lake, tmp_path)


def test_the_catalog_view_follows_the_lake_from_empty_and_to_a_new_place(tmp_path):
    layout = LakeLayout(tmp_path / "lake")
    layout.catalog_root.mkdir(parents=True, exist_ok=True)
    assert refresh_duckdb(layout)["files"] == 0
    add_batch(layout, OCR, "job-a", {"lang": ["en", "ko"]})
    assert refresh_duckdb(layout)["incremental"] is True
    with duckdb.connect(str(layout.duckdb_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM catalog").fetchone()[0] == 2

    shutil.move(tmp_path / "lake", tmp_path / "moved")  # catalog.duckdb moves with the lake
    moved = LakeLayout(tmp_path / "moved")
    assert refresh_duckdb(moved)["incremental"] is False  # its view globbed the old place
    with duckdb.connect(str(moved.duckdb_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM catalog").fetchone()[0] == 2


def test_a_database_without_refresh_state_is_rebuilt(lake, tmp_path):
    with duckdb.connect(str(lake.duckdb_file)) as con:  # a catalog.duckdb written by an older version
        con.execute("CREATE TABLE partitions AS SELECT 1 AS x")
    summary = refresh_duckdb(lake)
    assert summary["incremental"] is False and summary["partitions"] == 4
    assert_same_as_full_build(lake, tmp_path)
