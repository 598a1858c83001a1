"""The change journal of a PostgreSQL hash index (``pg_index.py``): what a catalog refresh reads through
``index_changes.py`` instead of copying the whole index.

Triggers on ``{s}.assets`` write one ``{s}.index_journal`` entry per key an INSERT, UPDATE or DELETE touched, in
the writer's own transaction, so every writer is recorded, whatever its code (another host's older release, a
hand-typed statement). The triggers are statement-level with transition tables: one ``INSERT ... SELECT`` per
statement, and ``ON CONFLICT DO NOTHING`` rows that lost to another host are in no transition table, so two
hosts inserting one key journal one insert. A TRUNCATE journals a marker that sends readers to a full read.

Why a reader cannot miss a commit: ``seq`` is handed out before commit, so commits land out of ``seq`` order.
The cursor therefore holds the reader's whole MVCC snapshot (``pg_current_snapshot()``: xmin, xmax and the
transactions in progress), and the next read takes exactly the entries whose transaction that snapshot did not
see (``pg_visible_in_snapshot``, the test MVCC itself applies): every entry is read by exactly one reader of a
chain of cursors, never twice, never zero times. ``xid >= xmin`` bounds the scan on the ``xid`` index, so a
read costs what changed, not the index's size.

``removed`` is exact too: a key whose entries in the window are all inserts was absent at the previous
snapshot (re-inserting a key the previous snapshot held needs a delete of it in between, itself in the
window), so the consumer inserts it without deleting first; every other changed key is in ``removed``.

Full reads: no cursor, another index (the identity names the state row's uuid, the schema's oid and the
cluster's system identifier: a dropped and recreated schema, a restored dump or another server all differ), a
TRUNCATE in the window, or entries pruned that the cursor had not seen. Pruning (:func:`prune_journal`, from
the writer paths) keeps about the newest :data:`KEEP` entries and records the newest transaction id it deleted
(``pruned_xid``) in the state row, so the test "pruned past the cursor" reads that row, never the journal's
oldest entry, and an emptied journal cannot fool it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .hash_index import COLUMNS
from .index_changes import IndexChanges

if TYPE_CHECKING:
    from .pg_index import PgHashIndex

VERSION = 1  # of the journal's tables, function and triggers: an older schema is brought up to it on open
KEEP = 1_000_000  # journal entries kept; pruning starts once a tenth more were written
_OPS = {  # TG_OP: what the journal gets (an UPDATE may change a key: both count)
    "INSERT": "SELECT sha256, 'i' FROM new_rows",
    "UPDATE": "SELECT sha256, 'u' FROM old_rows UNION SELECT sha256, 'u' FROM new_rows",
    "DELETE": "SELECT sha256, 'd' FROM old_rows",
    "TRUNCATE": "VALUES ('', 't')",  # no rows to name: a marker that sends readers to a full read
}
_BODY = " ".join(
    f"IF TG_OP = '{op}' THEN INSERT INTO {{s}}.index_journal (sha256, op) {rows}; END IF;" for op, rows in _OPS.items()
)
JOURNAL = (
    "CREATE TABLE IF NOT EXISTS {s}.index_journal (seq bigserial PRIMARY KEY,"
    ' xid xid8 NOT NULL DEFAULT pg_current_xact_id(), sha256 text NOT NULL, op "char" NOT NULL)',
    "CREATE INDEX IF NOT EXISTS index_journal_xid ON {s}.index_journal (xid)",  # a read scans xid >= its xmin
    "CREATE TABLE IF NOT EXISTS {s}.index_journal_state (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " identity uuid NOT NULL, version integer NOT NULL, pruned_seq bigint NOT NULL DEFAULT 0,"
    " pruned_xid xid8 NOT NULL DEFAULT '0')",
    "CREATE OR REPLACE FUNCTION {s}.journal_assets() RETURNS trigger LANGUAGE plpgsql AS"
    f" $$ BEGIN {_BODY} RETURN NULL; END $$",
    "CREATE OR REPLACE TRIGGER journal_insert AFTER INSERT ON {s}.assets REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION {s}.journal_assets()",
    "CREATE OR REPLACE TRIGGER journal_update AFTER UPDATE ON {s}.assets REFERENCING OLD TABLE AS old_rows"
    " NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.journal_assets()",
    "CREATE OR REPLACE TRIGGER journal_delete AFTER DELETE ON {s}.assets REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION {s}.journal_assets()",
    "CREATE OR REPLACE TRIGGER journal_truncate AFTER TRUNCATE ON {s}.assets"
    " FOR EACH STATEMENT EXECUTE FUNCTION {s}.journal_assets()",
)
_WINDOW = "xid >= %(xmin)s::xid8 AND NOT pg_visible_in_snapshot(xid, %(snapshot)s::pg_snapshot)"
QUERIES = {
    "journal_version": "SELECT version FROM {s}.index_journal_state",
    "journal_stamp": "INSERT INTO {s}.index_journal_state (identity, version) VALUES (%s, %s)"
    " ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
    # the first statement of a reading transaction: the snapshot it returns is the one every read uses
    "journal_open": "SELECT pg_current_snapshot()::text, j.identity::text || '/' || n.oid::text || '/'"
    " || c.system_identifier::text, j.pruned_xid::text FROM {s}.index_journal_state j, pg_namespace n,"
    " pg_control_system() c WHERE n.nspname = %s",
    "journal_removed": f"SELECT DISTINCT sha256, op FROM {{s}}.index_journal WHERE {_WINDOW} AND op <> 'i'",
    "journal_rows": f"SELECT {', '.join(COLUMNS)} FROM {{s}}.assets WHERE sha256 IN"
    f" (SELECT sha256 FROM {{s}}.index_journal WHERE {_WINDOW}) ORDER BY sha256",
    "journal_span": "SELECT (SELECT max(seq) FROM {s}.index_journal), pruned_seq FROM {s}.index_journal_state",
    "journal_prune": "WITH gone AS (DELETE FROM {s}.index_journal WHERE seq <= %(bound)s RETURNING xid)"
    " UPDATE {s}.index_journal_state SET pruned_seq = %(bound)s,"
    " pruned_xid = GREATEST(pruned_xid, (SELECT max(xid) FROM gone)) RETURNING (SELECT count(*) FROM gone)",
}
_SNAPSHOT = re.compile(r"(\d+):(\d+):(\d+(,\d+)*)?")


def install_journal(cur, index: PgHashIndex) -> None:
    """Create the journal of ``schema`` (or bring it to :data:`VERSION`): the caller holds the schema's advisory
    lock. Skipped when current: replacing a trigger locks ``assets`` against every writer of every host."""
    from psycopg2 import sql

    cur.execute("SELECT to_regclass(%s)", (f'"{index.schema}".index_journal_state',))
    if cur.fetchone()[0] is not None:
        cur.execute(index.q["journal_version"])
        found = cur.fetchone()
        if found is not None and found[0] >= VERSION:
            return
    for text in JOURNAL:
        cur.execute(sql.SQL(text).format(s=sql.Identifier(index.schema)))
    # a new identity only where none was: a journal brought up to date keeps its readers' cursors valid
    cur.execute(index.q["journal_stamp"], (str(uuid.uuid4()), VERSION))


def prune_journal(cur, index: PgHashIndex, keep: int | None = None) -> int:
    """In a writer's transaction: when more than ``keep`` (:data:`KEEP`) and a tenth entries were written since
    the last pruning, delete all but the newest ``keep``; return how many went. One index probe otherwise; a
    second writer finding the pruning taken skips it instead of waiting."""
    keep = KEEP if keep is None else keep
    cur.execute(index.q["journal_span"])
    top, pruned = cur.fetchone()
    if top is None or top - pruned <= keep + keep // 10:
        return 0
    cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"{index.schema} journal pruning",))
    if not cur.fetchone()[0]:
        return 0
    cur.execute(index.q["journal_prune"], {"bound": top - keep})
    return int(cur.fetchone()[0])


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
            cur.execute(index.q["journal_open"], (index.schema,))
            snapshot, identity, pruned_xid = cur.fetchone()
            window = _window(cursor, identity, int(pruned_xid))
            removed: list[str] = []
            if window is not None:
                cur.execute(index.q["journal_removed"], window)
                changed = cur.fetchall()
                if any(op == "t" for _, op in changed):
                    window = None
                removed = sorted({sha for sha, _ in changed})
        after = {"identity": identity, "snapshot": snapshot}
        if window is None:
            yield IndexChanges(after, True, _batches(conn, index.q["iter_rows"], None, batch_size))
        else:
            yield IndexChanges(after, False, _batches(conn, index.q["journal_rows"], window, batch_size), removed)
    finally:
        conn.rollback()  # read only: nothing to keep, and the next statement starts a fresh snapshot


def _window(cursor: dict[str, Any] | None, identity: str, pruned_xid: int) -> dict | None:
    """The journal window after ``cursor`` as query parameters, or None when only a full read is right."""
    if not isinstance(cursor, dict) or cursor.get("identity") != identity:
        return None
    found = _SNAPSHOT.fullmatch(str(cursor.get("snapshot", "")))
    if found is None:
        return None
    xmin = int(found.group(1))
    if pruned_xid >= xmin:  # an entry the cursor's snapshot may not have seen is gone
        return None
    return {"xmin": str(xmin), "snapshot": found.group(0)}


def _batches(conn, query, params: dict | None, batch_size: int) -> Iterator[list[tuple]]:
    with conn.cursor(name=f"journal_{uuid.uuid4().hex}") as cur:
        cur.itersize = batch_size
        cur.execute(query, params)
        while rows := cur.fetchmany(batch_size):
            yield rows
