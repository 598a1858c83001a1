"""Refreshing a local lake's ``catalog.duckdb``: incremental, so its cost follows the new files, not the lake.

A refresh after one ingest used to rebuild everything: every part file's footer, every ``_metadata.json``, the
``catalog`` view and the whole hash index row by row (benchmarks/scale.py: 7 s at 10,000 partitions for one new
part). Now the database keeps what it was built from, and a refresh reads only what changed since:

- partitions: the change log (``lake/changes.py``) names every partition a writer took since the last refresh;
  those, plus the ones whose writer was still at work then (``watch``: their lock held), are looked at again. A
  partition is read again (footers, ``_metadata.json``) when its signature changed: a digest of its part files'
  and ``_metadata.json``'s name, size, mtime and inode (one ``scandir``, no file opened). A walk of every
  partition folder replaces the log when the log cannot say (first refresh, another log, entries missing), when
  asked (``walk=True``: ``datalake catalog rebuild``) and every ``DATALAKE_CATALOG_WALK_SECONDS`` (a day), which
  catches what no writer recorded (files copied in by hand).
- the hash index: its journal (``ingest/index_changes.py``) gives the keys changed since the cursor kept here;
  their rows are replaced. No cursor, another index or a pruned journal copies the index whole.
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
import time
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ...settings import load as load_settings
from ..ingest.index_changes import index_changes
from ..lake.changes import prune_changes, read_changes, writer_active
from ..lake.keys import PARTITION_METADATA
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.files import temp_sibling
from .parts import PARTITION_COLUMNS
from .warehouse import (
    HASH_INDEX_SCHEMA,
    build_database,
    catalog_files,
    check_catalog_files,
    create_catalog_view,
    create_hash_index_table,
    open_copy,
    partition_stats,
    remove_stale_temps,
    replace_partition_rows,
)

SCAN_THREADS, SCAN_CHUNK = 8, 256
PARTITION_STATE = "refresh_partitions"
STATE = "refresh_state"


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
    """What an existing ``catalog.duckdb`` was built from (see the module docstring); the partition signatures
    stay in the database (``con``) and are read for the partitions looked at only."""

    con: duckdb.DuckDBPyConnection
    base: str
    log_id: str | None = None
    log_seq: int | None = None
    log_token: str | None = None
    watch: list[str] = field(default_factory=list)
    walked_at: float = 0.0
    index_cursor: dict | None = None
    had_files: bool = False

    def signatures(self, keys: Collection[str] | None = None) -> dict[str, str]:
        """``partition -> signature`` of ``keys`` (None: of every partition)."""
        query = f"SELECT partition, signature FROM {PARTITION_STATE}"
        if keys is None:
            return dict(self.con.execute(query).fetchall())
        self.con.register("wanted_keys", pa.table({"key": pa.array(sorted(keys), pa.string())}))
        try:
            return dict(self.con.execute(f"{query} WHERE partition IN (SELECT key FROM wanted_keys)").fetchall())
        finally:
            self.con.unregister("wanted_keys")


def _same_base(previous: PreviousBuild | None, base: str) -> PreviousBuild | None:
    return previous if previous is not None and previous.base == base else None


def read_previous(con: duckdb.DuckDBPyConnection) -> PreviousBuild | None:
    """The state kept in the database of ``con``, None when there is no usable one (then the refresh builds
    from scratch)."""
    try:
        base, log_id, log_seq, log_token, watch, walked_at, index_cursor = con.execute(
            f"SELECT base, log_id, log_seq, log_token, watch, walked_at, index_cursor FROM {STATE}"
        ).fetchall()[0]
        con.execute(f"SELECT partition, signature FROM {PARTITION_STATE} LIMIT 0")
        files = con.execute("SELECT coalesce(sum(files), 0) FROM partitions").fetchall()[0][0]
        if not con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'catalog' AND NOT internal").fetchall():
            return None  # the view was dropped (by hand): a full build makes it again
        return PreviousBuild(
            con, base, log_id, log_seq, log_token, json.loads(watch), walked_at, json.loads(index_cursor), bool(files)
        )
    except (duckdb.Error, IndexError, TypeError, ValueError):  # an older format, another file, or damaged: anew
        return None


@dataclass
class Plan:
    """What this refresh reads again: the signatures of the partitions ``looked`` at (all when ``walked``), the
    ``changed`` ones among them, those ``gone``, the ``watch`` list to keep, and the change log's cursor."""

    looked: dict[str, str]
    changed: list[PartitionRef]
    gone: list[str]
    watch: list[str]
    log_id: str
    log_seq: int
    log_token: str | None
    walked_at: float
    walked: bool


def plan_refresh(layout: LakeLayout, previous: PreviousBuild | None, walk: bool) -> Plan:
    """Which partitions to read again: those the change log names since the previous refresh and those it was
    still watching, or every partition when a walk is due (see the module docstring)."""
    log = (
        read_changes(layout, previous.log_id, previous.log_seq, previous.log_token)
        if previous
        else read_changes(layout, None, None)
    )
    now = time.time()
    walk = walk or previous is None or not log.complete or now - previous.walked_at >= load_settings().walk_seconds
    if walk:
        before = previous.signatures() if previous else {}
        looked = scan_catalog(layout, before)
        gone = [key for key in before if key not in looked]
        # writers at work now: known from the log's entries, or, when the log cannot say, from every lock
        maybe_busy = set(looked) if previous is None or not log.complete else log.partitions
        walked_at = now
    else:
        assert previous is not None
        candidates = log.partitions | set(previous.watch)
        before = previous.signatures(candidates)
        looked, gone = {}, []
        for key in sorted(candidates):
            folder = layout.partition_dir(PartitionRef.parse(key))
            if folder.is_dir():
                looked[key] = _signature(str(folder))
            elif key in before:
                gone.append(key)
        maybe_busy, walked_at = log.partitions, previous.walked_at
    watch = sorted(k for k in maybe_busy | set(previous.watch if previous else ()) if writer_active(layout, k))
    changed = sorted(PartitionRef.parse(key) for key, signature in looked.items() if before.get(key) != signature)
    return Plan(looked, changed, gone, watch, log.identity, log.seq, log.token, walked_at, walk)


def _copy_rows(con: duckdb.DuckDBPyConnection, batches: Iterable[list[tuple]]) -> int:
    """Insert rows (``hash_index.COLUMNS`` order), a batch at a time."""
    copied = 0
    for rows in batches:
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
) -> tuple[dict | None, bool]:
    """Bring ``hash_index`` in ``con`` up to the lake's hash index: replace the rows of the keys changed since the
    previous cursor, or copy it whole. Returns (the new cursor, whether it was copied whole)."""
    with index_changes(layout, previous.index_cursor if previous else None, batch_size) as changes:
        if changes is None or changes.full:
            con.execute("DELETE FROM hash_index")
            if changes is None:
                return None, True
        elif changes.removed:
            con.register("removed_keys", pa.table({"sha256": pa.array(changes.removed, pa.string())}))
            con.execute("DELETE FROM hash_index WHERE sha256 IN (SELECT sha256 FROM removed_keys)")
            con.unregister("removed_keys")
        _copy_rows(con, changes.rows)
        return changes.cursor, changes.full


def _write_state(con: duckdb.DuckDBPyConnection, layout: LakeLayout, plan: Plan, index_cursor: dict | None) -> None:
    looked = pa.table({"partition": list(plan.looked), "signature": list(plan.looked.values())})
    if plan.walked:
        con.execute(f"CREATE OR REPLACE TABLE {PARTITION_STATE} (partition VARCHAR PRIMARY KEY, signature VARCHAR)")
    else:  # only the rows of the partitions looked at change
        con.register("forget", pa.table({"key": pa.array([*plan.looked, *plan.gone], pa.string())}))
        con.execute(f"DELETE FROM {PARTITION_STATE} WHERE partition IN (SELECT key FROM forget)")
        con.unregister("forget")
    con.register("looked", looked)
    con.execute(f"INSERT INTO {PARTITION_STATE} SELECT * FROM looked")
    con.unregister("looked")
    con.execute(
        f"CREATE OR REPLACE TABLE {STATE} (base VARCHAR, log_id VARCHAR, log_seq BIGINT, log_token VARCHAR, "
        "watch VARCHAR, walked_at DOUBLE, index_cursor VARCHAR)"
    )
    con.execute(
        f"INSERT INTO {STATE} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [str(layout.base), plan.log_id, plan.log_seq, plan.log_token, json.dumps(plan.watch), plan.walked_at,
         json.dumps(index_cursor)],
    )  # fmt: skip


def _fill(
    con: duckdb.DuckDBPyConnection, layout: LakeLayout, previous: PreviousBuild | None, plan: Plan, stats: pa.Table,
    batch_size: int,
) -> tuple[tuple[dict | None, bool], tuple[int, int, int, int]]:  # fmt: skip
    """Bring a database (new: ``partitions`` from ``stats`` already; or the copy of the previous one) up to the
    lake; return (the hash-index cursor, copied whole) and (partitions, files, rows, hash-index rows)."""
    if previous is None:
        has_files = bool(sum(stats["files"].to_pylist()))
        create_catalog_view(con, layout, has_files)
        create_hash_index_table(con)
    else:
        replace_partition_rows(con, plan.gone + [r.key for r in plan.changed], stats)
        has_files = con.execute("SELECT coalesce(sum(files), 0) FROM partitions").fetchall()[0][0] > 0
        if has_files != previous.had_files:
            create_catalog_view(con, layout, has_files)
    index = sync_hash_index(con, layout, previous, batch_size)
    _write_state(con, layout, plan, index[0])
    totals = con.execute(
        "SELECT count(*), coalesce(sum(files), 0), coalesce(sum(rows), 0), (SELECT count(*) FROM hash_index) "
        "FROM partitions"
    )
    return index, tuple(totals.fetchall()[0])


def refresh_duckdb(
    layout: LakeLayout,
    db_path: Path | str | None = None,
    batch_size: int = 50_000,
    walk: bool = False,
    rebuild: bool = False,
) -> dict:
    """Build or update a local lake's ``catalog.duckdb`` (``catalog`` view, ``partitions`` and ``hash_index``
    tables) and swap it in; return a summary (path, partitions, files, rows, assets, seconds; ``changed``: the
    partitions read again; ``incremental``: whether an old database was updated; ``walked``: whether every
    partition folder was looked at; ``index_copied``: whether the hash index was copied whole). ``walk``: look at
    every partition folder, not only those the change log names. ``rebuild``: build from scratch, the old file
    ignored (every footer read, the hash index copied whole: ``datalake catalog rebuild``). ``CatalogError``
    names an unreadable catalog file. Any lake: ``open_lake(base).refresh_warehouse()`` (an S3 lake's is
    :func:`.s3.refresh_duckdb_s3`)."""
    if not isinstance(layout, LakeLayout):
        raise TypeError(
            f"refresh_duckdb takes a LakeLayout (any lake: open_lake(base).refresh_warehouse()), got {layout!r}"
        )
    started = time.perf_counter()
    target = Path(db_path) if db_path is not None else layout.duckdb_file
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_sibling(target)
    try:
        base = str(layout.base)
        # another lake's file, or the lake moved (the view's glob): built anew
        opened = None if rebuild else open_copy(target, tmp, lambda con: _same_base(read_previous(con), base))
        previous = opened[1] if opened else None
        try:
            plan = plan_refresh(layout, previous, walk)
            check_catalog_files(layout, catalog_files(layout, plan.changed))
            stats = partition_stats(layout, plan.changed)
            args = (layout, previous, plan, stats, batch_size)
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
        prune_changes(layout, plan.log_seq)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    partitions, files, rows, assets = totals
    return {
        "path": str(target),
        "partitions": partitions,
        "files": files,
        "rows": rows,
        "assets": assets,
        "seconds": round(time.perf_counter() - started, 3),
        "changed": len(plan.changed),
        "incremental": previous is not None,
        "walked": plan.walked,
        "index_copied": index[1],
    }
