"""The DuckDB warehouse file ``<base>/catalog.duckdb`` and the catalog file facts it is built from.

A refresh (``refresh.refresh_duckdb``: incremental) writes the database under a temporary name and
``os.replace``-s it over the old one: readers that already hold the old file keep reading it (same inode), new
readers see the new one, and nobody ever sees a half-built database or waits on the builder's write lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DatalakeError
from ..ingest.hash_index import COLUMNS as HASH_INDEX_COLUMNS
from ..ingest.hash_index import INTEGER_COLUMNS as INDEX_INTEGER_COLUMNS
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.files import copy_file, read_json, temp_sibling
from .parts import PARTITION_COLUMNS, CatalogError, open_parquet, partition_files

T = TypeVar("T")
HIVE_TYPES = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in PARTITION_COLUMNS) + "}"
PARTITIONS_SCHEMA = pa.schema(
    [
        *(pa.field(c, pa.string()) for c in PARTITION_COLUMNS),
        pa.field("files", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("last_batch", pa.string()),
        pa.field("last_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
HASH_INDEX_SCHEMA = pa.schema(
    [pa.field(c, pa.int64() if c in INDEX_INTEGER_COLUMNS else pa.string()) for c in HASH_INDEX_COLUMNS]
)


class UnknownPartitionError(DatalakeError, ValueError):
    """A provider, dataset, task or variant filter names something the catalog does not hold."""


STALE_TEMP_SECONDS = 3600.0  # a refresh at work writes its temporary copy all along: one this old is left over


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def select_partitions(
    layout: LakeLayout,
    providers: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    variants: str | Sequence[str] | None = None,
) -> list[PartitionRef]:
    """Partitions matching the filters, listing only the folders of the filtered branches.

    A filter value that exists nowhere under the already selected branches raises
    :class:`UnknownPartitionError` listing what exists there.
    """
    return walk_partitions((providers, datasets, tasks, variants), layout.catalog_root, _folder_children)


def _folder_children(folder: Path, level: str) -> list[tuple[str, Path]]:
    prefix = f"{level}="
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return [(c.name[len(prefix) :], c) for c in folder.iterdir() if c.name.startswith(prefix) and c.is_dir()]
    return []


def walk_partitions(
    filters: Sequence[str | Sequence[str] | None],
    root: Any,
    children: Callable[[Any, str], list[tuple[str, Any]]],
    map_fn: Callable = map,
) -> list[PartitionRef]:
    """The level-by-level walk behind :func:`select_partitions`, over any tree: ``children(node, level)``
    returns ``(value, child)`` for the ``level=value`` sub-folders of ``node`` (a local folder, an S3 prefix);
    ``map_fn`` may run the listings of one level concurrently."""
    by_level = dict(zip(PARTITION_COLUMNS, map(_as_list, filters)))
    branches: list[tuple[tuple[str, ...], Any]] = [((), root)]
    for level in PARTITION_COLUMNS:
        wanted = by_level[level]
        existing: set[str] = set()
        selected = []
        listings = map_fn(children, [node for _, node in branches], [level] * len(branches))
        for (values, _), found in zip(branches, listings):
            for value, child in found:
                existing.add(value)
                if wanted is None or value in wanted:
                    selected.append(((*values, value), child))
        unknown = sorted(set(wanted or ()) - existing)
        if unknown:
            parents = PARTITION_COLUMNS[: PARTITION_COLUMNS.index(level)]
            earlier = [f"{k}={'|'.join(by_level[k] or ())}" for k in parents if by_level[k]]
            scope = f" under {', '.join(earlier)}" if earlier else ""
            raise UnknownPartitionError(
                f"unknown {level} {', '.join(map(repr, unknown))}; existing {level}s{scope}: "
                f"{', '.join(sorted(existing)) or '(none)'}"
            )
        branches = selected
    refs = []
    for values, _ in sorted(branches, key=lambda b: b[0]):
        with contextlib.suppress(ValueError):
            refs.append(PartitionRef(*values))
    return refs


def sql_string(value: str) -> str:
    """A SQL string literal (for DDL, where parameters are not allowed)."""
    return "'" + value.replace("'", "''") + "'"


def parquet_scan(source: str) -> str:
    """``read_parquet`` over ``source`` (a literal or a ``$parameter``) with hive columns as text."""
    return f"read_parquet({source}, hive_partitioning=true, union_by_name=true, hive_types={HIVE_TYPES})"


def catalog_files(layout: LakeLayout, refs: Iterable[PartitionRef] | None = None) -> list[Path]:
    """Every Parquet file of the given partitions (default: the whole catalog)."""
    refs = select_partitions(layout) if refs is None else refs
    return [path for ref in refs for path in partition_files(layout, ref)]


def check_catalog_files(layout: LakeLayout, paths: Iterable[Path] | None = None, deep: bool = False) -> int:
    """Open every catalog file's footer (``deep``: read every row group too); raise ``CatalogError`` naming
    the first unreadable file. Returns how many files were checked."""
    checked = 0
    for path in catalog_files(layout) if paths is None else paths:
        pf = open_parquet(path)
        if deep:
            try:
                for i in range(pf.num_row_groups):
                    pf.read_row_group(i)
            except (pa.ArrowException, OSError) as exc:
                raise CatalogError(f"cannot read catalog file {path}: {exc}") from None
        checked += 1
    return checked


def _last_batch(layout: LakeLayout, ref: PartitionRef) -> tuple[str | None, str | None]:
    path = layout.partition_metadata(ref)
    if not path.exists():
        return None, None
    try:
        return last_batch_of(read_json(path))
    except (OSError, ValueError):
        return None, None


def last_batch_of(doc: Any) -> tuple[str | None, str | None]:
    """``(job_id, ingested_at)`` of the latest batch a partition's ``_metadata.json`` document records."""
    try:
        batches = doc.get("batches") or []
    except AttributeError:
        return None, None
    batches = [b for b in batches if isinstance(b, dict)]
    if not batches:
        return None, None
    last = max(batches, key=lambda b: str(b.get("ingested_at") or ""))
    return last.get("job_id"), last.get("ingested_at")


def stats_row(ref: PartitionRef, files: int, rows: int, size: int, last: tuple[str | None, str | None]) -> dict:
    """One row of the ``partitions`` table (see ``PARTITIONS_SCHEMA``)."""
    return {
        **ref.as_dict(),
        "files": files,
        "rows": rows,
        "bytes": size,
        "last_batch": last[0],
        "last_ingested_at": _parse_time(last[1]),
    }


def partition_stats(layout: LakeLayout, refs: Iterable[PartitionRef] | None = None) -> pa.Table:
    """One row per partition: files, rows (from Parquet footers), bytes, last batch and its ingest time.

    Reads footers and ``_metadata.json`` only, never row data.
    """
    refs = select_partitions(layout) if refs is None else list(refs)
    rows: list[dict[str, Any]] = []
    for ref in refs:
        paths = partition_files(layout, ref)
        count = 0
        for path in paths:
            try:
                count += pq.read_metadata(path).num_rows
            except (pa.ArrowException, OSError) as exc:
                raise CatalogError(f"cannot read catalog file {path}: {exc}") from None
        size = sum(p.stat().st_size for p in paths)
        rows.append(stats_row(ref, len(paths), count, size, _last_batch(layout, ref)))
    return pa.Table.from_pylist(rows, schema=PARTITIONS_SCHEMA)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def create_catalog_view(con: duckdb.DuckDBPyConnection, layout: LakeLayout, has_files: bool) -> None:
    if has_files:
        glob = sql_string(str(layout.catalog_root / "**" / "*.parquet"))
        con.execute(f"CREATE OR REPLACE VIEW catalog AS SELECT * FROM {parquet_scan(glob)}")
    else:
        empty = ", ".join(f"NULL::VARCHAR AS {c}" for c in PARTITION_COLUMNS)
        con.execute(f"CREATE OR REPLACE VIEW catalog AS SELECT {empty} WHERE false")


def create_hash_index_table(con: duckdb.DuckDBPyConnection, temp: bool = False) -> None:
    columns = ", ".join(f"{f.name} {'BIGINT' if pa.types.is_integer(f.type) else 'VARCHAR'}" for f in HASH_INDEX_SCHEMA)
    con.execute(f"CREATE {'TEMP ' if temp else ''}TABLE hash_index ({columns})")


def build_database(target: Path, stats: pa.Table, fill: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Build a database under a temp name (``partitions`` from ``stats``, the rest by ``fill``), then
    ``os.replace`` it over ``target``; return what ``fill`` returned."""
    tmp = temp_sibling(target)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.register("partition_stats", stats)
            con.execute("CREATE TABLE partitions AS SELECT * FROM partition_stats ORDER BY ALL")
            con.unregister("partition_stats")
            assets = fill(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return assets


def remove_stale_temps(target: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove the temporary copies of ``target`` (and their WAL files) a refresh killed midway left, once
    ``older_than`` seconds old (a refresh at work writes its copy all along); return how many went."""
    removed, now = 0, time.time()
    for path in target.parent.glob(f".{target.name}.*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
                removed += 1
    return removed


def open_copy(
    target: Path, tmp: Path, read_state: Callable[[duckdb.DuckDBPyConnection], T | None]
) -> tuple[duckdb.DuckDBPyConnection, T] | None:
    """A copy of ``target`` at ``tmp`` (``copy_file``: a clone where the file system has reflinks), open, with
    what ``read_state`` reads of it; None when there is no file or no usable state (then the caller builds anew).
    The state is read from the copy, never from ``target``: DuckDB shares one database instance per path within
    a process, so a reader here still holding a replaced file would answer for the old one."""
    if not target.is_file():
        return None
    copy_file(target, tmp)
    try:
        con = duckdb.connect(str(tmp))
    except duckdb.Error:
        return None
    state = read_state(con)
    if state is None:
        con.close()
        return None
    return con, state


KEY_SQL = "provider || '/' || dataset || '/' || task || '/' || variant"  # a partitions row's partition key


def replace_partition_rows(con: duckdb.DuckDBPyConnection, stale: list[str], stats: pa.Table) -> None:
    """In an existing ``partitions`` table: delete the rows of the ``stale`` partition keys, insert ``stats``
    (``PARTITIONS_SCHEMA`` rows of the partitions read again). Both refreshes, local and S3, update it so."""
    if stale:
        con.register("__stale_partitions", pa.table({"key": pa.array(stale, pa.string())}))
        con.execute(f"DELETE FROM partitions WHERE {KEY_SQL} IN (SELECT key FROM __stale_partitions)")
        con.unregister("__stale_partitions")
    if stats.num_rows:
        con.register("__partition_stats", stats)
        con.execute("INSERT INTO partitions SELECT * FROM __partition_stats")
        con.unregister("__partition_stats")
