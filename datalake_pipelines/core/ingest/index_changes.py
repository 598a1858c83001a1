"""What changed in a lake's hash index since a cursor: what a ``catalog.duckdb`` refresh copies (``refresh.py``).

Both backends keep a journal beside ``assets``, written by triggers in the writer's own transaction, so no
writer can change the index without it being recorded:

- SQLite (``index_journal.py``): ``index_journal(seq INTEGER PRIMARY KEY AUTOINCREMENT, sha256, op)``. SQLite
  has one writer at a time, so ``seq`` follows commit order and "every entry after the cursor's ``seq``" is exact.
- PostgreSQL (``pg_journal.py``): sequence numbers are handed out before commit, so they do not follow commit
  order; the reader also re-reads the entries of transactions that were still open at its previous read.

A reader answers with the current rows of the keys changed (``removed`` first deleted, then ``rows`` inserted:
applying one twice gives the same table), or with the whole index (``full``) when it cannot say: no cursor yet,
another index (its identity differs: a rebuilt file, another schema), or entries pruned past the cursor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...settings import load as load_settings
from .index_delta import IndexChanges

__all__ = ["IndexChanges", "index_changes"]

if TYPE_CHECKING:
    from ..lake.layout import LakeLayout


@contextlib.contextmanager
def index_changes(layout: LakeLayout, cursor: dict[str, Any] | None, batch_size: int) -> Iterator[IndexChanges | None]:
    """The changes of ``layout``'s hash index since ``cursor`` (None: all of it), read in one snapshot that lasts
    for the block; None when the lake has no index yet."""
    if load_settings().index_url:
        from .index_store import existing_hash_index
        from .pg_journal import read_pg_changes

        shared = existing_hash_index(layout)
        if shared is None:
            yield None
            return
        try:
            with read_pg_changes(shared, cursor, batch_size) as changes:  # type: ignore[arg-type]
                yield changes
        finally:
            shared.close()
        return
    from .index_journal import read_sqlite_changes

    with read_sqlite_changes(layout.hash_index, cursor, batch_size) as changes:
        yield changes
