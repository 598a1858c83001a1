"""The SQLite hash index's journal: which keys changed, in commit order, for an incremental catalog refresh.

``index_journal(seq, sha256, op)`` is filled by triggers on ``assets`` (op ``i``, ``u`` or ``d``), in the writer's
transaction, so every path that writes the index is recorded, whoever wrote it. SQLite has one writer at a time
and ``AUTOINCREMENT`` never reuses a number, so the entries after a ``seq`` are exactly the changes committed
after a reader saw that ``seq``. ``index_identity`` holds a uuid made when the journal was created: a cursor
names it, so a rebuilt or replaced index file is never read as a continuation of another.

The journal and its triggers are created by :class:`~.hash_index.HashIndex` (``JOURNAL_DDL`` there); it keeps the
newest ``KEEP`` entries (pruned by writers, a range delete on the rowid): a reader more
than that behind copies the whole index, which it would cost about as much to catch up on anyway.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .hash_index import COLUMNS
from .index_delta import IndexChanges


def _head(con: sqlite3.Connection) -> tuple[str, int, int | None] | None:
    """(identity, last seq handed out, oldest seq kept) of the journal; None when the file has none yet."""
    try:
        identity = con.execute("SELECT id FROM index_identity").fetchone()
        last = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'index_journal'").fetchone()
        oldest = con.execute("SELECT min(seq) FROM index_journal").fetchone()[0]
    except sqlite3.OperationalError:  # no such table: an index no writer has opened since the journal existed
        return None
    if identity is None:
        return None
    return identity[0], last[0] if last else 0, oldest


def _entry(con: sqlite3.Connection, seq: int) -> list[str] | None:
    found = con.execute("SELECT sha256, op FROM index_journal WHERE seq = ?", (seq,)).fetchone()
    return list(found) if found else None


def _batches(cursor: sqlite3.Cursor, batch_size: int) -> Iterator[list[tuple]]:
    while rows := cursor.fetchmany(batch_size):
        yield rows


@contextlib.contextmanager
def read_sqlite_changes(path: Path, cursor: dict[str, Any] | None, batch_size: int) -> Iterator[IndexChanges | None]:
    """:class:`IndexChanges` of the SQLite index at ``path`` since ``cursor`` (``{"index": identity, "seq": n,
    "entry": [sha256, op]}``, the journal entry ``n``),
    read in one WAL snapshot held for the block; None when there is no index file. A file without a journal
    (written by an older version, not opened for writing since) is read whole, with a cursor that forces a whole
    read next time too."""
    if not path.is_file():
        yield None
        return
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        con.execute("BEGIN")  # the snapshot starts at the first read below and lasts until the connection closes
        columns = ", ".join(COLUMNS)
        head = _head(con)
        if head is None:
            rows = con.execute(f"SELECT {columns} FROM assets ORDER BY sha256")
            yield IndexChanges({"index": None, "seq": 0}, True, _batches(rows, batch_size))
            return
        identity, last, oldest = head
        after = cursor.get("seq") if cursor and cursor.get("index") == identity else None
        # entries pruned past the cursor: the oldest kept is beyond the next one wanted (or none is kept at all)
        if isinstance(after, int) and after < last and (oldest is None or oldest > after + 1):
            after = None
        # the cursor's own entry, read again: another one there means the file went back (restored from a copy
        # taken before it), and the entries after it are not the ones the copy in DuckDB followed
        if isinstance(after, int) and after > 0 and cursor and cursor.get("entry") is not None:
            if _entry(con, after) != cursor["entry"]:
                after = None
        new_cursor = {"index": identity, "seq": last, "entry": _entry(con, last)}
        if not isinstance(after, int) or after > last:
            rows = con.execute(f"SELECT {columns} FROM assets ORDER BY sha256")
            yield IndexChanges(new_cursor, True, _batches(rows, batch_size))
            return
        removed = [r[0] for r in con.execute(
            "SELECT DISTINCT sha256 FROM index_journal WHERE seq > ? AND op != 'i' ORDER BY sha256", (after,)
        )]  # fmt: skip
        rows = con.execute(
            f"SELECT {columns} FROM assets WHERE sha256 IN "
            "(SELECT DISTINCT sha256 FROM index_journal WHERE seq > ?) ORDER BY sha256",
            (after,),
        )
        yield IndexChanges(new_cursor, False, _batches(rows, batch_size), removed)
    finally:
        con.close()
