"""The row-hash index in PostgreSQL: :class:`~.row_index.RowIndex`'s tables in the lake's schema (``pg_index.py``).

Same tables, same rules (part files the truth, :meth:`RowIndex.reconcile` under the partition's lock before every
lookup, inherited unchanged); only the SQL differs: ``ON CONFLICT`` for SQLite's ``INSERT OR IGNORE``, ``RETURNING``
for ``total_changes``, ``= ANY(%s)`` for a list of ``?``. :func:`open_row_index` picks the twin that fits an index.
"""

from __future__ import annotations

from collections.abc import Iterable

from .hash_index import HashIndex
from .pg_index import PgHashIndex
from .row_index import LOOKUP_CHUNK, RowIndex, pack, unpack

_QUERIES = {
    "pid_add": "INSERT INTO {s}.row_partitions (partition) VALUES (%s) ON CONFLICT (partition) DO NOTHING",
    "pid": "SELECT id FROM {s}.row_partitions WHERE partition = %s",
    "parts": "SELECT part, signature FROM {s}.row_parts JOIN {s}.row_partitions p ON p.id = pid WHERE p.partition = %s",
    "part_set": "INSERT INTO {s}.row_parts (pid, part, signature) VALUES (%s, %s, %s) ON CONFLICT (pid, part)"
    " DO UPDATE SET signature = excluded.signature RETURNING id",
    "hashes_add": "INSERT INTO {s}.row_hashes (pid, h, part) VALUES %s ON CONFLICT (pid, h) DO NOTHING RETURNING 1",
    "resign": "UPDATE {s}.row_parts SET signature = %s WHERE pid = %s AND part = %s",
    "forget_hashes": "DELETE FROM {s}.row_hashes WHERE pid = %s",
    "forget_parts": "DELETE FROM {s}.row_parts WHERE pid = %s",
    "part_id": "SELECT id FROM {s}.row_parts WHERE pid = %s AND part = %s",
    "seen": "SELECT h FROM {s}.row_hashes WHERE pid = %s AND h = ANY(%s) AND part != %s",
    "hashes": "SELECT h FROM {s}.row_hashes JOIN {s}.row_partitions p ON p.id = pid WHERE p.partition = %s",
}


class PgRowIndex(RowIndex):
    """The row-hash tables of a :class:`PgHashIndex` (created with it), on its per-thread connections."""

    def __init__(self, index: PgHashIndex):  # no super().__init__: it would create SQLite tables
        from psycopg2 import sql  # the scale extra: only when a PostgreSQL index is opened

        self.index = index
        self.pg = index
        self.q = {k: sql.SQL(v).format(s=sql.Identifier(index.schema)) for k, v in _QUERIES.items()}

    def _pid_of(self, cur, partition: str, create: bool = False) -> int | None:
        if create:
            cur.execute(self.q["pid_add"], (partition,))
        cur.execute(self.q["pid"], (partition,))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def parts(self, partition: str) -> dict[str, str]:
        conn = self.pg.conn()
        with conn, conn.cursor() as cur:
            cur.execute(self.q["parts"], (partition,))
            return dict(cur.fetchall())

    def record(self, partition: str, part: str, signature: str, hashes: Iterable[str | None]) -> int:
        from psycopg2.extras import execute_values

        keys = sorted({pack(h) for h in hashes if h})
        conn = self.pg.conn()
        with conn, conn.cursor() as cur:
            pid = self._pid_of(cur, partition, create=True)
            cur.execute(self.q["part_set"], (pid, part, signature))
            part_id = cur.fetchone()[0]
            added = execute_values(cur, self.q["hashes_add"], [(pid, k, part_id) for k in keys], None, 5000, True)
            return len(added)

    def resign(self, partition: str, part: str, signature: str) -> None:
        conn = self.pg.conn()
        with conn, conn.cursor() as cur:
            cur.execute(self.q["resign"], (signature, self._pid_of(cur, partition), part))

    def forget(self, partition: str) -> None:
        conn = self.pg.conn()
        with conn, conn.cursor() as cur:
            pid = self._pid_of(cur, partition)
            cur.execute(self.q["forget_hashes"], (pid,))
            cur.execute(self.q["forget_parts"], (pid,))

    def seen(self, partition: str, hashes: list[str], exclude_part: str | None = None) -> set[str]:
        conn = self.pg.conn()
        found: set[str] = set()
        with conn, conn.cursor() as cur:
            pid = self._pid_of(cur, partition)
            if pid is None:
                return found
            cur.execute(self.q["part_id"], (pid, exclude_part or ""))
            row = cur.fetchone()
            excluded = -1 if row is None else row[0]
            for start in range(0, len(hashes), LOOKUP_CHUNK * 10):  # one round trip per 5,000 hashes
                keys = [pack(h) for h in hashes[start : start + LOOKUP_CHUNK * 10]]
                cur.execute(self.q["seen"], (pid, keys, excluded))
                found.update(unpack(bytes(r[0])) for r in cur.fetchall())
        return found

    def hashes(self, partition: str) -> set[str]:
        conn = self.pg.conn()
        with conn, conn.cursor() as cur:
            cur.execute(self.q["hashes"], (partition,))
            return {unpack(bytes(r[0])) for r in cur.fetchall()}


def open_row_index(index: HashIndex) -> RowIndex:
    """The row index stored beside ``index``: in its PostgreSQL schema, or in its SQLite file."""
    return PgRowIndex(index) if isinstance(index, PgHashIndex) else RowIndex(index)
