"""The catalog change log and the hash index's journal: a refresh reads what they name, never loses a change
(writers at work, killed writers, a log or an index started again, a pruned journal), and always equals a full
build."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from datalake_pipelines.core.catalog import refresh, warehouse
from datalake_pipelines.core.catalog.refresh import refresh_duckdb
from datalake_pipelines.core.ingest.hash_index import HashIndex, prune_journal
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.changes import log_identity, partition_writer, read_changes, record_write
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines_tests.core.catalog.test_query import OCR, OTHER, add_batch, lake, write_batch_files  # noqa: F401
from datalake_pipelines_tests.core.catalog.test_refresh_incremental import NEW, assert_same_as_full_build, entry

REPO = Path(__file__).resolve().parents[3]


def _writer(base: str, worker: int, count: int) -> None:
    layout = LakeLayout(Path(base))
    for i in range(count):
        record_write(layout, [PartitionRef("p", "d", "ocr", f"w{worker}-{i}")])


def test_entries_are_numbered_without_gaps_under_concurrent_writers(tmp_path):
    layout = LakeLayout(tmp_path / "lake")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(layout.base), w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    read = read_changes(layout, log_identity(layout), 0)
    assert read.complete and read.seq == 100
    assert read.partitions == {f"p/d/ocr/w{w}-{i}" for w in range(4) for i in range(25)}
    (layout.base / keys.CHANGES / "HEAD").unlink()  # a lost hint costs probes, never a number twice
    assert record_write(layout, [NEW]) == 101
    assert read_changes(layout, read.identity, 100).partitions == {NEW.key}


def test_a_refresh_after_one_write_looks_at_that_partition_only(lake, tmp_path, monkeypatch):
    for i in range(20):
        add_batch(lake, PartitionRef("acme", "many", "ocr", f"v{i}"), f"job-{i}", {"lang": ["en"]})
    refresh_duckdb(lake)
    looked: list[str] = []
    sign = refresh._signature
    monkeypatch.setattr(refresh, "_signature", lambda folder: looked.append(folder) or sign(folder))
    monkeypatch.setattr(refresh, "scan_catalog", lambda *a, **k: pytest.fail("walked the whole catalog"))
    add_batch(lake, OTHER, "job-later", {"lang": ["ko"]})
    summary = refresh_duckdb(lake)
    assert looked == [str(lake.partition_dir(OTHER))]
    assert summary["changed"] == 1 and summary["walked"] is False
    monkeypatch.undo()
    assert_same_as_full_build(lake, tmp_path)


def test_a_writer_at_work_is_watched_until_its_lock_is_free(lake, tmp_path, monkeypatch):
    rows = refresh_duckdb(lake)["rows"]
    with partition_writer(lake, NEW):
        write_batch_files(lake, NEW, "job-1", {"lang": ["en"]})
        middle = refresh_duckdb(lake)  # reads what is there, and keeps watching: the writer is not done
        assert middle["changed"] == 1 and middle["rows"] == rows + 1
        write_batch_files(lake, NEW, "job-2", {"lang": ["en", "ko"]})
    after = refresh_duckdb(lake)
    assert after["changed"] == 1 and after["rows"] == rows + 3
    looked: list[str] = []
    sign = refresh._signature
    monkeypatch.setattr(refresh, "_signature", lambda folder: looked.append(folder) or sign(folder))
    assert refresh_duckdb(lake)["changed"] == 0 and looked == []  # the lock was free: no longer watched
    monkeypatch.undo()
    assert_same_as_full_build(lake, tmp_path)


KILLED_WRITER = """
import sys, time
from pathlib import Path
from datalake_pipelines.core.lake.changes import partition_writer
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines_tests.core.catalog.test_query import write_batch_files

layout, marks = LakeLayout(Path(sys.argv[1])), Path(sys.argv[2])
ref = PartitionRef("initech", "forms", "ocr", "base")
with partition_writer(layout, ref):
    (marks / "ready").touch()
    while not (marks / "go").exists():
        time.sleep(0.05)
    write_batch_files(layout, ref, "job-killed", {"lang": ["en", "en", "en"]})
    (marks / "written").touch()
    time.sleep(600)
"""


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.05)


def test_a_writer_killed_midway_is_read_once_its_lock_is_gone(lake, tmp_path):
    refresh_duckdb(lake)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = textwrap.dedent(KILLED_WRITER)
    process = subprocess.Popen([sys.executable, "-c", code, str(lake.base), str(marks)], env=env)
    try:
        _wait_for(marks / "ready", process)
        early = refresh_duckdb(lake)  # its entry is read, nothing written yet: watched
        assert early["partitions"] == 4
        (marks / "go").touch()
        _wait_for(marks / "written", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    summary = refresh_duckdb(lake)
    assert summary["partitions"] == 5 and summary["changed"] == 1 and summary["walked"] is False
    assert_same_as_full_build(lake, tmp_path)


GARBLED = ["{not json", "[]", "null", '"x"', "{}", '{"partitions": null}', '{"partitions": "a/b/c/d"}',
           '{"partitions": [123]}', '{"partitions": ["a/b"]}', '{"partitions": ["Upper/b/c/d"]}']  # fmt: skip


@pytest.mark.parametrize(
    "damage", ["log_removed", "entry_removed", "wiped_but_its_id", "removed_then_wiped", "garbled_then_wiped", *GARBLED]
)
def test_a_log_that_cannot_say_makes_the_refresh_walk(lake, tmp_path, damage):
    """Found by review: a valid-JSON entry of the wrong shape crashed the refresh or was skipped, and a log wiped
    but for its ID restarted at 1, below the cursor, so new writes were never read."""
    refresh_duckdb(lake)
    root = lake.base / keys.CHANGES
    if damage == "wiped_but_its_id":
        for path in root.iterdir():
            if path.name != "ID":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    add_batch(lake, NEW, "job-new", {"lang": ["en"]})
    add_batch(lake, OCR, "job-more", {"lang": ["ko"]})
    newest = max(root.glob("*/*.json"))
    if damage == "log_removed":
        shutil.rmtree(root)
    elif damage == "entry_removed":
        newest.unlink()
    elif damage not in ("wiped_but_its_id", "removed_then_wiped", "garbled_then_wiped"):
        newest.write_text(damage)
    if damage.endswith("_then_wiped"):
        newest.unlink() if damage.startswith("removed") else newest.write_text("{")
        assert refresh_duckdb(lake)["walked"] is True
        for path in root.iterdir():  # second review: after a walk over a damaged entry, a wipe went unseen
            if path.name != "ID":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        add_batch(lake, OTHER, "job-after-the-wipe", {"lang": ["ja"]})
    summary = refresh_duckdb(lake)
    assert summary["walked"] is True and summary["partitions"] == 5
    assert_same_as_full_build(lake, tmp_path)
    assert refresh_duckdb(lake)["walked"] is False  # the log is trusted again from the new cursor


def test_a_restored_index_file_is_copied_whole(lake, tmp_path):
    """Found by review: an index restored from a backup keeps its identity and its journal goes back; the
    entries after the cursor were then another history's, and the copy kept rows that no longer exist."""
    index = HashIndex(lake.hash_index)
    index.add_many(entry(i) for i in range(3))
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(backup) as copy:
        index._conn.backup(copy)
    index.add_many([entry(10), entry(11)])
    index.close()
    refresh_duckdb(lake)
    source, live = sqlite3.connect(backup), sqlite3.connect(lake.hash_index)
    source.backup(live)  # as sqlite3's `.restore` puts a backup back
    source.close()
    live.close()
    index = HashIndex(lake.hash_index)
    index.add_many(entry(i) for i in range(20, 26))
    index.close()
    summary = refresh_duckdb(lake)
    assert summary["index_copied"] is True and summary["assets"] == 9
    assert_same_as_full_build(lake, tmp_path)


def test_rebuild_starts_from_scratch_and_a_dropped_view_is_made_again(lake, tmp_path):
    """Found by review: rows deleted inside catalog.duckdb by hand survived `catalog rebuild`, and a dropped
    `catalog` view was never made again (every ingest's refresh step then failed)."""
    import duckdb

    index = HashIndex(lake.hash_index)
    index.add_many(entry(i) for i in range(4))
    index.close()
    refresh_duckdb(lake)
    with duckdb.connect(str(lake.duckdb_file)) as con:
        con.execute("DELETE FROM partitions WHERE variant = 'base'")
        con.execute("DELETE FROM hash_index WHERE size < 102")
    summary = refresh_duckdb(lake, rebuild=True)
    assert summary["incremental"] is False and summary["index_copied"] is True
    assert_same_as_full_build(lake, tmp_path)
    with duckdb.connect(str(lake.duckdb_file)) as con:
        con.execute("DROP VIEW catalog")
    assert refresh_duckdb(lake)["incremental"] is False
    assert_same_as_full_build(lake, tmp_path)


def test_a_copy_left_by_a_killed_refresh_is_removed_once_old(lake):
    """Found by review: each refresh killed midway left its whole temporary copy of catalog.duckdb for good."""
    refresh_duckdb(lake)
    old, fresh = (lake.base / f".catalog.duckdb.{name}.tmp" for name in ("0123456789ab", "ba9876543210"))
    for path in (old, fresh):
        path.write_bytes(b"a copy")
    os.utime(old, (time.time() - warehouse.STALE_TEMP_SECONDS - 60,) * 2)
    refresh_duckdb(lake)
    assert not old.exists() and fresh.exists()  # a young one may be another refresh's, at work


def _journal(layout: LakeLayout) -> list[tuple]:
    with sqlite3.connect(layout.hash_index) as con:
        return con.execute("SELECT seq, sha256, op FROM index_journal ORDER BY seq").fetchall()


@pytest.mark.parametrize("seed", range(6))
def test_random_index_changes_always_equal_a_full_build(lake, tmp_path, seed):
    """Property-style: random inserts (new and repeated keys), removals, pHash fills and refreshes; after every
    refresh the copy equals a full build and only the first one copied the index whole."""
    rng = random.Random(seed)
    index = HashIndex(lake.hash_index)
    copies = []
    try:
        for _ in range(25):
            action = rng.choice(["add", "add", "remove", "phash", "refresh"])
            if action == "add":
                index.add_many(entry(rng.randrange(60), f"2024-01-{rng.randrange(1, 28):02d}T00:00:00+00:00")
                               for _ in range(rng.randrange(1, 6)))  # fmt: skip
            elif action == "remove":
                index.remove_paths({f"assets/x/{rng.randrange(60)}.jpg" for _ in range(rng.randrange(1, 4))})
            elif action == "phash":
                index.fill_phash({f"{rng.randrange(60):064x}": rng.randrange(-(2**63), 2**63)})
            else:
                copies.append(refresh_duckdb(lake)["index_copied"])
                assert_same_as_full_build(lake, tmp_path)
    finally:
        index.close()
    copies.append(refresh_duckdb(lake)["index_copied"])
    assert_same_as_full_build(lake, tmp_path)
    assert copies[0] is True and not any(copies[1:]), copies


def test_the_journal_records_only_what_really_changed(lake):
    index = HashIndex(lake.hash_index)
    try:
        assert index.add_many([entry(1), entry(2)]) == 2
        assert index.add_many([entry(1), entry(3)]) == 1  # the repeated key is ignored, and not journalled
        assert index.fill_phash({f"{2:064x}": 7, f"{9:064x}": 8}) == 1
        assert index.remove_paths({"assets/x/3.jpg"}) == 1
    finally:
        index.close()
    ops = [(sha[-1], op) for _, sha, op in _journal(lake)]
    assert ops == [("1", "i"), ("2", "i"), ("3", "i"), ("2", "u"), ("3", "d")]


@pytest.mark.parametrize("how", ["index_replaced", "journal_pruned", "journal_emptied"])
def test_an_index_the_cursor_cannot_follow_is_copied_whole(lake, tmp_path, how):
    index = HashIndex(lake.hash_index)
    index.add_many(entry(i) for i in range(5))
    index.close()
    refresh_duckdb(lake)
    if how == "index_replaced":  # restored from elsewhere: another identity, the same sequence numbers
        lake.hash_index.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{lake.hash_index}{suffix}").unlink(missing_ok=True)
        index = HashIndex(lake.hash_index)
        index.add_many(entry(i) for i in range(10, 16))
    else:
        index = HashIndex(lake.hash_index)
        index.add_many(entry(i) for i in range(5, 12))
        with index._conn as conn:
            assert prune_journal(conn, keep=0 if how == "journal_emptied" else 2) > 0
    index.close()
    summary = refresh_duckdb(lake)
    assert summary["index_copied"] is True
    assert summary["assets"] == (6 if how == "index_replaced" else 12)
    assert_same_as_full_build(lake, tmp_path)


def test_an_index_from_before_the_journal_is_read_whole_until_a_writer_opens_it(lake, tmp_path):
    index = HashIndex(lake.hash_index)
    index.add_many(entry(i) for i in range(4))
    index.close()
    with sqlite3.connect(lake.hash_index) as con:  # as an older version left it
        for name in ("assets_journal_insert", "assets_journal_update", "assets_journal_delete"):
            con.execute(f"DROP TRIGGER {name}")
        con.execute("DROP TABLE index_journal")
        con.execute("DROP TABLE index_identity")
    assert refresh_duckdb(lake)["index_copied"] is True
    assert refresh_duckdb(lake)["index_copied"] is True  # still no journal: nothing to follow
    index = HashIndex(lake.hash_index)  # a writer's open adds the journal
    index.add_many([entry(9)])
    index.close()
    assert refresh_duckdb(lake)["index_copied"] is True  # a new identity: one whole copy
    index = HashIndex(lake.hash_index)
    index.add_many([entry(10)])
    index.close()
    summary = refresh_duckdb(lake)
    assert summary["index_copied"] is False and summary["assets"] == 6
    assert_same_as_full_build(lake, tmp_path)


def test_old_entries_are_pruned_by_folder_and_a_reader_behind_them_walks(lake, tmp_path, monkeypatch):
    from datalake_pipelines.core.lake import changes

    monkeypatch.setattr(changes, "PER_FOLDER", 3)
    layout = LakeLayout(tmp_path / "small")
    seqs = [record_write(layout, [NEW]) for _ in range(7)]  # folders 0 (1-2), 1 (3-5), 2 (6-7)
    root = layout.base / keys.CHANGES
    stale = root / ".tmp-left-by-a-killed-writer"
    stale.write_text("{}")
    old = time.time() - changes.KEEP_SECONDS - 60
    for folder in [*sorted(p for p in root.iterdir() if p.name.isdigit()), stale]:
        os.utime(folder, (old, old))
    assert changes.prune_changes(layout, read_up_to=6) == 2  # folder 2 holds 7, not read yet: kept
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == ["00000002"]
    assert not stale.exists()
    identity = log_identity(layout)
    assert read_changes(layout, identity, 6).partitions == {NEW.key}
    assert read_changes(layout, identity, 2).complete is False  # its next entries are gone: walk
    assert seqs == list(range(1, 8))

    refresh_duckdb(lake)
    for i in range(6):  # the lake's own log: a refresh prunes the old folders it has read past
        add_batch(lake, NEW, f"job-{i}", {"lang": ["en"]})
    lake_root = lake.base / keys.CHANGES
    for folder in (p for p in lake_root.iterdir() if p.name.isdigit()):
        os.utime(folder, (old, old))
    before = {p.name for p in lake_root.iterdir() if p.name.isdigit()}
    assert refresh_duckdb(lake)["walked"] is False
    after = {p.name for p in lake_root.iterdir() if p.name.isdigit()}
    assert after < before and max(before) in after
    add_batch(lake, OCR, "job-later", {"lang": ["ko"]})
    assert refresh_duckdb(lake)["walked"] is False  # its cursor was past what went
    assert_same_as_full_build(lake, tmp_path)


def test_an_index_without_a_journal_takes_writes(tmp_path):
    """Found by benchmarks/index_journal.py: add_many pruned a journal that an index opened with journal=False
    (the S3 segment cache, a run's own index) does not have, and failed."""
    index = HashIndex(tmp_path / "cache.sqlite", journal=False)
    try:
        assert index.add_many(entry(i) for i in range(3)) == 3
        assert index.remove_paths({entry(0).path}) == 1
    finally:
        index.close()
    with sqlite3.connect(tmp_path / "cache.sqlite") as con:
        assert not con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'index_%'").fetchall()


@pytest.mark.parametrize("hint", ["removed", "garbled", "lowered"])
def test_a_lost_hint_after_pruning_never_makes_writers_go_below_the_cursor(lake, tmp_path, monkeypatch, hint):
    """Third review: with the old folders pruned and HEAD lost or lowered, writers started again at 1, below the
    refresh's cursor, whose own entry still existed: every later refresh read nothing."""
    from datalake_pipelines.core.lake import changes

    monkeypatch.setattr(changes, "PER_FOLDER", 3)
    refresh_duckdb(lake)
    for i in range(4):
        add_batch(lake, OCR, f"job-{i}", {"lang": ["en"]})
    assert refresh_duckdb(lake)["walked"] is False
    root = lake.base / keys.CHANGES
    shutil.rmtree(root / "00000000")  # as the two-day pruning removes a folder read past
    if hint == "removed":
        (root / "HEAD").unlink()
    else:
        (root / "HEAD").write_text("junk" if hint == "garbled" else "1")
    add_batch(lake, NEW, "job-new", {"lang": ["en"]})
    summary = refresh_duckdb(lake)
    assert summary["partitions"] == 5
    assert_same_as_full_build(lake, tmp_path)
    add_batch(lake, OTHER, "job-later", {"lang": ["ko"]})
    assert refresh_duckdb(lake)["changed"] == 1
    assert_same_as_full_build(lake, tmp_path)
