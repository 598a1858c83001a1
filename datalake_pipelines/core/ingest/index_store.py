"""Which hash index a lake on a folder uses: the one place that reads ``DATALAKE_INDEX_URL``'s meaning.

Unset (the single-host default): the SQLite file ``index/hash_index.sqlite`` in the lake (refused on a network
file system, ``mounts.py``). Set to ``postgresql://...``: the lake's schema in that database (``pg_index.py``),
the index that several hosts sharing the lake can write. Both are a :class:`~.hash_index.HashIndex` to callers;
the row index beside it comes from ``pg_rows.open_row_index(index)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...settings import load as load_settings
from .hash_index import HashIndex
from .pg_index import open_pg_index

if TYPE_CHECKING:
    from ..lake.layout import LakeLayout


def open_hash_index(layout: LakeLayout) -> HashIndex:
    """The lake's hash index, created on first use (the caller closes it)."""
    url = load_settings().index_url
    if url:
        return open_pg_index(url, layout.index_dir, layout.hash_index)
    return HashIndex(layout.hash_index)


def existing_hash_index(layout: LakeLayout) -> HashIndex | None:
    """The lake's hash index, or ``None`` when nothing was ingested yet (no SQLite file; PostgreSQL's is always
    there: its tables are created on first use)."""
    if load_settings().index_url or layout.hash_index.is_file():
        return open_hash_index(layout)
    return None
