"""The hash index in PostgreSQL (``DATALAKE_INDEX_URL``): one index that several hosts sharing a lake can write.

Same rows and methods as the SQLite :class:`~.hash_index.HashIndex` (it subclasses it only so that every caller
keeps one type; every method is replaced). What differs is what several writers need:

* lookups are one ``WHERE sha256 = ANY(%s)`` query per call (a B-tree probe per hash on the server);
* inserts are ``INSERT ... ON CONFLICT DO NOTHING RETURNING sha256``: two hosts storing the same new content at
  once both succeed, the first row wins, and the count returned is the rows this call really inserted (the
  ``RETURNING`` rows, never the rows sent). The caller swaps a lost entry for the winner's
  (``first_store.settle_new``). Rows go in key order so two writers of overlapping keys cannot deadlock;
* each lake has its own schema, named once by the file ``index/pg_schema`` in the lake (a random name written
  atomically by the first host once the schema exists, see :func:`open_pg_index`): the hosts of one NAS may mount
  it at different paths, so the path cannot be the name. The tables (and the row index's, ``pg_rows.py``) are
  created under an advisory lock, with the change journal a catalog refresh reads (``pg_journal_tables.py``: triggers,
  so every writer is recorded; a schema from before the journal gets it on its next open). The writers here
  also prune the journal now and then.

One connection per thread (processing looks up from its worker threads), all closed by :meth:`close`.
psycopg2 (the ``scale`` extra) is imported only when a PostgreSQL index is opened.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...settings import INDEX_URL_ENV
from ..errors import DatalakeError
from .hash_index import COLUMNS, HashIndex, IndexEntry
from .pg_journal_tables import QUERIES as JOURNAL_QUERIES
from .pg_journal_tables import install_journal, prune_journal

SCHEMA_FILE = "pg_schema"
_TYPES = {"size": "bigint", "width": "integer", "height": "integer", "orientation": "integer", "phash": "bigint"}
_NOT_NULL = {"sha256", "stored_sha256", "path", "size", "kind", "provider", "dataset", "first_batch_id", "created_at"}
TABLES = (
    "CREATE TABLE IF NOT EXISTS {s}.assets ("
    + ", ".join(f"{c} {_TYPES.get(c, 'text')}{' NOT NULL' if c in _NOT_NULL else ''}" for c in COLUMNS)
    + ", PRIMARY KEY (sha256))",
    "CREATE INDEX IF NOT EXISTS assets_path ON {s}.assets (path)",  # GC's remove_paths
    "CREATE TABLE IF NOT EXISTS {s}.row_partitions (id serial PRIMARY KEY, partition text NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS {s}.row_parts (id bigserial PRIMARY KEY, pid integer NOT NULL, part text NOT NULL,"
    " signature text NOT NULL, UNIQUE (pid, part))",
    "CREATE TABLE IF NOT EXISTS {s}.row_hashes (pid integer NOT NULL, h bytea NOT NULL, part bigint NOT NULL,"
    " PRIMARY KEY (pid, h))",
)
PAGE = 1000  # rows per multi-row statement
# Seconds libpq waits for the server to accept and answer (a URL's own ``connect_timeout`` wins): without it a
# server that accepts but never answers (a dead proxy, a full backlog) hangs every command forever.
CONNECT_TIMEOUT = 10


class IndexUnreachable(DatalakeError):
    """The index's database refused or did not answer (the CLI prints the message as one line)."""


class MissingSchema(DatalakeError):
    """The lake names a schema (``index/pg_schema``) that the database does not have."""


def read_schema(marker: Path) -> str:
    """The schema name held by ``marker`` (``index/pg_schema``)."""
    name = marker.read_text().strip()
    if not (name.startswith("lake_") and name[5:].isalnum()):
        raise ValueError(f"{marker} does not hold a schema name (lake_<letters and digits>): {name!r}")
    return name


def open_pg_index(url: str, index_dir: Path, sqlite_file: Path) -> PgHashIndex:
    """The lake's index in the database at ``url``: the schema ``index_dir/pg_schema`` names, which must exist.

    A lake without that file gets a new schema, created (with the rows of the lake's SQLite index ``sqlite_file``
    when there is one: the switch keeps dedup across datasets) *before* its name is published, atomically (a link
    fails on an existing name). So only the host that publishes the name ever created the schema, and a name
    whose schema is gone means the schema was dropped or the URL names another database: refused, never
    recreated empty (an empty index would store every image again). Two hosts starting together: the loser
    drops its own fresh schema and opens the winner's."""
    marker = index_dir / SCHEMA_FILE
    if marker.is_file():
        return PgHashIndex(url, read_schema(marker), create=False)
    name = f"lake_{uuid.uuid4().hex[:20]}"
    index = PgHashIndex(url, name)
    try:
        if sqlite_file.is_file():
            import_sqlite(index, sqlite_file)
        index_dir.mkdir(parents=True, exist_ok=True)
        tmp = index_dir / f".{SCHEMA_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(f"{name}\n")
        try:
            os.link(tmp, marker)
            won = True
        except FileExistsError:
            won = False
        finally:
            tmp.unlink(missing_ok=True)
    except BaseException:
        with contextlib.suppress(Exception):  # the import's own error is the one to report
            index.drop()
        raise
    if won:
        return index
    index.drop()
    return PgHashIndex(url, read_schema(marker), create=False)


def import_sqlite(index: PgHashIndex, sqlite_file: Path, batch: int = 20_000) -> int:
    """Copy the ``assets`` rows of a SQLite hash index into ``index``; return how many went in. The file is read
    read-only and never written (it may sit on the network share the switch is for)."""
    import sqlite3

    conn = sqlite3.connect(f"{sqlite_file.absolute().as_uri()}?mode=ro", uri=True)
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(assets)")}
        cols = ", ".join(c if c in have else "NULL" for c in COLUMNS)  # an old file lacks the optional columns
        cur = conn.execute(f"SELECT {cols} FROM assets ORDER BY sha256")
        added = 0
        while rows := cur.fetchmany(batch):
            added += index.add_many(IndexEntry(*row) for row in rows)
        return added
    finally:
        conn.close()


class PgHashIndex(HashIndex):
    """The hash index of one lake in the PostgreSQL database at ``url``, in schema ``schema``."""

    def __init__(self, url: str, schema: str, create: bool = True):
        """``create=False``: refuse (:class:`MissingSchema`) when the schema does not exist (``open_pg_index``).
        No ``super().__init__``: it would open a SQLite file."""
        self.url, self.schema = url, schema
        from psycopg2 import sql

        self.path = Path(f"{url.split('@')[-1]}#{schema}")  # for messages only: no password
        self._local = threading.local()
        self._all: list = []
        self._guard = threading.Lock()
        queries = {**_queries(), **JOURNAL_QUERIES}
        self.q = {name: sql.SQL(text).format(s=sql.Identifier(schema)) for name, text in queries.items()}
        conn = self.conn()
        try:
            with conn, conn.cursor() as cur:
                # concurrent CREATE ... IF NOT EXISTS of one name can still collide in the catalogs: one at a time
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
                if not create:
                    cur.execute("SELECT current_database(), count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
                    database, found = cur.fetchone()
                    if not found:
                        raise MissingSchema(_missing(url, schema, database))
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                for text in TABLES:
                    cur.execute(sql.SQL(text).format(s=sql.Identifier(schema)))
                install_journal(cur, self)
        except BaseException:
            self.close()
            raise

    @property
    def _conn(self):  # the SQLite connection of HashIndex: a caller that needs it must take the Pg twin instead
        raise TypeError("a PostgreSQL hash index has no SQLite connection (see pg_rows.open_row_index)")

    def conn(self):
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "pg", None)
        if conn is None or conn.closed:
            conn = self._local.pg = connect(self.url)
            with self._guard:
                self._all.append(conn)
        return conn

    def _rows(self, query: str, params: tuple) -> list[tuple]:
        conn = self.conn()
        with conn, conn.cursor() as cur:
            cur.execute(self.q[query], params)
            return cur.fetchall()

    def get(self, sha256: str) -> IndexEntry | None:
        return self.get_many([sha256]).get(sha256)

    def get_many(self, hashes: list[str]) -> dict[str, IndexEntry]:
        """Entries for the known hashes among ``hashes``: one query."""
        if not hashes:
            return {}
        return {row[0]: IndexEntry(*row) for row in self._rows("get_many", (list(hashes),))}

    def add_many(self, entries: Iterable[IndexEntry]) -> int:
        """Insert entries not yet present; return how many this call inserted (another host's row wins)."""
        from psycopg2.extras import execute_values

        rows = sorted(tuple(getattr(e, c) for c in COLUMNS) for e in entries)
        if not rows:
            return 0
        conn = self.conn()
        with conn, conn.cursor() as cur:
            inserted = execute_values(cur, self.q["add_many"], rows, page_size=PAGE, fetch=True)
            if inserted:
                prune_journal(cur, self)
        return len(inserted)

    def fill_phash(self, values: dict[str, int]) -> int:
        """Record ``sha256 -> phash`` where none is recorded yet; return how many rows changed."""
        from psycopg2.extras import execute_values

        pairs = sorted(values.items())
        changed = 0
        conn = self.conn()
        with conn, conn.cursor() as cur:
            for start in range(0, len(pairs), PAGE):
                execute_values(cur, self.q["fill_phash"], pairs[start : start + PAGE], "(%s, CAST(%s AS bigint))", PAGE)
                changed += cur.rowcount
            if changed:
                prune_journal(cur, self)
        return changed

    def remove_paths(self, paths: set[str] | list[str]) -> int:
        """Delete every entry whose stored ``path`` is one of ``paths``; return how many rows went."""
        chosen = sorted(paths)
        if not chosen:
            return 0
        conn = self.conn()
        with conn, conn.cursor() as cur:
            cur.execute(self.q["remove_paths"], (chosen,))
            removed = cur.rowcount
            if removed:
                prune_journal(cur, self)
            return removed

    def count(self) -> int:
        return int(self._rows("count", ())[0][0])

    def iter_rows(self, batch_size: int = 50_000) -> Iterator[list[tuple]]:
        """Every row in key order, a batch at a time (a server-side cursor: the table never sits in memory)."""
        conn = self.conn()
        with conn, conn.cursor(name=f"iter_{uuid.uuid4().hex}") as cur:
            cur.itersize = batch_size
            cur.execute(self.q["iter_rows"])
            while rows := cur.fetchmany(batch_size):
                yield rows

    def drop(self) -> None:
        """Drop this index's schema and close it: only for a schema whose name was never published."""
        from psycopg2 import sql

        try:
            conn = self.conn()
            with conn, conn.cursor() as cur:
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        finally:
            self.close()

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def connect(url: str):
    """A new connection to ``url``, with :data:`CONNECT_TIMEOUT` unless the URL sets its own.

    Raises :class:`IndexUnreachable` (host, port, database and libpq's reason on one line, never the password)
    when the server refuses, does not answer or rejects the login."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(url)
    extra = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        return psycopg2.connect(url, **extra)
    except psycopg2.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if params.get("password"):  # libpq does not echo it; should a message ever hold it, as a whole token only
            # (a bare replace turned the password "t" into "connec***ion ***o server")
            reason = re.sub(rf"(?<!\w){re.escape(params['password'])}(?!\w)", "***", reason)
        where = (
            f"user {params.get('user', '(default)')} at {params.get('host', 'the local socket')}:"
            f"{params.get('port', 5432)}, database {params.get('dbname', '(default)')}"
        )
        raise IndexUnreachable(
            f"cannot connect to the hash index database of {INDEX_URL_ENV} ({where}): {reason or type(exc).__name__}"
        ) from None


def _missing(url: str, schema: str, database: str) -> str:
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(url)
    where = f"{params.get('host', 'the local socket')}:{params.get('port', 5432)}"
    return (
        f"the lake's index/pg_schema names the PostgreSQL schema {schema}, but database "
        f"{database} at {where} ({INDEX_URL_ENV}) has no such schema: it was dropped, or "
        f"{INDEX_URL_ENV} names another database than the one the lake's index was created in. Set "
        f"{INDEX_URL_ENV} to the lake's database, or restore the schema; only to start a new index, delete the "
        "lake's index/pg_schema (the new index starts empty, or from index/hash_index.sqlite when the lake has one: "
        "an image already stored is then stored again when it arrives in another dataset)"
    )


def _queries() -> dict[str, str]:
    cols = ", ".join(COLUMNS)
    return {
        "get_many": f"SELECT {cols} FROM {{s}}.assets WHERE sha256 = ANY(%s)",
        "add_many": f"INSERT INTO {{s}}.assets ({cols}) VALUES %s ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
        # one statement per page, its rows locked in key order first (pages ascend): a later statement of the
        # transaction would see rows committed meanwhile, so a lock taken up front could not cover them
        "fill_phash": "WITH v (h, p) AS (VALUES %s), locked AS MATERIALIZED (SELECT a.sha256 FROM {s}.assets a"
        " JOIN v ON a.sha256 = v.h WHERE a.phash IS NULL ORDER BY a.sha256 FOR UPDATE OF a)"
        " UPDATE {s}.assets a SET phash = v.p FROM v, locked l WHERE a.sha256 = v.h AND a.sha256 = l.sha256",
        # rows locked in key order, as add_many inserts them: two hosts changing the same rows never deadlock
        "remove_paths": "DELETE FROM {s}.assets WHERE sha256 IN"
        " (SELECT sha256 FROM {s}.assets WHERE path = ANY(%s) ORDER BY sha256 FOR UPDATE)",
        "count": "SELECT count(*) FROM {s}.assets",
        "iter_rows": f"SELECT {cols} FROM {{s}}.assets ORDER BY sha256",
    }
