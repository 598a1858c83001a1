"""Refreshing an S3 lake's ``catalog.duckdb``: incremental, so its requests follow the changed objects, not the lake.

A full build lists every partition prefix (twice), GETs every Parquet footer and ``_metadata.json`` and reads
every hash-index segment: tens of thousands of requests at 10,000 partitions, after every ingest. Now:

- partitions: ONE recursive listing of ``catalog/`` (1 request per 1,000 objects) finds every partition as
  ``S3Catalog.select`` would (any object under a valid ``provider=/dataset=/task=/variant=`` prefix) and its
  files. A partition's signature is a digest of its Parquet objects' and ``_metadata.json``'s key, size, ETag and
  LastModified; only partitions whose signature changed have their footers and ``_metadata.json`` read, rows of
  partitions gone are deleted, the others are kept.
- the hash index: segments are written under new keys (one per ingest job); a GC or delete rewrites or removes
  one (``ingest/s3_index.py``). So the rows of segments not seen before are merged in (a row replaces the one
  kept for its sha256 only if it wins ``DEDUP_HASHES``' order, which ties on no two distinct rows), and any
  segment changed or gone since the last refresh rebuilds the table from every segment.

The state (signatures, segment versions, which lake) lives in the database itself, so it always matches the
rows. The update runs on a copy of the previous file, swapped in with ``os.replace``; no usable previous file
(missing, unreadable, another lake's or endpoint's, an older format) means a full build.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from ..lake import keys
from ..lake.layout import PartitionRef
from ..storage.backends import ObjectInfo, endpoint_slug
from ..storage.files import temp_sibling
from .parts import PARTITION_COLUMNS
from .warehouse import (
    HASH_INDEX_SCHEMA,
    build_database,
    create_hash_index_table,
    open_copy,
    remove_stale_temps,
    replace_partition_rows,
)

if TYPE_CHECKING:
    from .s3 import S3Catalog

STATE_FORMAT = 1
STATE = "s3_refresh_state"
PARTITION_STATE = "s3_refresh_partitions"
SEGMENT_STATE = "s3_refresh_segments"
HASH_COLUMNS = ", ".join(HASH_INDEX_SCHEMA.names)
# one row per sha256, the earliest created_at (unparseable times last), then every other column: a total order of
# distinct rows, so the row kept never depends on scan order and merging new segments keeps what a full build keeps
_TIE_BREAK = [c for c in HASH_INDEX_SCHEMA.names if c not in ("sha256", "created_at", "path", "first_batch_id")]
DEDUP_HASHES = (
    "SELECT {columns} FROM {source} QUALIFY row_number() OVER (PARTITION BY sha256 ORDER BY "
    "try_cast(created_at AS TIMESTAMPTZ) NULLS LAST, created_at NULLS LAST, path, first_batch_id, "
    + ", ".join(_TIE_BREAK)
    + ") = 1"
)


def object_signature(obj: ObjectInfo) -> str:
    return f"{obj.key}\t{obj.size}\t{obj.etag}\t{obj.modified.isoformat()}"


@dataclass
class ListedPartition:
    """One partition as the recursive listing found it."""

    ref: PartitionRef
    parts: list[ObjectInfo] = field(default_factory=list)  # direct ``*.parquet`` children, compacted part first
    metadata: ObjectInfo | None = None

    def signature(self) -> str:
        objects = [*self.parts, *([self.metadata] if self.metadata else [])]
        return hashlib.sha1("\n".join(sorted(map(object_signature, objects))).encode()).hexdigest()


def list_catalog(objects: Iterable[ObjectInfo]) -> dict[str, ListedPartition]:
    """``partition key -> ListedPartition`` from a recursive listing of ``catalog/``: a partition exists when an
    object lies under its prefix (what ``S3Catalog.select``'s delimiter listings see), invalid names skipped;
    its files are what ``S3Catalog._list_partition`` keeps."""
    found: dict[str, ListedPartition | None] = {}
    root = keys.CATALOG + "/"
    for obj in objects:
        if not obj.key.startswith(root):
            continue
        segments = obj.key[len(root) :].split("/", len(PARTITION_COLUMNS))
        if len(segments) <= len(PARTITION_COLUMNS):
            continue
        values = []
        for level, segment in zip(PARTITION_COLUMNS, segments):
            if not segment.startswith(f"{level}="):
                break
            values.append(segment[len(level) + 1 :])
        else:
            key = "/".join(values)
            if key not in found:
                try:
                    found[key] = ListedPartition(PartitionRef(*values))
                except ValueError:
                    found[key] = None
            partition = found[key]
            name = segments[-1]
            if partition is None or "/" in name:
                continue
            if name == keys.PARTITION_METADATA:
                partition.metadata = obj
            elif name.endswith(".parquet") and name[0] not in "._":
                partition.parts.append(obj)
    listed = {key: p for key, p in sorted(found.items()) if p is not None}
    for p in listed.values():
        p.parts.sort(key=lambda o: (not o.key.endswith("/" + keys.COMPACTED_PART), o.key))
    return listed


@dataclass
class PreviousBuild:
    con: duckdb.DuckDBPyConnection
    partitions: dict[str, str]  # partition key -> signature
    segments: dict[str, str]  # segment key -> signature


def lake_identity(base: str) -> str:
    """Which lake a database was built from: the endpoint too (two stores may have a bucket of the same name)."""
    return f"{endpoint_slug()} {base}"


def read_previous(con: duckdb.DuckDBPyConnection, identity: str) -> PreviousBuild | None:
    try:
        state = con.execute(f"SELECT format, base FROM {STATE}").fetchall()
        partitions = dict(con.execute(f"SELECT partition, signature FROM {PARTITION_STATE}").fetchall())
        segments = dict(con.execute(f"SELECT key, signature FROM {SEGMENT_STATE}").fetchall())
        con.execute("SELECT files, rows FROM partitions LIMIT 0")
        con.execute(f"SELECT {HASH_COLUMNS} FROM hash_index LIMIT 0")
    except duckdb.Error:  # an older format (no state), another file, or damaged: anew
        return None
    if state != [(STATE_FORMAT, identity)]:
        return None
    return PreviousBuild(con, partitions, segments)


def _table(con: duckdb.DuckDBPyConnection, name: str, columns: tuple[str, str], rows: dict[str, str]) -> None:
    con.execute(f"CREATE OR REPLACE TABLE {name} ({columns[0]} VARCHAR PRIMARY KEY, {columns[1]} VARCHAR)")
    table = pa.table({columns[0]: pa.array(list(rows), pa.string()), columns[1]: pa.array(list(rows.values()))})
    con.register("__state_rows", table)
    con.execute(f"INSERT INTO {name} SELECT * FROM __state_rows")
    con.unregister("__state_rows")


def sync_hash_index(
    con: duckdb.DuckDBPyConnection, catalog: S3Catalog, previous: PreviousBuild | None
) -> tuple[dict[str, str], bool]:
    """Bring ``hash_index`` up to the bucket's segments: merge the new segments' rows, or rebuild it when a segment
    seen before changed or went. Returns (segment key -> signature, whether it was rebuilt)."""
    listing = {o.key: o for o in catalog.segment_objects()}
    current = {key: object_signature(o) for key, o in listing.items()}
    seen = previous.segments if previous else {}
    full = previous is None or any(current.get(key) != sig for key, sig in seen.items())
    fresh = sorted(listing) if full else sorted(k for k in listing if k not in seen)
    if full:
        con.execute("DELETE FROM hash_index")
    if not fresh:
        return current, full
    con.register("__hash_segments", catalog.hash_segments([listing[k] for k in fresh]))
    try:
        if full:
            select = DEDUP_HASHES.format(columns=HASH_COLUMNS, source="__hash_segments")
            con.execute(f"INSERT INTO hash_index {select} ORDER BY sha256")
            return current, full
        con.execute(f"CREATE TEMP TABLE __hash_new AS SELECT {HASH_COLUMNS} FROM __hash_segments")
    finally:
        con.unregister("__hash_segments")
    # the row kept for a sha256 is the first of its rows in DEDUP_HASHES' order: the first of the one kept so far
    # and the new ones (IS NOT DISTINCT FROM: a NULL sha256 is one group too, as in PARTITION BY)
    touched = "EXISTS (SELECT 1 FROM __hash_new n WHERE n.sha256 IS NOT DISTINCT FROM hash_index.sha256)"
    source = f"(SELECT {HASH_COLUMNS} FROM hash_index WHERE {touched} UNION ALL SELECT * FROM __hash_new)"
    con.execute(f"CREATE TEMP TABLE __hash_won AS {DEDUP_HASHES.format(columns=HASH_COLUMNS, source=source)}")
    con.execute(f"DELETE FROM hash_index WHERE {touched}")
    con.execute("INSERT INTO hash_index SELECT * FROM __hash_won ORDER BY sha256")
    con.execute("DROP TABLE __hash_new")
    con.execute("DROP TABLE __hash_won")
    return current, full


def _fill(
    con: duckdb.DuckDBPyConnection, catalog: S3Catalog, previous: PreviousBuild | None, signatures: dict[str, str],
    stale: list[str], stats: pa.Table,
) -> tuple[bool, tuple[int, int, int, int]]:  # fmt: skip
    """Bring a database (new: ``partitions`` from ``stats`` already; or the previous one's copy) up to the lake;
    return whether the hash index was rebuilt and (partitions, files, rows, hash-index rows)."""
    if previous is None:
        create_hash_index_table(con)
    else:
        replace_partition_rows(con, stale, stats)
    segments, rebuilt = sync_hash_index(con, catalog, previous)
    con.execute(f"CREATE OR REPLACE TABLE {STATE} (format INTEGER, base VARCHAR)")
    con.execute(f"INSERT INTO {STATE} VALUES (?, ?)", [STATE_FORMAT, lake_identity(catalog.base)])
    _table(con, PARTITION_STATE, ("partition", "signature"), signatures)
    _table(con, SEGMENT_STATE, ("key", "signature"), segments)
    totals = con.execute(
        "SELECT count(*), coalesce(sum(files), 0), coalesce(sum(rows), 0), (SELECT count(*) FROM hash_index) "
        "FROM partitions"
    )
    return rebuilt, tuple(totals.fetchall()[0])


def refresh_database(catalog: S3Catalog, target: Path, rebuild: bool = False) -> dict:
    """Build or update ``catalog.duckdb`` at ``target`` (see the module docstring); return a summary without the
    upload: partitions, files, rows, assets; ``changed``: the partitions read again; ``incremental``: whether a
    previous database was updated; ``index_rebuilt``: whether the hash index was built from every segment.
    ``rebuild``: from scratch, the previous file ignored (``datalake catalog rebuild``)."""
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_sibling(target)
    try:
        identity = lake_identity(catalog.base)
        opened = None if rebuild else open_copy(target, tmp, lambda con: read_previous(con, identity))
        previous = opened[1] if opened else None
        try:
            listed = list_catalog(catalog.storage.list(keys.CATALOG))
            signatures = {key: p.signature() for key, p in listed.items()}
            before = previous.partitions if previous else {}
            changed = [listed[k] for k, sig in signatures.items() if before.get(k) != sig]
            stale = [k for k in before if k not in listed or before[k] != signatures[k]]
            stats = catalog.stats([p.ref for p in changed], [(p.parts, p.metadata is not None) for p in changed])
            args: tuple = (catalog, previous, signatures, stale, stats)
            fill: Callable[[duckdb.DuckDBPyConnection], tuple] = lambda con: _fill(con, *args)  # noqa: E731
            if previous is None:
                rebuilt, totals = build_database(target, stats, fill)
            else:
                previous.con.execute("BEGIN")
                rebuilt, totals = fill(previous.con)
                previous.con.execute("COMMIT")
                previous.con.execute("CHECKPOINT")
        finally:
            if previous is not None:
                previous.con.close()
        if previous is not None:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    partitions, files, rows, assets = totals
    return {
        "partitions": partitions,
        "files": files,
        "rows": rows,
        "assets": assets,
        "seconds": round(time.perf_counter() - started, 3),
        "changed": len(changed),
        "incremental": previous is not None,
        "index_rebuilt": rebuilt,
    }
