"""Refreshing a local lake's ``catalog.duckdb``: incremental, so its cost follows the new files, not the lake.

A refresh after one ingest used to rebuild everything: every part file's footer (twice: the check and the row
counts), every ``_metadata.json``, the ``catalog`` view (DuckDB reads every footer to bind it) and the whole hash
index row by row (benchmarks/scale.py: 7 s at 10,000 partitions for one new part). Now the database keeps what
it was built from:

- ``refresh_partitions``: one signature per partition, a digest of its part files' and ``_metadata.json``'s
  name, size, mtime and inode (one ``scandir`` per partition, no file opened). Only partitions whose signature
  changed are read again (footers, ``_metadata.json``); their ``partitions`` rows are replaced, those of
  partitions gone are deleted.
- ``refresh_index``: how many hash-index rows were copied, the newest ``created_at`` among them (the high-water
  mark) and a fingerprint of them (integer sums of sizes, path lengths and pHash bits, computed by SQLite). When
  the rows up to the mark still give the same count and fingerprint, only the index only grew: the rows after
  the mark are appended. Anything else (a GC or a delete removed entries, a pHash was filled, a concurrent
  ingest committed an older ``created_at`` late) copies the index again, so a mismatch costs time, never
  correctness.
- the ``catalog`` view globs the catalog at query time (DuckDB binds ``SELECT *`` again on every query, new
  columns included), so it is only recreated when the catalog goes from empty to not (or back) or the lake moved.

The update runs on a copy of the old file (``copy_file``: in the kernel, a reflink where the file system has
them), swapped in with ``os.replace`` like a full build: readers holding the old file are never disturbed. No
usable old file (first refresh, another lake's, an older format, unreadable) means a full build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ...settings import load as load_settings
from ..ingest.hash_index import COLUMNS as INDEX_COLUMNS
from ..ingest.index_store import existing_hash_index
from ..lake.keys import PARTITION_METADATA
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.files import copy_file, temp_sibling
from .parts import PARTITION_COLUMNS
from .warehouse import (
    HASH_INDEX_SCHEMA,
    build_database,
    catalog_files,
    check_catalog_files,
    create_catalog_view,
    create_hash_index_table,
    partition_stats,
)

SCAN_THREADS, SCAN_CHUNK = 8, 256
PARTITION_STATE = "refresh_partitions"
INDEX_STATE = "refresh_index"
KEY_SQL = "provider || '/' || dataset || '/' || task || '/' || variant"
# Integer aggregates only: sums of floats depend on the order of addition, so a fingerprint carried forward by
# adding the appended rows' sums would drift from a recount. phash & 65535 keeps the sum far from overflow.
FINGERPRINT = (
    "count(*), coalesce(sum(size), 0), coalesce(sum(length(path)), 0), count(phash), "
    "coalesce(sum(phash & 65535), 0), coalesce(sum(coalesce(width, 0) + coalesce(height, 0)), 0)"
)


def _signature(folder: str) -> str:
    """A digest of the files a partition's ``partitions`` row is computed from (stat only, no file opened)."""
    entries = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name == PARTITION_METADATA or (name.endswith(".parquet") and not name.startswith((".", "_"))):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    entries.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return hashlib.sha1("/".join(sorted(entries)).encode()).hexdigest()


def _subfolders(folder: str, level: str) -> list[tuple[str, str]]:
    prefix = f"{level}="
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
        return [(e.name[len(prefix) :], e.path) for e in it if e.name.startswith(prefix) and e.is_dir()]
    return []


def scan_catalog(layout: LakeLayout, known: Collection[str] = ()) -> dict[str, str]:
    """``partition key -> signature`` of every partition folder, as :func:`.warehouse.select_partitions` finds
    them (invalid names skipped; a key in ``known`` was valid before and is not checked again). Strings and
    ``scandir`` entries, no ``Path`` or ``PartitionRef`` per partition: at 10,000 partitions this walk is what
    a refresh without changes costs."""
    branches = [("", str(layout.catalog_root))]
    for level in PARTITION_COLUMNS:
        branches = [(f"{key}/{value}" if key else value, child) for key, folder in branches
                    for value, child in _subfolders(folder, level)]  # fmt: skip
    valid = []
    for key, folder in branches:
        if key not in known:
            try:
                PartitionRef.parse(key)
            except ValueError:
                continue
        valid.append((key, folder))
    # scandir and stat release the GIL: on a NAS, where each is a round trip, threads overlap the waits
    chunks = [valid[i : i + SCAN_CHUNK] for i in range(0, len(valid), SCAN_CHUNK)]
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        done = pool.map(lambda chunk: [(key, _signature(folder)) for key, folder in chunk], chunks)
        return {key: signature for chunk in done for key, signature in chunk}


@dataclass
class PreviousBuild:
    """What an existing ``catalog.duckdb`` was built from (see the module docstring)."""

    base: str
    signatures: dict[str, str] = field(default_factory=dict)
    index_rows: int = 0
    high_water: str | None = None
    fingerprint: tuple[int, ...] = ()
    had_files: bool = False


def read_previous(con: duckdb.DuckDBPyConnection) -> PreviousBuild | None:
    """The state kept in the database of ``con``, None when there is no usable one (then the refresh builds
    from scratch)."""
    try:
        base, rows, high_water, fingerprint = con.execute(
            f"SELECT base, index_rows, high_water, fingerprint FROM {INDEX_STATE}"
        ).fetchall()[0]
        signatures = dict(con.execute(f"SELECT partition, signature FROM {PARTITION_STATE}").fetchall())
        files = con.execute("SELECT coalesce(sum(files), 0) FROM partitions").fetchall()[0][0]
    except (duckdb.Error, TypeError, ValueError):  # an older format, another file, or damaged: build anew
        return None
    return PreviousBuild(base, signatures, rows, high_water, tuple(json.loads(fingerprint)), bool(files))


@contextlib.contextmanager
def _index_snapshot(layout: LakeLayout) -> Iterator[sqlite3.Connection | None]:
    """A read transaction on the SQLite hash index (WAL: every query in it sees one snapshot)."""
    if not layout.hash_index.exists():
        yield None
        return
    con = sqlite3.connect(f"file:{layout.hash_index}?mode=ro", uri=True, timeout=60)
    try:
        con.execute("BEGIN")
        yield con
    finally:
        con.close()


def _copy_rows(con: duckdb.DuckDBPyConnection, cursor: sqlite3.Cursor | list[tuple], batch_size: int) -> int:
    """Insert the rows of ``cursor`` (a SQLite cursor read ``batch_size`` at a time, or one list of rows)."""
    copied = 0
    chunks = iter([cursor]) if isinstance(cursor, list) else iter(lambda: cursor.fetchmany(batch_size), [])
    for rows in chunks:
        if not rows:
            continue
        chunk = pa.Table.from_arrays(
            [pa.array(col, type=f.type) for col, f in zip(zip(*rows), HASH_INDEX_SCHEMA)], schema=HASH_INDEX_SCHEMA
        )
        con.register("hash_index_chunk", chunk)
        con.execute("INSERT INTO hash_index SELECT * FROM hash_index_chunk")
        con.unregister("hash_index_chunk")
        copied += chunk.num_rows
    return copied


def sync_hash_index(
    con: duckdb.DuckDBPyConnection, layout: LakeLayout, previous: PreviousBuild | None, batch_size: int
) -> tuple[int, str | None, tuple[int, ...], bool]:
    """Bring ``hash_index`` in ``con`` up to the SQLite index: append the rows after the previous high-water
    mark, or copy them all. Returns (rows, high-water mark, fingerprint, whether it appended)."""
    columns = ", ".join(INDEX_COLUMNS)
    if load_settings().index_url:  # the index is in PostgreSQL (many hosts): copied whole, no SQLite high-water mark
        con.execute("DELETE FROM hash_index")
        shared = existing_hash_index(layout)
        if shared is None:
            return 0, None, (), False
        try:
            return sum(_copy_rows(con, rows, batch_size) for rows in shared.iter_rows(batch_size)), None, (), False
        finally:
            shared.close()
    with _index_snapshot(layout) as index:
        if index is None:
            con.execute("DELETE FROM hash_index")
            return 0, None, (), False
        if previous is not None and previous.high_water is not None:
            old = index.execute(f"SELECT {FINGERPRINT} FROM assets WHERE created_at <= ?", (previous.high_water,))
            if tuple(old.fetchone()) == previous.fingerprint and previous.fingerprint[0] == previous.index_rows:
                new = index.execute(
                    f"SELECT {columns} FROM assets WHERE created_at > ? ORDER BY sha256", (previous.high_water,)
                )
                added = _copy_rows(con, new, batch_size)
                if added == 0:
                    return previous.index_rows, previous.high_water, previous.fingerprint, True
                delta = index.execute(f"SELECT {FINGERPRINT}, max(created_at) FROM assets WHERE created_at > ?",
                                      (previous.high_water,)).fetchone()  # fmt: skip
                fingerprint = tuple(a + b for a, b in zip(previous.fingerprint, delta[:-1]))
                return previous.index_rows + added, max(previous.high_water, delta[-1]), fingerprint, True
        con.execute("DELETE FROM hash_index")
        high_water = index.execute("SELECT max(created_at) FROM assets").fetchone()[0]
        fingerprint = tuple(index.execute(f"SELECT {FINGERPRINT} FROM assets").fetchone())
        copied = _copy_rows(con, index.execute(f"SELECT {columns} FROM assets ORDER BY sha256"), batch_size)
        return copied, high_water, fingerprint, False


def _write_state(con: duckdb.DuckDBPyConnection, layout: LakeLayout, signatures: dict[str, str], index: tuple) -> None:
    rows, high_water, fingerprint, _ = index
    con.execute(f"CREATE OR REPLACE TABLE {PARTITION_STATE} (partition VARCHAR PRIMARY KEY, signature VARCHAR)")
    con.register("signatures", pa.table({"partition": list(signatures), "signature": list(signatures.values())}))
    con.execute(f"INSERT INTO {PARTITION_STATE} SELECT * FROM signatures")
    con.unregister("signatures")
    con.execute(
        f"CREATE OR REPLACE TABLE {INDEX_STATE} (base VARCHAR, index_rows BIGINT, high_water VARCHAR, "
        "fingerprint VARCHAR)"
    )
    con.execute(
        f"INSERT INTO {INDEX_STATE} VALUES (?, ?, ?, ?)",
        [str(layout.base), rows, high_water, json.dumps(list(fingerprint))],
    )


def _open_previous(target: Path, tmp: Path, base: str) -> tuple[duckdb.DuckDBPyConnection, PreviousBuild] | None:
    """A copy of ``target`` at ``tmp``, open, with the state it holds; None when it has no usable one. The state
    is read from the copy, never from ``target``: DuckDB shares one database instance per path within a
    process, so a reader here still holding a replaced file would answer for the old file."""
    if not target.is_file():
        return None
    copy_file(target, tmp)
    try:
        con = duckdb.connect(str(tmp))
    except duckdb.Error:
        return None
    previous = read_previous(con)
    if previous is None or previous.base != base:  # another lake's file, or the lake moved (the view's glob)
        con.close()
        return None
    return con, previous


def _fill(
    con: duckdb.DuckDBPyConnection, layout: LakeLayout, previous: PreviousBuild | None, changed: list[PartitionRef],
    stats: pa.Table, signatures: dict[str, str], batch_size: int,
) -> tuple[tuple, tuple[int, int, int]]:  # fmt: skip
    """Bring a database (new: ``partitions`` from ``stats`` already; or the copy of the previous one) up to the
    lake; return the hash-index state and (partitions, files, rows)."""
    if previous is None:
        has_files = bool(sum(stats["files"].to_pylist()))
        create_catalog_view(con, layout, has_files)
        create_hash_index_table(con)
    else:
        stale = [k for k in previous.signatures if k not in signatures] + [r.key for r in changed]
        if stale:
            con.register("stale", pa.table({"key": stale}))
            con.execute(f"DELETE FROM partitions WHERE {KEY_SQL} IN (SELECT key FROM stale)")
            con.unregister("stale")
        con.register("partition_stats", stats)
        # in key order, as a full build writes it (one pass over one row per partition)
        con.execute(
            "CREATE OR REPLACE TABLE partitions AS SELECT * FROM (SELECT * FROM partitions UNION ALL "
            "SELECT * FROM partition_stats) ORDER BY ALL"
        )
        con.unregister("partition_stats")
        has_files = con.execute("SELECT coalesce(sum(files), 0) FROM partitions").fetchall()[0][0] > 0
        if has_files != previous.had_files:
            create_catalog_view(con, layout, has_files)
    index = sync_hash_index(con, layout, previous, batch_size)
    _write_state(con, layout, signatures, index)
    totals = con.execute("SELECT count(*), coalesce(sum(files), 0), coalesce(sum(rows), 0) FROM partitions")
    return index, tuple(totals.fetchall()[0])


def refresh_duckdb(layout: LakeLayout, db_path: Path | str | None = None, batch_size: int = 50_000) -> dict:
    """Build or update a local lake's ``catalog.duckdb`` (``catalog`` view, ``partitions`` and ``hash_index``
    tables) and swap it in; return a summary (path, partitions, files, rows, assets, seconds, and ``changed``:
    the partitions read again, ``incremental``: whether an old database was updated). ``CatalogError`` names an
    unreadable catalog file. Any lake: ``open_lake(base).refresh_warehouse()`` (an S3 lake's is
    :func:`.s3.refresh_duckdb_s3`)."""
    if not isinstance(layout, LakeLayout):
        raise TypeError(
            f"refresh_duckdb takes a LakeLayout (any lake: open_lake(base).refresh_warehouse()), got {layout!r}"
        )
    started = time.perf_counter()
    target = Path(db_path) if db_path is not None else layout.duckdb_file
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        opened = _open_previous(target, tmp, str(layout.base))
        previous = opened[1] if opened else None
        try:
            signatures = scan_catalog(layout, previous.signatures if previous else ())
            changed = sorted(
                PartitionRef.parse(key)
                for key, signature in signatures.items()
                if previous is None or previous.signatures.get(key) != signature
            )
            check_catalog_files(layout, catalog_files(layout, changed))
            stats = partition_stats(layout, changed)
            args = (layout, previous, changed, stats, signatures, batch_size)
            if opened is None:
                index, totals = build_database(target, stats, lambda con: _fill(con, *args))
            else:
                opened[0].execute("BEGIN")
                index, totals = _fill(opened[0], *args)
                opened[0].execute("COMMIT")
                opened[0].execute("CHECKPOINT")
        finally:
            if opened:
                opened[0].close()
        if opened is not None:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    partitions, files, rows = totals
    return {
        "path": str(target),
        "partitions": partitions,
        "files": files,
        "rows": rows,
        "assets": index[0],
        "seconds": round(time.perf_counter() - started, 3),
        "changed": len(changed),
        "incremental": previous is not None,
    }
