"""Reading the change journal of a PostgreSQL hash index (tables and triggers: ``pg_journal_tables.py``): what a
catalog refresh reads through ``index_changes.py`` instead of copying the whole index.

Why a reader cannot miss a commit: the journal's ``seq`` is handed out before commit, so commits land out of
``seq`` order (A takes 10, B takes 11 and commits, a reader reads, A commits). The cursor therefore holds the
reader's whole MVCC snapshot (``pg_current_snapshot()``: xmin, xmax and the transactions in progress), and the
next read takes exactly the entries whose transaction that snapshot did not see (``pg_visible_in_snapshot``, the
test MVCC itself applies; aborted transactions leave no entries). Snapshots only grow, so along a chain of
cursors every entry is read once: never missed, never delivered twice. ``xid >= xmin`` bounds the scan on the
``xid`` index, so a read costs what changed, not the index's size.

``removed`` is exact too: a key whose entries in the window are all inserts was absent at the previous
snapshot (re-inserting a key that snapshot held needs a delete of it in between, itself in the window), so the
consumer inserts it without deleting first; every other changed key is in ``removed``.

A full read instead: no cursor, another index (the identity joins the state row's uuid, the schema's oid and the
cluster's system identifier: a dropped and recreated schema, a restored dump, another server all differ), a
TRUNCATE in the window, or entries pruned that the cursor's snapshot had not seen.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .index_delta import IndexChanges

if TYPE_CHECKING:
    from .pg_index import PgHashIndex

_SNAPSHOT = re.compile(r"(\d+):(\d+):(\d+(,\d+)*)?")


@contextlib.contextmanager
def read_pg_changes(index: PgHashIndex, cursor: dict[str, Any] | None, batch_size: int) -> Iterator[IndexChanges]:
    """The changes of ``index`` since ``cursor`` (``index_changes.py``), every read in one REPEATABLE READ
    snapshot on this thread's connection, which must be idle. The cursor: ``{"identity": ..., "snapshot":
    "xmin:xmax:xip,..."}``."""
    conn = index.conn()
    if conn.get_transaction_status() != 0:  # TRANSACTION_STATUS_IDLE: SET TRANSACTION must come first
        raise RuntimeError(f"the connection to {index.path} is inside a transaction: cannot read its journal")
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # every cursor is read to its end: plan for that, not for its first rows (PostgreSQL's default)
            cur.execute("SET LOCAL cursor_tuple_fraction = 1")
            cur.execute(index.q["journal_open"], (index.schema,))
            snapshot, identity, pruned_xid = cur.fetchone()
            window = _window(cursor, identity, int(pruned_xid), int(snapshot.split(":")[1]))
            removed: list[str] = []
            if window is not None:
                cur.execute(index.q["journal_removed"], window)
                changed = cur.fetchall()
                if any(op == "t" for _, op in changed):
                    window = None
                removed = sorted({sha for sha, _ in changed})
        after = {"identity": identity, "snapshot": snapshot}
        if window is None:
            yield IndexChanges(after, True, _all_rows(conn, index, batch_size))
        else:
            yield IndexChanges(after, False, _changed_rows(conn, index, window, batch_size), removed)
    finally:
        if not conn.closed:  # read only: nothing to keep, and the next statement starts a fresh snapshot
            conn.rollback()


def _window(cursor: dict[str, Any] | None, identity: str, pruned_xid: int, xmax: int) -> dict | None:
    """The journal window after ``cursor`` as query parameters, or None when only a full read is right."""
    if not isinstance(cursor, dict) or cursor.get("identity") != identity:
        return None
    found = _SNAPSHOT.fullmatch(str(cursor.get("snapshot", "")))
    if found is None:
        return None
    xmin = int(found.group(1))
    if pruned_xid >= xmin:  # an entry the cursor's snapshot may not have seen is gone
        return None
    if int(found.group(2)) > xmax:  # transaction ids went back (a restored file-level backup keeps the identity)
        return None
    return {"xmin": str(xmin), "snapshot": found.group(0)}


def _all_rows(conn, index: PgHashIndex, batch_size: int) -> Iterator[list[tuple]]:
    with conn.cursor(name=f"journal_{uuid.uuid4().hex}") as cur:
        cur.itersize = batch_size
        cur.execute(index.q["iter_rows"])
        while rows := cur.fetchmany(batch_size):
            yield rows


def _changed_rows(conn, index: PgHashIndex, window: dict, batch_size: int) -> Iterator[list[tuple]]:
    """The current rows of the keys in ``window``, in key order; a batch may be short (deleted keys)."""
    with conn.cursor(name=f"journal_{uuid.uuid4().hex}") as keys, conn.cursor() as cur:
        keys.itersize = batch_size
        keys.execute(index.q["journal_keys"], window)
        while batch := keys.fetchmany(batch_size):
            cur.execute(index.q["journal_rows"], ([key for (key,) in batch],))
            if rows := cur.fetchall():
                yield rows
