"""The row-hash index: which ``row_hash`` values each partition holds, so a batch dedups in O(batch).

Two tables in the hash index's SQLite file (the lake's ``index/hash_index.sqlite``, or an S3 lake's cache):

* ``row_hashes (pid, h, part)``, primary key ``(pid, h)``: one row per distinct row hash of a partition (``pid``
  numbers it in ``row_partitions``; ``h`` is the hash's 32 bytes), with the part file it was read from;
* ``row_parts (pid, part, signature)``: the part files whose hashes are in ``row_hashes``, each with the
  signature (``size:mtime_ns`` locally, ``size-etag`` on S3) of the version that was read.

The part files are the truth and the index only a cache of them. Crash consistency rests on one order and one
check. The order: a part's hashes are recorded only after the part is committed (renamed into place locally,
uploaded on S3), together with its ``row_parts`` row in one transaction. The check, :meth:`RowIndex.reconcile`,
runs before every lookup, under the partition's lock, against the listing of the partition's part files:

* a recorded part that is gone or has another signature (compaction, a rewrite, a deletion, or hashes recorded
  for a part that never got committed) makes the partition's entries untrusted: they are dropped and rebuilt
  from the part files present. Dropping per part would be wrong when one hash sits in two parts;
* a part on disk that is not recorded (a crash between its commit and its recording, or a lake older than this
  index) has its ``row_hash`` column read and recorded.

So an entry is only ever served for a hash that a committed part of the partition holds: an index can make a
batch re-add a row (never silently, and only after a crash), never drop one. The one-time cost on an old lake is
reading each partition's ``row_hash`` columns once, on the partition's first batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from ..catalog.parts import ROW_HASH, partition_files, read_column
from ..lake.layout import LakeLayout, PartitionRef
from .hash_index import HashIndex

ROW_TABLES = (
    "CREATE TABLE IF NOT EXISTS row_partitions (id INTEGER PRIMARY KEY, partition TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS row_parts (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, part TEXT NOT NULL,"
    " signature TEXT NOT NULL, UNIQUE (pid, part))",
    "CREATE TABLE IF NOT EXISTS row_hashes (pid INTEGER NOT NULL, h BLOB NOT NULL, part INTEGER NOT NULL,"
    " PRIMARY KEY (pid, h)) WITHOUT ROWID",
)
LOOKUP_CHUNK = 500  # hashes per ``IN (...)`` query: below SQLite's variable limit, few round trips
CACHE_KIB = 65_536  # SQLite page cache per connection: the upper levels of a partition's B-tree stay in memory
_PAD = b"\x00" * 33


def pack(row_hash: str) -> bytes:
    """A row hash as its key: the 32 bytes of a canonical SHA-256 hex digest (half the index of the text), any
    other string padded past 32 bytes so that two strings never share a key."""
    if len(row_hash) == 64:
        try:
            raw = bytes.fromhex(row_hash)
        except ValueError:
            raw = b""
        if raw.hex() == row_hash:
            return raw
    return _PAD + row_hash.encode()


def unpack(key: bytes) -> str:
    return key.hex() if len(key) == 32 else key[len(_PAD) :].decode()


class RowIndex:
    """The row-hash tables of one SQLite hash index (shares ``index``'s per-thread connection). Partitions and
    parts are numbered (``row_partitions``, ``row_parts``) so each entry is a few dozen bytes. Its PostgreSQL twin
    is ``pg_rows.PgRowIndex`` (same methods, :meth:`reconcile` shared)."""

    def __init__(self, index: HashIndex):
        self.index = index
        with index._conn as conn:
            for sql in ROW_TABLES:
                conn.execute(sql)

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = self.index._conn
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    def _pid(self, conn: sqlite3.Connection, partition: str, create: bool = False) -> int | None:
        if create:
            conn.execute("INSERT OR IGNORE INTO row_partitions (partition) VALUES (?)", (partition,))
        row = conn.execute("SELECT id FROM row_partitions WHERE partition = ?", (partition,)).fetchone()
        return None if row is None else int(row[0])

    def parts(self, partition: str) -> dict[str, str]:
        """Recorded part name -> signature for ``partition`` (a ``provider/dataset/task/variant`` key)."""
        sql = "SELECT part, signature FROM row_parts JOIN row_partitions p ON p.id = pid WHERE p.partition = ?"
        return dict(self._conn.execute(sql, (partition,)))

    def reconcile(
        self, partition: str, current: dict[str, str], hashes_of: Callable[[str], Iterable[str | None]]
    ) -> dict[str, int]:
        """Make the partition's entries those of the part files ``current`` (name -> signature); ``hashes_of(name)``
        returns a part's row hashes (``None`` values skipped). Returns ``{"rebuilt": 0|1, "parts_read": n}``.
        Call it under the partition's lock (one writer per partition)."""
        recorded = self.parts(partition)
        stale = any(current.get(name) != sig for name, sig in recorded.items())
        if stale:
            self.forget(partition)
            recorded = {}
        todo = sorted(name for name in current if name not in recorded)
        for name in todo:
            self.record(partition, name, current[name], hashes_of(name))
        return {"rebuilt": int(stale), "parts_read": len(todo)}

    def record(self, partition: str, part: str, signature: str, hashes: Iterable[str | None]) -> int:
        """Record a committed part's hashes and its signature in one transaction; return how many were new."""
        keys = sorted({pack(h) for h in hashes if h})  # in key order: a bulk build appends to the B-tree
        conn = self._conn
        with conn:
            pid = self._pid(conn, partition, create=True)
            conn.execute(
                "INSERT INTO row_parts (pid, part, signature) VALUES (?, ?, ?)"
                " ON CONFLICT (pid, part) DO UPDATE SET signature = excluded.signature",
                (pid, part, signature),
            )
            part_id = conn.execute("SELECT id FROM row_parts WHERE pid = ? AND part = ?", (pid, part)).fetchone()[0]
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO row_hashes (pid, h, part) VALUES (?, ?, ?)", [(pid, k, part_id) for k in keys]
            )
            return conn.total_changes - before

    def resign(self, partition: str, part: str, signature: str) -> None:
        """Record a new signature for a part rewritten with the same rows (``conform_parts``'s type widening)."""
        with self._conn as conn:
            pid = self._pid(conn, partition)
            conn.execute("UPDATE row_parts SET signature = ? WHERE pid = ? AND part = ?", (signature, pid, part))

    def forget(self, partition: str) -> None:
        """Drop every entry and recorded part of ``partition`` (rebuilt from its part files on next use)."""
        with self._conn as conn:
            pid = self._pid(conn, partition)
            conn.execute("DELETE FROM row_hashes WHERE pid = ?", (pid,))
            conn.execute("DELETE FROM row_parts WHERE pid = ?", (pid,))

    def seen(self, partition: str, hashes: list[str], exclude_part: str | None = None) -> set[str]:
        """The hashes among ``hashes`` the partition already holds, one query per :data:`LOOKUP_CHUNK` hashes.

        ``exclude_part`` (a part name) leaves out the hashes read from that part: the batch's own part file left by
        an interrupted run of the same job, which this run replaces."""
        conn = self._conn
        pid = self._pid(conn, partition)
        if pid is None:
            return set()
        row = conn.execute("SELECT id FROM row_parts WHERE pid = ? AND part = ?", (pid, exclude_part or "")).fetchone()
        excluded = -1 if row is None else row[0]
        found: set[str] = set()
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            chunk = [pack(h) for h in hashes[start : start + LOOKUP_CHUNK]]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT h FROM row_hashes WHERE pid = ? AND h IN ({marks}) AND part != ?"
            found.update(unpack(r[0]) for r in conn.execute(sql, (pid, *chunk, excluded)))
        return found

    def hashes(self, partition: str) -> set[str]:
        """Every row hash recorded for ``partition`` (for ``catalog verify``; O(partition))."""
        sql = "SELECT h FROM row_hashes JOIN row_partitions p ON p.id = pid WHERE p.partition = ?"
        return {unpack(r[0]) for r in self._conn.execute(sql, (partition,))}


def index_problems(
    rows: RowIndex, partition: str, current: dict[str, str], hashes_of: Callable[[str], Iterable[str | None]]
) -> list[str]:
    """What ``catalog verify`` reports for one partition: where the row index disagrees with the part files.

    Only a partition whose recorded parts are exactly the parts present (same signatures) is compared: any other
    state is rebuilt by the next batch before a lookup (:meth:`RowIndex.reconcile`), so it cannot drop a row.
    A hash in the index but in no part would drop rows; a hash in a part but not in the index would re-add them."""
    recorded = rows.parts(partition)
    if not recorded or recorded != current:
        return []
    expected: set[str] = set()
    for name in sorted(current):
        expected.update(h for h in hashes_of(name) if h)
    indexed = rows.hashes(partition)
    problems = []
    if extra := indexed - expected:
        problems.append(
            f"row index: {len(extra)} row hash(es) of {partition} are in the index but in no part file "
            f"(e.g. {sorted(extra)[0]}): batches holding those rows would be dropped as duplicates"
        )
    if absent := expected - indexed:
        problems.append(
            f"row index: {len(absent)} row hash(es) of {partition}'s part files are missing from the index "
            f"(e.g. {sorted(absent)[0]}): those rows would be added again"
        )
    return problems


def file_signature(path: Path) -> str:
    """A local part file's version: ``size:mtime_ns`` (a rewrite by rename changes it)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class RowDedup(Protocol):
    """What :class:`~.processing.BatchProcessor` asks of a row index, per partition, under the partition's lock."""

    def prepare(self, ref: PartitionRef) -> object:
        """Bring the partition's entries in line with its part files (before the first lookup)."""

    def seen(self, ref: PartitionRef, hashes: list[str], exclude_part: str | None) -> set[str]:
        """The hashes among ``hashes`` the partition holds (leaving out those of the part ``exclude_part``)."""
        ...

    def committed(self, ref: PartitionRef, rewritten: list[Path]) -> None:
        """After the batch's part was committed and ``rewritten`` parts conformed: record them."""


class LocalRowDedup:
    """The row index of a local lake (``index/hash_index.sqlite``, or PostgreSQL: ``rows`` from
    ``pg_rows.open_row_index``), checked against the partition's part files."""

    def __init__(self, layout: LakeLayout, rows: RowIndex):
        self.layout = layout
        self.rows = rows

    def current(self, ref: PartitionRef) -> dict[str, str]:
        return {p.name: file_signature(p) for p in partition_files(self.layout, ref)}

    def _hashes_of(self, ref: PartitionRef) -> Callable[[str], list[str | None]]:
        folder = self.layout.partition_dir(ref)
        return lambda name: read_column(folder / name, ROW_HASH)

    def prepare(self, ref: PartitionRef) -> dict[str, int]:
        return self.rows.reconcile(ref.key, self.current(ref), self._hashes_of(ref))

    def seen(self, ref: PartitionRef, hashes: list[str], exclude_part: str | None) -> set[str]:
        return self.rows.seen(ref.key, hashes, exclude_part)

    def committed(self, ref: PartitionRef, rewritten: list[Path]) -> None:
        # conformed parts keep their rows (only types widened): a new signature, not a rebuild
        for path in rewritten:
            self.rows.resign(ref.key, path.name, file_signature(path))
        # reads only the new part (a part replaced by a rerun of its job changes signature: a rebuild)
        self.prepare(ref)

    def rebuild(self, ref: PartitionRef) -> dict[str, int]:
        """Entries of the partition rebuilt from its part files (after a compaction dropped rows)."""
        self.rows.forget(ref.key)
        return self.rows.reconcile(ref.key, self.current(ref), self._hashes_of(ref))

    def problems(self, ref: PartitionRef) -> list[str]:
        return index_problems(self.rows, ref.key, self.current(ref), self._hashes_of(ref))


class BatchSeen:
    """The row hashes a batch must skip: the partition's (looked up in the row index, one query per chunk of
    hashes) and the batch's own earlier rows (in memory: the batch's part is not committed yet)."""

    def __init__(self, rows: RowDedup, ref: PartitionRef, own_part: str):
        self.rows, self.ref, self.own_part = rows, ref, own_part
        self.batch: set[str] = set()

    def lookup(self, hashes: list[str]) -> set[str]:
        asked = [h for h in hashes if h and h not in self.batch]
        return (self.batch & set(hashes)) | self.rows.seen(self.ref, asked, self.own_part)

    def add(self, h: str) -> None:
        self.batch.add(h)
