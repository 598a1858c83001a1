"""The local cache of an S3 lake's hash index, validated against the bucket before every use.

The bucket holds the truth: append-only Parquet segments ``index/segments/<job>.parquet``, each written
after its assets are in S3. The cache (``<cache dir>/index/hash_index.sqlite``, the cache dir being keyed
by endpoint, bucket and prefix, see ``storage.cache_dir_for``) holds the entries of the segments it has
loaded plus one row per loaded segment with the segment's size and ETag. Before each run
:meth:`SegmentCache.sync` lists the segments:

* a loaded segment that is gone from the bucket or changed (another size or ETag: the bucket was
  emptied and recreated, or the cache came from another store) invalidates the cache: every entry is
  dropped and every listed segment is loaded again, because entries are not traced to their segment;
* a cache without segment rows but with entries (written by an older version) is dropped the same way;
* new segments are loaded, each with its segment row in the same SQLite transaction.

So a dedup hit is only ever served from an entry of a segment the bucket still publishes. An entry
enters the cache with its segment row, never on its own. During a run, a hit is also confirmed by a HEAD
of its object (:class:`TieredHashIndex`): an object deleted behind the index's back is stored again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ...settings import CACHE_DIR_ENV
from ..lake import keys
from ..lake.locks import exclusive_lock
from ..storage.backends import ObjectInfo, S3Storage
from ..storage.pool import s3_map
from .hash_index import COLUMNS, INTEGER_COLUMNS, HashIndex, IndexEntry

SEGMENTS = keys.SEGMENTS
SEGMENT_SCHEMA = pa.schema([pa.field(c, pa.int64() if c in INTEGER_COLUMNS else pa.string()) for c in COLUMNS])
SEGMENTS_TABLE = "CREATE TABLE IF NOT EXISTS segments (key TEXT PRIMARY KEY, signature TEXT NOT NULL) WITHOUT ROWID"
LEGACY_LOADED_FILE = "segments_loaded.txt"  # what older versions kept instead of the segments table


def signature(obj: ObjectInfo) -> str:
    """What identifies one version of a segment object: its size and ETag."""
    return f"{obj.size}:{obj.etag}"


def segment_entries(data: bytes) -> list[IndexEntry]:
    """The entries of one segment (columns an older segment lacks read as ``None``)."""
    table = pq.read_table(pa.BufferReader(data))
    return [IndexEntry(**{c: row.get(c) for c in COLUMNS}) for row in table.to_pylist()]


def segment_bytes(entries: list[IndexEntry]) -> bytes:
    table = pa.Table.from_pylist([e.__dict__ for e in entries], schema=SEGMENT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# The cache is per host: only its folder has to move off the share.
CACHE_REMEDY = f"set {CACHE_DIR_ENV} to a folder on a local disk (the cache of an S3 lake is per host)"


class SegmentCache:
    """The hash-index cache of one S3 lake in ``folder`` (``<cache dir>/index``)."""

    def __init__(self, storage: S3Storage, folder: Path):
        self.storage = storage
        self.folder = folder
        self.index = HashIndex(folder / "hash_index.sqlite", CACHE_REMEDY, journal=False)
        with self.index._conn as conn:
            conn.execute(SEGMENTS_TABLE)

    def _lock(self):
        return exclusive_lock(self.folder / "sync.lock")

    def loaded(self) -> dict[str, str]:
        """Loaded segment key -> signature."""
        return dict(self.index._conn.execute("SELECT key, signature FROM segments"))

    def sync(self) -> dict[str, int]:
        """Bring the cache in line with the bucket's segments; return counts (dropped, loaded, segments)."""
        with self._lock():
            listing = {o.key: o for o in self.storage.list(SEGMENTS) if o.key.endswith(".parquet")}
            loaded = self.loaded()
            stale = [k for k, sig in loaded.items() if k not in listing or signature(listing[k]) != sig]
            dropped = 0
            if stale or (not loaded and self.index.count()):
                dropped = self._clear()
                loaded = {}
            (self.folder / LEGACY_LOADED_FILE).unlink(missing_ok=True)
            fresh = sorted(k for k in listing if k not in loaded)
            for key, data in zip(fresh, s3_map(self.storage.read_bytes, fresh)):  # GETs at once, adds in order
                self._add(key, signature(listing[key]), segment_entries(data))
        return {"dropped": dropped, "loaded": len(fresh), "segments": len(listing)}

    def publish(self, job_id: str, entries: list[IndexEntry]) -> str | None:
        """Write the run's segment to the bucket (after its assets), then add it to the cache."""
        if not entries:
            return None
        key = keys.index_segment(job_id)
        self.storage.write_bytes(key, segment_bytes(entries))
        info = self.storage.info(key)
        with self._lock():  # this run's entries are the newest truth (an older entry may name a lost object)
            self._add(key, signature(info), entries, replace=True)
        return key

    def remove_paths(self, paths: set[str]) -> int:
        """Rewrite every published segment holding an entry for one of ``paths`` without it (delete a segment
        left empty), then drop those entries from this cache; return how many entries went from the bucket.

        Each rewrite is one PUT of a whole segment, so a reader sees a segment either before or after; an
        interrupted call leaves some segments rewritten, and a second call finishes the rest. Other caches see
        the changed signatures at their next :meth:`sync` and reload."""
        if not paths:
            return 0
        removed = 0
        with self._lock():
            for obj in [o for o in self.storage.list(SEGMENTS) if o.key.endswith(".parquet")]:
                entries = segment_entries(self.storage.read_bytes(obj.key))
                kept = [e for e in entries if e.path not in paths]
                if len(kept) == len(entries):
                    continue
                if kept:
                    self.storage.write_bytes(obj.key, segment_bytes(kept))
                    sig = signature(self.storage.info(obj.key))
                else:
                    self.storage.delete([obj.key])
                removed += len(entries) - len(kept)
                conn = self.index._conn
                with conn:
                    if kept:
                        conn.execute("UPDATE segments SET signature = ? WHERE key = ?", (sig, obj.key))
                    else:
                        conn.execute("DELETE FROM segments WHERE key = ?", (obj.key,))
            self.index.remove_paths(paths)
        return removed

    def _clear(self) -> int:
        conn = self.index._conn
        with conn:
            dropped = conn.execute("DELETE FROM assets").rowcount
            conn.execute("DELETE FROM segments")
        return dropped

    def _add(self, key: str, sig: str, entries: list[IndexEntry], replace: bool = False) -> None:
        conn: sqlite3.Connection = self.index._conn
        rows = [tuple(getattr(e, c) for c in COLUMNS) for e in entries]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        sql = f"{verb} INTO assets ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        with conn:  # entries and their segment row in one transaction
            conn.executemany(sql, rows)
            conn.execute("INSERT OR REPLACE INTO segments (key, signature) VALUES (?, ?)", (key, sig))


class TieredHashIndex(HashIndex):
    """A per-run index (new entries) in front of the shared, published cache (read-only here).

    ``present(paths)`` (the S3 lake's HEADs: ``path -> size``, or a set of paths) confirms a published hit's
    object still exists with the indexed size; a hit whose object is gone or has another size counts as
    unknown, so the run stores the content again instead of cataloguing a row that
    points at nothing.
    """

    def __init__(
        self,
        path: Path,
        published: HashIndex,
        present: Callable[[list[str]], set[str] | dict[str, int]] | None = None,
    ):
        super().__init__(path, CACHE_REMEDY, journal=False)  # a run's own file: no refresh reads it
        self.published = published
        self.present = present

    def get(self, sha256: str) -> IndexEntry | None:
        return self.get_many([sha256]).get(sha256)

    def get_many(self, hashes: list[str]) -> dict[str, IndexEntry]:
        found = super().get_many(hashes)
        missing = [h for h in hashes if h not in found]
        hits = self.published.get_many(missing) if missing else {}
        if hits and self.present is not None:
            there = self.present(sorted({e.path for e in hits.values()}))
            sizes = there if isinstance(there, dict) else {}  # a wrong size is as broken as a missing object
            hits = {h: e for h, e in hits.items() if e.path in there and sizes.get(e.path, e.size) == e.size}
        return {**hits, **found}

    def new_entries(self) -> list[IndexEntry]:
        return [IndexEntry(*row) for rows in self.iter_rows() for row in rows]
