"""The PostgreSQL hash index's change journal (``pg_journal.py``): a copy kept by applying its reads always equals
the index, across out-of-order commits, concurrent writers, pruning and a recreated schema."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid

import psycopg2
import pytest

from datalake_pipelines.core.ingest import pg_journal_tables
from datalake_pipelines.core.ingest.hash_index import COLUMNS, ROW_OF
from datalake_pipelines.core.ingest.index_changes import index_changes
from datalake_pipelines.core.ingest.pg_index import PgHashIndex
from datalake_pipelines.core.ingest.pg_journal import read_pg_changes
from datalake_pipelines.core.ingest.pg_journal_tables import prune_journal
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines_tests.core.ingest.test_index_backends import entry


@pytest.fixture
def schema() -> str:
    return f"lake_j{uuid.uuid4().hex[:16]}"


@pytest.fixture
def index(pg_url, schema):
    opened = PgHashIndex(pg_url, schema)
    yield opened
    opened.drop()


@pytest.fixture
def admin(pg_url):
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    yield conn
    conn.close()


def sql(conn, text: str, schema: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(text.replace("{s}", schema))
        return cur.fetchall() if cur.description else []


class Copy:
    """What a catalog refresh keeps: rows by key, updated by applying reads the way the refresh does (delete
    ``removed``, then a plain insert of ``rows``: a key inserted twice would be a duplicate row)."""

    def __init__(self, index: PgHashIndex):
        self.index, self.rows, self.cursor = index, {}, None

    def read(self, batch_size: int = 7, check_snapshot: bool = False) -> dict:
        with read_pg_changes(self.index, self.cursor, batch_size) as changes:
            batches = list(changes.rows)
            assert all(0 < len(b) <= batch_size for b in batches)
            rows = [r for b in batches for r in b]
            assert [r[0] for r in rows] == sorted({r[0] for r in rows})  # key order, each key once
            if changes.full:
                self.rows.clear()
            for key in changes.removed:
                self.rows.pop(key, None)
            for row in rows:
                assert row[0] not in self.rows, "a key the copy holds came back without being removed"
                self.rows[row[0]] = row
            if check_snapshot:  # the table as the read's own snapshot sees it (the same connection)
                with self.index.conn().cursor() as cur:
                    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {self.index.schema}.assets")
                    assert self.rows == {r[0]: r for r in cur.fetchall()}
            self.cursor = json.loads(json.dumps(changes.cursor))  # JSON-able: kept in catalog.duckdb
            return {"full": changes.full, "rows": [r[0] for r in rows], "removed": changes.removed}

    def matches(self) -> bool:
        return self.rows == {r[0]: r for b in self.index.iter_rows(batch_size=1000) for r in b}


def sha(n: int) -> str:
    return entry(n).sha256


def test_a_first_full_read_then_only_what_changed(index):
    copy = Copy(index)
    index.add_many([entry(i) for i in range(10)])
    first = copy.read(batch_size=4)
    assert first == {"full": True, "rows": [sha(i) for i in range(10)], "removed": []}
    assert set(copy.cursor) == {"identity", "snapshot"}
    index.add_many([entry(20), entry(3)])  # entry 3 is there already: not a change
    index.fill_phash({sha(1): 77, sha(4): 5})
    index.fill_phash({sha(4): 6})  # filled already: no change
    index.remove_paths([entry(2).path])
    index.remove_paths(["assets/never.jpg"])
    assert copy.read() == {"full": False, "rows": [sha(1), sha(4), sha(20)], "removed": [sha(1), sha(2), sha(4)]}
    assert copy.rows[sha(1)][COLUMNS.index("phash")] == 77 and copy.matches()
    assert copy.read() == {"full": False, "rows": [], "removed": []}


def test_random_writes_and_reads_keep_the_copy_equal(index):
    rng = random.Random(7)
    copy = Copy(index)
    for step in range(150):
        keys = rng.sample(range(40), rng.randint(1, 8))
        action = rng.choice(["add", "add", "fill", "remove"])
        if action == "add":
            index.add_many([entry(k) for k in keys])
        elif action == "fill":
            index.fill_phash({sha(k): rng.randint(-5, 5) for k in keys})
        else:
            index.remove_paths([entry(k).path for k in keys])
        if rng.random() < 0.3:
            copy.read(batch_size=rng.randint(1, 9))
            assert copy.matches(), step
    copy.read()
    assert copy.matches()


def test_reads_during_concurrent_writers_see_exactly_their_snapshot(pg_url, index):
    """Two hosts write at random while a reader reads: after each read the copy equals the table as the read's
    snapshot saw it (out-of-order commits happen here for real)."""
    writers = [PgHashIndex(pg_url, index.schema, create=False) for _ in range(2)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(ix: PgHashIndex, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                action = rng.choice(["add", "add", "fill", "remove"])
                if action == "add":  # both hosts insert any key: ON CONFLICT races
                    ix.add_many([entry(k) for k in rng.sample(range(300), 20)])
                    continue
                # each host updates and deletes its own keys: remove_paths and fill_phash lock rows in no set
                # order, so two hosts changing the same rows at once could deadlock (a writer's matter)
                keys = rng.sample(range(seed, 300, 2), 20)
                if action == "fill":
                    ix.fill_phash({sha(k): rng.randint(0, 9) for k in keys})
                else:
                    ix.remove_paths([entry(k).path for k in keys])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(ix, n)) for n, ix in enumerate(writers)]
    for t in threads:
        t.start()
    copy = Copy(index)
    reads = []
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            reads.append(copy.read(batch_size=50, check_snapshot=True))
    finally:
        stop.set()
        for t in threads:
            t.join()
        for ix in writers:
            ix.close()
    assert not errors, errors
    assert len(reads) > 5 and not any(r["full"] for r in reads[1:])
    copy.read()
    assert copy.matches()


def test_a_commit_that_lands_after_a_later_one_is_not_missed(index, pg_url, admin):
    """Transaction A takes its journal seq first and commits last: a read between B's commit and A's sees B only,
    the next read brings A, and nothing is delivered twice."""
    copy = Copy(index)
    copy.read()
    a = psycopg2.connect(pg_url)
    try:
        with a.cursor() as cur:
            marks = ", ".join(["%s"] * len(COLUMNS))
            cur.execute(f"INSERT INTO {index.schema}.assets ({', '.join(COLUMNS)}) VALUES ({marks})", ROW_OF(entry(1)))
            cur.execute(f"SELECT seq FROM {index.schema}.index_journal")
            (seq_a,) = cur.fetchone()
        index.add_many([entry(2)])
        (seq_b,) = sql(admin, "SELECT seq FROM {s}.index_journal", index.schema)[0]
        assert seq_a < seq_b  # the out-of-order case for real
        assert copy.read() == {"full": False, "rows": [sha(2)], "removed": []}
        a.commit()
    finally:
        a.close()
    assert copy.read() == {"full": False, "rows": [sha(1)], "removed": []}
    assert copy.matches()
    assert copy.read() == {"full": False, "rows": [], "removed": []}


def test_a_recreated_schema_gives_a_full_read(index, pg_url, admin):
    copy = Copy(index)
    index.add_many([entry(1), entry(2)])
    copy.read()
    sql(admin, "DROP SCHEMA {s} CASCADE", index.schema)
    index.close()
    again = PgHashIndex(pg_url, index.schema)  # same name, new index: its journal starts afresh
    again.add_many([entry(1), entry(3)])
    copy.index = again
    assert copy.read()["full"] and copy.matches()
    again.close()


def test_a_schema_from_before_the_journal_gets_it_on_open(index, pg_url, admin):
    index.add_many([entry(1), entry(2)])
    index.close()
    sql(admin, "DROP TABLE {s}.index_journal, {s}.index_journal_state", index.schema)
    sql(admin, "DROP FUNCTION {s}.journal_assets() CASCADE", index.schema)  # its triggers too
    reopened = PgHashIndex(pg_url, index.schema, create=False)
    copy = Copy(reopened)
    assert copy.read() == {"full": True, "rows": [sha(1), sha(2)], "removed": []}
    reopened.remove_paths([entry(1).path])
    assert copy.read() == {"full": False, "rows": [], "removed": [sha(1)]}
    assert copy.matches()


def test_pruning_past_a_cursor_gives_a_full_read(index, monkeypatch, admin):
    monkeypatch.setattr(pg_journal_tables, "KEEP", 20)
    old, recent = Copy(index), Copy(index)
    old.read()
    for i in range(0, 60, 3):
        index.add_many([entry(i), entry(i + 1), entry(i + 2)])
        recent.read()
        assert sql(admin, "SELECT count(*) FROM {s}.index_journal", index.schema)[0][0] <= 20 + 2 + 3
    assert old.read()["full"] and old.matches()  # its entries are gone
    assert not recent.read()["full"]  # it had seen every pruned entry
    # an emptied journal cannot pass for "nothing changed"
    index.add_many([entry(100)])
    old.read()  # saw entry 100; recent did not
    conn = index.conn()
    with conn, conn.cursor() as cur:
        assert prune_journal(cur, index, keep=0) > 0
    assert sql(admin, "SELECT count(*) FROM {s}.index_journal", index.schema) == [(0,)]
    assert recent.read()["full"] and recent.matches()
    assert old.read() == {"full": False, "rows": [], "removed": []}  # it had seen every pruned entry


def test_foreign_cursors_and_truncate_give_a_full_read(index, admin):
    index.add_many([entry(1)])
    copy = Copy(index)
    copy.read()
    good = dict(copy.cursor)
    xmin, xmax = (int(n) for n in good["snapshot"].split(":")[:2])
    ahead = f"{xmin + 10**6}:{xmax + 10**6}:"  # from a server whose transaction ids went further (then restored)
    for cursor in (
        {"seq": 12},
        {**good, "snapshot": "not one"},
        {**good, "identity": "x"},
        {**good, "snapshot": ahead},
    ):
        copy.cursor = cursor
        assert copy.read()["full"]
    sql(admin, "TRUNCATE {s}.assets", index.schema)
    assert copy.read() == {"full": True, "rows": [], "removed": []}


def test_two_hosts_inserting_one_key_journal_one_insert(pg_url, index, admin):
    hosts = [PgHashIndex(pg_url, index.schema, create=False) for _ in range(2)]
    counts: list[int] = []
    start = threading.Barrier(2)

    def write(ix: PgHashIndex) -> None:
        start.wait()
        counts.append(sum(ix.add_many([entry(i) for i in range(k, k + 20)]) for k in range(0, 400, 20)))

    threads = [threading.Thread(target=write, args=(ix,)) for ix in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 400
    journal = sql(admin, "SELECT sha256, op FROM {s}.index_journal", index.schema)
    assert sorted(journal) == sorted((sha(i), "i") for i in range(400))
    for ix in hosts:
        ix.close()


def test_index_changes_reads_the_postgres_journal(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    layout = LakeLayout(tmp_path / "lake")
    with index_changes(layout, None, 100) as changes:
        assert changes is not None and changes.full and list(changes.rows) == []
        cursor = changes.cursor
    from datalake_pipelines.core.ingest.index_store import open_hash_index

    index = open_hash_index(layout)
    index.add_many([entry(5)])
    with index_changes(layout, cursor, 100) as changes:
        assert changes is not None and not changes.full
        assert [r[0] for b in changes.rows for r in b] == [sha(5)] and changes.removed == []
    index.drop()


@pytest.mark.parametrize("seed", range(3))
def test_a_refresh_over_a_postgres_index_follows_its_journal(tmp_path, monkeypatch, pg_url, seed):
    """catalog.duckdb's hash_index over a PostgreSQL index: random inserts, removals and pHash fills between
    refreshes; every refresh equals a full build, and only the first copies the index whole."""
    from datalake_pipelines.core.catalog.refresh import refresh_duckdb
    from datalake_pipelines.core.ingest.index_store import open_hash_index
    from datalake_pipelines_tests.core.catalog.test_refresh_incremental import assert_same_as_full_build

    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    layout = LakeLayout(tmp_path / "lake")
    rng = random.Random(seed)
    copies = []
    index = open_hash_index(layout)
    try:
        for _ in range(20):
            action = rng.choice(["add", "add", "remove", "phash", "refresh"])
            if action == "add":
                index.add_many(entry(rng.randrange(40)) for _ in range(rng.randrange(1, 5)))
            elif action == "remove":
                index.remove_paths({entry(rng.randrange(40)).path})
            elif action == "phash":
                index.fill_phash({entry(rng.randrange(40)).sha256: rng.randrange(-(2**63), 2**63)})
            else:
                copies.append(refresh_duckdb(layout)["index_copied"])
                assert_same_as_full_build(layout, tmp_path)
        copies.append(refresh_duckdb(layout)["index_copied"])
        assert_same_as_full_build(layout, tmp_path)
    finally:
        index.drop()
    assert copies[0] is True and not any(copies[1:]), copies
