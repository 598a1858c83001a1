"""What the catalog references: the asset paths in catalog and retained part files, read from the lake's storage.

Both backends read the same way: every Parquet file is opened through ``storage.arrow()`` (a local file, or
pyarrow's S3 file system), and only its stored-file columns (``<col>`` with a ``<col>_sha256`` beside it, see
``ingest/verify.py``) and, when batches are filtered, ``batch_id`` are read.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..catalog.parts import BATCH_ID, CatalogError
from ..errors import DatalakeError
from ..ingest.verify import stored_file_columns
from ..lake import keys
from ..storage.backends import ObjectInfo, Storage

DATA_FILE_BATCH_PREFIX = "file-"  # first_batch_id of a create_data_file entry (core/ingest/data_file.py)


def who() -> str:
    """``user@host`` of this process (from the password database: the environment is settings.py's alone)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def parquet_objects(storage: Storage, prefix: str) -> list[ObjectInfo]:
    """Catalog Parquet files under ``prefix`` (hidden and ``_`` names, temporary files, are not data)."""
    return [
        o
        for o in storage.list(prefix)
        if o.key.endswith(".parquet") and not o.key.rsplit("/", 1)[-1].startswith((".", "_"))
    ]


def open_part(storage: Storage, key: str) -> pq.ParquetFile:
    """A catalog file of the lake opened for reading (CatalogError naming it when unreadable)."""
    fs, root = storage.arrow()
    try:
        return pq.ParquetFile(fs.open_input_file(f"{root}/{key}"))
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"cannot read catalog file {storage.uri}/{key}: {exc}") from None


@dataclass
class PartRefs:
    """One part file split by a deletion: asset paths of the rows kept and of the rows deleted, and row counts."""

    kept: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    rows: int = 0
    rows_deleted: int = 0


def part_references(storage: Storage, key: str, drop: frozenset[str] | None = None) -> PartRefs:
    """Asset paths the rows of one part file reference. ``drop`` is the deleted ``batch_id`` values (``None``: no
    row is deleted; an empty set is never passed for "all": use :func:`all_dropped`)."""
    pf = open_part(storage, key)
    names = pf.schema_arrow.names
    columns = stored_file_columns(names)
    wanted = columns + ([BATCH_ID] if drop and BATCH_ID in names else [])
    out = PartRefs()
    gone = pa.array(sorted(drop or ()), pa.string())
    for batch in pf.iter_batches(columns=wanted or None, batch_size=65_536):
        table = pa.Table.from_batches([batch])
        out.rows += table.num_rows
        mask = None
        if drop and BATCH_ID in table.column_names:
            mask = pc.fill_null(pc.is_in(table.column(BATCH_ID), value_set=gone), False)
            out.rows_deleted += pc.sum(mask.cast(pa.int64())).as_py() or 0
        for col in columns:
            if mask is None:
                out.kept.update(p for p in table.column(col).to_pylist() if p)
                continue
            out.deleted.update(p for p in table.filter(mask).column(col).to_pylist() if p)
            out.kept.update(p for p in table.filter(pc.invert(mask)).column(col).to_pylist() if p)
    return out


def all_dropped(storage: Storage, key: str) -> PartRefs:
    """Every row of a part file deleted (a whole partition, dataset or provider)."""
    refs = part_references(storage, key)
    return PartRefs(set(), refs.kept, refs.rows, refs.rows)


class CatalogChanged(DatalakeError):
    """A catalog file listed a moment ago is gone (a compaction or deletion replaced it): list again."""


def references(storage: Storage, prefixes: Iterable[str], skip: AbstractSet[str] = frozenset()) -> set[str]:
    """Every asset path referenced by a Parquet file under ``prefixes`` (files in ``skip`` left out), listed in the
    order given. Raises :class:`CatalogChanged` when a listed file is gone by the time it is read."""
    files = [o.key for p in prefixes for o in parquet_objects(storage, p) if o.key not in skip]

    def read(key: str) -> set[str]:
        try:
            return part_references(storage, key).kept
        except CatalogError:
            if not storage.exists(key):
                raise CatalogChanged(key) from None
            raise

    found: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for kept in pool.map(read, files):
            found |= kept
    return found


def data_file_roots(index) -> set[str]:
    """Assets stored by ``create_data_file`` (no row references them; the caller keeps their id): never garbage."""
    if index is None:
        return set()
    roots: set[str] = set()
    for rows in index.iter_rows():
        roots.update(r[2] for r in rows if str(r[11]).startswith(DATA_FILE_BATCH_PREFIX))
    return roots


def lake_references(
    lake, skip: AbstractSet[str] = frozenset(), attempts: int = 5, with_retained: bool = True
) -> set[str]:
    """The mark of GC: asset paths referenced by the catalog, by retained catalog files (kept for time travel
    until the retention passes; not with ``with_retained=False``) and the ``create_data_file`` roots. ``skip``:
    catalog keys not to read.

    ``catalog/`` is listed before ``catalog_retained/``, and a deletion copies a file there before it removes it
    from the catalog, so a row a concurrent deletion removes is seen in one or the other. A file a concurrent
    compaction replaced between the listing and the reading makes the mark start again (its rows are in a file
    the listing missed), up to ``attempts`` times; then :class:`CatalogChanged` is raised and nothing is swept."""
    for attempt in range(attempts):
        try:
            found = references(lake.storage, (keys.CATALOG, keys.RETAINED) if with_retained else (keys.CATALOG,), skip)
            break
        except CatalogChanged:
            if attempt == attempts - 1:
                raise
    with lake.hash_index() as index:
        found |= data_file_roots(index)
    return found


def sizes(storage: Storage, paths: Iterable[str]) -> dict[str, int]:
    """``path -> bytes`` of the existing ones among ``paths`` (one stat or HEAD each, 16 at a time)."""

    def size(path: str) -> int | None:
        try:
            return storage.info(path).size
        except FileNotFoundError:
            return None

    chosen = sorted(paths)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return {p: n for p, n in zip(chosen, pool.map(size, chosen)) if n is not None}
