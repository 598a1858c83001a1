"""Row dedup on an S3 lake: per-part row-hash segments in the bucket, loaded into the local cache's row index.

Each published part file ``catalog/.../<part>.parquet`` gets a segment
``index/rows/<provider>/<dataset>/<task>/<variant>/<part>/<size>-<etag>.parquet`` holding its ``row_hash``
column: the key names the version of the part it was read from (the part's size and ETag right after its upload).
The segment is written after its part, so a segment never stands for a part that was not uploaded.

Before a batch's lookups (:meth:`S3RowSegments.prepare`, under the run's one-run-per-partition rule) the cache's
:class:`~.row_index.RowIndex` is reconciled with two listings, the partition's part files and its segments:
a part whose version the cache already holds costs nothing, a new part is loaded from its segment (a few KB per
batch), and a part without a segment for its version (a run that died between the part's upload and its segment,
or a lake older than segments) has its ``row_hash`` column read once from the part and a segment published for it.
A cached part that is gone or changed (a compaction, a rewrite) rebuilds the partition's entries, as locally.
So a run never downloads the partition's catalog files to deduplicate, and no entry outlives its part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog.parts import ROW_HASH, read_column
from ..lake import keys
from ..lake.layout import PartitionRef
from ..lake.locks import exclusive_lock
from ..storage.backends import ObjectInfo, S3Storage
from ..storage.pool import s3_map
from .hash_index import HashIndex
from .row_index import RowIndex

SEGMENT_SCHEMA = pa.schema([pa.field(ROW_HASH, pa.string())])


def part_signature(obj: ObjectInfo) -> str:
    """One version of a part object as a key-safe string: ``<size>-<etag without quotes>``."""
    return f"{obj.size}-{obj.etag.strip(chr(34))}"


def hashes_bytes(hashes: Iterable[str | None]) -> bytes:
    table = pa.table({ROW_HASH: pa.array(sorted({h for h in hashes if h}), pa.string())}, schema=SEGMENT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def bytes_hashes(data: bytes) -> list[str | None]:
    """The row hashes of a segment, or of a part file's ``row_hash`` column (empty when it has none)."""
    pf = pq.ParquetFile(pa.BufferReader(data))
    if ROW_HASH not in pf.schema_arrow.names:
        return []
    return pf.read(columns=[ROW_HASH]).column(0).to_pylist()


class S3RowSegments:
    """The row dedup of an S3 lake: its segments in ``storage`` and the cache's row index in ``index``
    (``lock_folder`` holds the cache's lock file). Implements :class:`~.row_index.RowDedup` for a work lake."""

    def __init__(self, storage: S3Storage, index: HashIndex, lock_folder: Path):
        self.storage = storage
        self.rows = RowIndex(index)
        self.lock_folder = lock_folder

    def _lock(self) -> contextlib.AbstractContextManager[object]:
        return exclusive_lock(self.lock_folder / "rows.lock")

    def parts(self, ref: PartitionRef) -> dict[str, ObjectInfo]:
        """The partition's part files on S3 (one listing), by name, as ``partition_files`` selects them locally."""
        prefix = keys.partition(ref) + "/"
        found = {}
        for obj in self.storage.list(prefix):
            name = obj.key[len(prefix) :] if obj.key.startswith(prefix) else ""
            if name.endswith(".parquet") and "/" not in name and not name.startswith((".", "_")):
                found[name] = obj
        return found

    def segments(self, ref: PartitionRef) -> dict[tuple[str, str], str]:
        """``(part name, part signature) -> segment key`` of the partition's published segments (one listing)."""
        prefix = keys.row_segments(ref) + "/"
        found = {}
        for obj in self.storage.list(prefix):
            rest = obj.key[len(prefix) :].split("/")
            if len(rest) == 2 and rest[1].endswith(".parquet"):
                found[(rest[0], rest[1].removesuffix(".parquet"))] = obj.key
        return found

    def _hashes_of(
        self, ref: PartitionRef, parts: dict[str, ObjectInfo], likely: Iterable[str] = ()
    ) -> Callable[[str], list[str | None]]:
        """Row hashes of a part by name; the ``likely`` ones (parts the cache lacks) are fetched at once, ahead."""
        segments = self.segments(ref)

        def fetch(name: str) -> list[str | None]:
            sig = part_signature(parts[name])
            key = segments.get((name, sig))
            if key is not None:
                return bytes_hashes(self.storage.read_bytes(key))
            # no segment for this version: read the part once, and publish its segment for the next runs
            hashes = bytes_hashes(self.storage.read_bytes(f"{keys.partition(ref)}/{name}"))
            self.storage.write_bytes(keys.row_segment(ref, name, sig), hashes_bytes(hashes))
            return hashes

        ahead = [n for n in likely if n in parts]
        fetched = dict(zip(ahead, s3_map(fetch, ahead)))

        def hashes_of(name: str) -> list[str | None]:
            return fetched.pop(name) if name in fetched else fetch(name)

        return hashes_of

    # RowDedup ------------------------------------------------------------------------------------------------
    def prepare(self, ref: PartitionRef) -> dict[str, int]:
        """Reconcile the cache's entries of ``ref`` with the bucket (two listings, new segments only)."""
        parts = self.parts(ref)
        current = {name: part_signature(obj) for name, obj in parts.items()}
        with self._lock():
            recorded = self.rows.parts(ref.key)
            if current == recorded:
                return {"rebuilt": 0, "parts_read": 0}
            likely = [name for name, sig in current.items() if recorded.get(name) != sig]
            return self.rows.reconcile(ref.key, current, self._hashes_of(ref, parts, likely))

    def seen(self, ref: PartitionRef, hashes: list[str], exclude_part: str | None) -> set[str]:
        return self.rows.seen(ref.key, hashes, exclude_part)

    def committed(self, ref: PartitionRef, rewritten: list[Path]) -> None:
        """Nothing yet: a work lake's part is recorded by :meth:`publish`, once it is in the bucket."""

    # publishing ----------------------------------------------------------------------------------------------
    def publish(self, ref: PartitionRef, files: list[Path], same_rows: bool = False) -> None:
        """After ``files`` (local copies of part files of ``ref``) were uploaded: write their segments, then record
        them in the cache. A part that replaced another version of itself rebuilds the partition's entries, unless
        ``same_rows`` (parts conformed to a widened contract keep their rows: only their signature changes)."""
        recorded = self.rows.parts(ref.key)

        def segment(path: Path) -> tuple[str, list[str | None]]:
            sig = part_signature(self.storage.info(f"{keys.partition(ref)}/{path.name}"))
            hashes = read_column(path, ROW_HASH)
            self.storage.write_bytes(keys.row_segment(ref, path.name, sig), hashes_bytes(hashes))
            return sig, hashes

        for path, (sig, hashes) in zip(files, s3_map(segment, files)):  # every segment written, then recorded
            with self._lock():
                if same_rows and path.name in recorded:
                    self.rows.resign(ref.key, path.name, sig)
                elif path.name in recorded and recorded[path.name] != sig:
                    self.rows.forget(ref.key)  # the old version's hashes may not all be in the new one
                    recorded = {}
                else:
                    self.rows.record(ref.key, path.name, sig, hashes)

    def rebuild(self, ref: PartitionRef) -> None:
        """After a compaction was published: drop the segments of parts (or versions) that are gone, and the
        cache's entries of ``ref`` (rebuilt from the remaining segments on next use)."""
        current = {(name, part_signature(obj)) for name, obj in self.parts(ref).items()}
        self.storage.delete(key for pair, key in sorted(self.segments(ref).items()) if pair not in current)
        with self._lock():
            self.rows.forget(ref.key)

    def problems(self, ref: PartitionRef, folder: Path) -> list[str]:
        """Where the published segments disagree with the part files (local copies in ``folder``)."""
        segments = self.segments(ref)
        problems = []
        for name, obj in sorted(self.parts(ref).items()):
            key = segments.get((name, part_signature(obj)))
            if key is None or not (folder / name).is_file():
                continue  # no segment yet: the next run reads the part and publishes one
            indexed = {h for h in bytes_hashes(self.storage.read_bytes(key)) if h}
            stored = {h for h in read_column(folder / name, ROW_HASH) if h}
            if indexed - stored:
                problems.append(
                    f"row index: segment {key} holds {len(indexed - stored)} row hash(es) that part {name} does not "
                    f"(e.g. {sorted(indexed - stored)[0]}): batches holding those rows would be dropped as duplicates"
                )
            if stored - indexed:
                problems.append(
                    f"row index: segment {key} lacks {len(stored - indexed)} row hash(es) of part {name} "
                    f"(e.g. {sorted(stored - indexed)[0]}): those rows would be added again"
                )
        return problems
