"""The persistent hash index: one SQLite row per distinct content hash in the lake.

Design: ``index/hash_index.sqlite`` (WAL mode), primary key = SHA-256 of the original bytes, with the
stored path, size and image facts. Lookups are B-tree probes (no directory scan); a dedup hit needs no
Pillow decode because the facts come from the index. At 10M images the file is about 2 GB and a probe
stays in the tens of microseconds. Writers are short transactions (one per record batch); readers never
block writers in WAL mode. WAL needs one host's shared memory: an index on a network file system is refused
(``mounts.py``); several hosts keep the index in PostgreSQL instead (``pg_index.py``, ``DATALAKE_INDEX_URL``).

Image geometry: ``width``/``height`` are the displayed size (after the EXIF orientation, see
``images.displayed_size``) and ``orientation`` is the EXIF tag value 1-8, ``0`` for an image without one.
``orientation`` NULL marks a row written before the column existed (its width/height are the stored size):
:meth:`IndexEntry.needs_geometry` is then true and the caller recomputes the facts from the bytes.
``phash`` is the image's 64-bit perceptual hash as a signed int64 (``neardup/phash.py``), NULL when not computed;
:meth:`HashIndex.fill_phash` records it later, once per content. An old index file gets the optional columns on
open (``ALTER TABLE ... ADD COLUMN``).
"""

from __future__ import annotations

import operator
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ...settings import INDEX_URL_ENV
from ...settings import load as load_settings
from .mounts import refuse_network_fs

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    sha256 TEXT PRIMARY KEY,
    stored_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind TEXT NOT NULL,
    format TEXT,
    width INTEGER,
    height INTEGER,
    mode TEXT,
    provider TEXT NOT NULL,
    dataset TEXT NOT NULL,
    first_batch_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    orientation INTEGER,
    phash INTEGER
) WITHOUT ROWID
"""
COLUMNS = (
    "sha256",
    "stored_sha256",
    "path",
    "size",
    "kind",
    "format",
    "width",
    "height",
    "mode",
    "provider",
    "dataset",
    "first_batch_id",
    "created_at",
    "orientation",
    "phash",
)
LAKE_REMEDY = (
    f'set {INDEX_URL_ENV}=postgresql://... to keep the lake\'s hash index in PostgreSQL (README, "Many hosts")'
)
ROW_OF = operator.attrgetter(*COLUMNS)  # an entry as a row tuple, in C (0.3 us against 1 us for a getattr loop)
INTEGER_COLUMNS = frozenset(("size", "width", "height", "orientation", "phash"))
# Columns a hash-index segment or file written by an older version may lack (read as NULL).
OPTIONAL_COLUMNS = frozenset(("orientation", "phash"))

# The journal of changes a catalog refresh reads (index_journal.py): filled by triggers, so no writer escapes it.
# No writer of a lake's index uses INSERT OR REPLACE: its implicit delete fires no trigger (recursive_triggers off).
KEEP = 1_000_000
JOURNAL_DDL = (
    "CREATE TABLE IF NOT EXISTS index_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, "
    "op TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS index_identity (id TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS assets_journal_insert AFTER INSERT ON assets "
    "BEGIN INSERT INTO index_journal (sha256, op) VALUES (NEW.sha256, 'i'); END",
    # an update that changed the key itself leaves the old key behind: both are journalled
    "CREATE TRIGGER IF NOT EXISTS assets_journal_update AFTER UPDATE ON assets BEGIN "
    "INSERT INTO index_journal (sha256, op) SELECT OLD.sha256, 'd' WHERE OLD.sha256 != NEW.sha256; "
    "INSERT INTO index_journal (sha256, op) VALUES (NEW.sha256, 'u'); END",
    "CREATE TRIGGER IF NOT EXISTS assets_journal_delete AFTER DELETE ON assets "
    "BEGIN INSERT INTO index_journal (sha256, op) VALUES (OLD.sha256, 'd'); END",
)


def ensure_journal(conn: sqlite3.Connection) -> None:
    """Create the journal, its triggers and the index's identity when missing (an index from before the journal
    gets them on its first open for writing). Reads only, when they are there: opening takes no write lock."""
    names = {"index_journal", "index_identity", *(f"assets_journal_{op}" for op in ("insert", "update", "delete"))}
    have = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    if names <= have and conn.execute("SELECT 1 FROM index_identity").fetchone():
        return
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # one creator at a time: the identity row is written once
        for statement in JOURNAL_DDL:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO index_identity SELECT ? WHERE NOT EXISTS (SELECT 1 FROM index_identity)", (uuid.uuid4().hex,)
        )


def prune_journal(conn: sqlite3.Connection, keep: int = KEEP) -> int:
    """Delete the journal's entries older than the newest ``keep`` (inside the caller's transaction); a rowid
    range, so its cost follows what goes, not the journal. Returns how many went."""
    low, high = conn.execute("SELECT min(seq), max(seq) FROM index_journal").fetchone()
    if low is None or high - low < keep + keep // 10:  # in slices of a tenth: not a delete per write
        return 0
    return conn.execute("DELETE FROM index_journal WHERE seq <= ?", (high - keep,)).rowcount


@dataclass(frozen=True)
class IndexEntry:
    sha256: str
    stored_sha256: str
    path: str
    size: int
    kind: str
    format: str | None
    width: int | None
    height: int | None
    mode: str | None
    provider: str
    dataset: str
    first_batch_id: str
    created_at: str
    orientation: int | None = None
    phash: int | None = None  # 64-bit perceptual hash as signed int64 (core/neardup/phash.py); NULL: not computed

    @property
    def needs_geometry(self) -> bool:
        """An image entry from before orientation was recorded: its width/height may be the stored size."""
        return self.kind == "image" and self.orientation is None


class HashIndex:
    """Thread-safe access to the hash index: one connection per thread, one writer at a time."""

    def __init__(self, path: Path, remedy: str = LAKE_REMEDY, journal: bool = True):
        """``remedy``: what the error for an index on a network file system tells the user to do. ``journal``:
        keep the journal a catalog refresh reads (off for a cache no refresh reads: ``s3_index.SegmentCache``)."""
        self.path = path
        self._local = threading.local()
        refuse_network_fs(path, load_settings().mount_table, remedy)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(assets)")}
            for column in sorted(OPTIONAL_COLUMNS - have):  # an index written before the column existed
                try:
                    conn.execute(f"ALTER TABLE assets ADD COLUMN {column} INTEGER")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
        self.journal = journal
        if journal:
            ensure_journal(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def get(self, sha256: str) -> IndexEntry | None:
        row = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM assets WHERE sha256 = ?", (sha256,)).fetchone()
        return IndexEntry(*row) if row else None

    def get_many(self, hashes: list[str]) -> dict[str, IndexEntry]:
        """Entries for the known hashes among ``hashes`` (one query per 500 hashes)."""
        found: dict[str, IndexEntry] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {', '.join(COLUMNS)} FROM assets WHERE sha256 IN ({marks})"
            for row in self._conn.execute(sql, chunk):
                found[row[0]] = IndexEntry(*row)
        return found

    def add_many(self, entries: Iterable[IndexEntry]) -> int:
        """Insert entries not yet present; return how many were new."""
        rows = list(map(ROW_OF, entries))
        if not rows:
            return 0
        conn = self._conn
        with conn:
            # rowcount, not total_changes: the journal's trigger inserts count in the latter
            added = conn.executemany(
                f"INSERT OR IGNORE INTO assets ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                rows,
            ).rowcount
            if self.journal:
                prune_journal(conn)
            return added

    def fill_phash(self, values: dict[str, int]) -> int:
        """Record ``sha256 -> phash`` for entries that have none yet (computed once per content); return how
        many rows changed. Entries this index does not hold are left alone."""
        if not values:
            return 0
        conn = self._conn
        with conn:
            return conn.executemany(
                "UPDATE assets SET phash = ? WHERE sha256 = ? AND phash IS NULL", [(v, k) for k, v in values.items()]
            ).rowcount

    def remove_paths(self, paths: set[str] | list[str]) -> int:
        """Delete every entry whose stored ``path`` is one of ``paths`` (GC of unreferenced assets); return how
        many rows went."""
        chosen = sorted(paths)
        conn = self._conn
        removed = 0
        with conn:
            for start in range(0, len(chosen), 500):
                chunk = chosen[start : start + 500]
                removed += conn.execute(
                    f"DELETE FROM assets WHERE path IN ({', '.join('?' * len(chunk))})", chunk
                ).rowcount
        return removed

    def count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM assets").fetchone()[0]

    def iter_rows(self, batch_size: int = 50_000) -> Iterator[list[tuple]]:
        """Every row in key order, a batch at a time (for copying the index into DuckDB)."""
        cursor = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM assets ORDER BY sha256")
        while rows := cursor.fetchmany(batch_size):
            yield rows

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
