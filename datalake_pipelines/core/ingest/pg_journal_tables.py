"""The change journal of a PostgreSQL hash index (``pg_index.py``): its tables, triggers and pruning. Read by
``pg_journal.py``.

Triggers on ``{s}.assets`` write one ``{s}.index_journal`` entry per key an INSERT, UPDATE or DELETE touched, in
the writer's own transaction, so every writer is recorded, whatever its code (another host's older release, a
hand-typed statement). They are statement-level with transition tables: one ``INSERT ... SELECT`` per statement
instead of a function call per row, and ``ON CONFLICT DO NOTHING`` rows that lost to another host are in no
transition table, so two hosts inserting one key journal one insert. A TRUNCATE journals a marker that sends
readers to a full read. Each entry carries its transaction's id (``xid``, indexed): what a reader selects on.

Pruning (:func:`prune_journal`, from the writer paths of ``pg_index.py``) keeps about the newest :data:`KEEP`
entries and records in the state row the newest transaction id it deleted (``pruned_xid``), so "entries pruned
that a cursor had not seen" is read from that row, never guessed from the journal's oldest entry (an emptied
journal would pass for "nothing changed"). The state row also holds the index's identity (a uuid, made once).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from .hash_index import COLUMNS

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
    # the keys, then their rows a batch at a time: plans that stay index probes whatever the window's estimate
    # (a young journal has no statistics: a join planned on a guess scanned all of assets)
    "journal_keys": f"SELECT DISTINCT sha256 FROM {{s}}.index_journal WHERE {_WINDOW} ORDER BY sha256",
    "journal_rows": f"SELECT {', '.join(COLUMNS)} FROM {{s}}.assets WHERE sha256 = ANY(%s) ORDER BY sha256",
    "journal_span": "SELECT (SELECT max(seq) FROM {s}.index_journal), pruned_seq FROM {s}.index_journal_state",
    "journal_prune": "WITH gone AS (DELETE FROM {s}.index_journal WHERE seq <= %(bound)s RETURNING xid)"
    " UPDATE {s}.index_journal_state SET pruned_seq = %(bound)s,"
    " pruned_xid = GREATEST(pruned_xid, (SELECT max(xid) FROM gone)) RETURNING (SELECT count(*) FROM gone)",
}


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
