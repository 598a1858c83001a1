"""The PostgreSQL hash index's change journal (``pg_journal.py``): what its triggers cost a writer, and what a
catalog refresh's read costs on a large index.

    python benchmarks/pg_journal.py                               # 1M entries, a throwaway server
    python benchmarks/pg_journal.py --pg-url postgresql://...     # an existing server

1. ``add_many`` of ``--rows`` new entries (2,000: a few processing chunks) into three schemas, rounds alternated:
   no journal (triggers dropped: the floor), the statement-level triggers shipped, and row-level triggers (one
   function call per row) for comparison. Medians per variant.
2. An index of ``--entries`` rows (one ``INSERT ... SELECT`` over ``generate_series``, journaled like any insert:
   the journal then holds as many entries), a full read (what every refresh did before), then rounds of "one
   new row, read since the previous cursor". Floor: a read with nothing new, and a bare ``SELECT 1``.
3. One pruning of a tenth of the journal, what a writer pays now and then.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.core.ingest.hash_index import COLUMNS, IndexEntry  # noqa: E402
from datalake_pipelines.core.ingest.pg_index import PgHashIndex  # noqa: E402
from datalake_pipelines.core.ingest.pg_journal import read_pg_changes  # noqa: E402
from datalake_pipelines.core.ingest.pg_journal_tables import prune_journal  # noqa: E402

ROW_SQL = (
    "k, k, 'assets/provider=p/dataset=d/' || substr(k, 1, 2) || '/' || k || '.jpg', 1000 + i % 100000, 'image',"
    " 'JPEG', 640, 480, 'RGB', 'p', 'd', 'bench', '2026-12-01T00:00:00Z', 1, NULL"
)
ROW_TRIGGER = (
    "CREATE OR REPLACE FUNCTION {s}.journal_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " INSERT INTO {s}.index_journal (sha256, op) VALUES (NEW.sha256, 'i'); RETURN NULL; END $$;"
    " CREATE TRIGGER journal_row AFTER INSERT ON {s}.assets FOR EACH ROW EXECUTE FUNCTION {s}.journal_row()"
)
DROP_TRIGGERS = "DROP TRIGGER journal_insert ON {s}.assets"


def entry(tag: str, i: int) -> IndexEntry:
    key = uuid.uuid5(uuid.NAMESPACE_OID, f"{tag}{i}").hex * 2
    return IndexEntry(
        key, key, f"assets/provider=p/dataset=d/{key[:2]}/{key}.jpg", 100 + i, "image", "JPEG", 64, 48, "RGB",
        "p", "d", "bench", "2026-12-01T00:00:00Z", 1, None,
    )  # fmt: skip


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from datalake_pipelines_tests.support.services import postgres_server

    with postgres_server() as pg:
        yield pg.url


def run(index: PgHashIndex, text: str) -> None:
    conn = index.conn()
    with conn, conn.cursor() as cur:
        cur.execute(text.replace("{s}", index.schema))


def writer_cost(url: str, rows: int, rounds: int) -> None:
    variants = {name: PgHashIndex(url, f"lake_bench{name}{uuid.uuid4().hex[:8]}") for name in ("none", "stmt", "row")}
    run(variants["none"], DROP_TRIGGERS)
    run(variants["row"], DROP_TRIGGERS + "; " + ROW_TRIGGER)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, index in variants.items():
            batch = [entry(f"{name}{r}-", i) for i in range(rows)]
            started = time.perf_counter()
            assert index.add_many(batch) == rows
            times[name].append(time.perf_counter() - started)
    for name, index in variants.items():
        print(f"add_many of {rows} new rows, journal {name:4}: median {statistics.median(times[name]) * 1000:7.1f} ms"
              f"  (min {min(times[name]) * 1000:.1f}, max {max(times[name]) * 1000:.1f}, {rounds} rounds)")  # fmt: skip
        index.drop()


def reader_cost(url: str, entries: int, rounds: int) -> None:
    index = PgHashIndex(url, f"lake_benchread{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    run(index, f"INSERT INTO {{s}}.assets ({', '.join(COLUMNS)}) SELECT {ROW_SQL} FROM (SELECT i,"
        f" encode(sha256(i::text::bytea), 'hex') AS k FROM generate_series(1, {entries}) i) g ORDER BY k")  # fmt: skip
    run(index, "ANALYZE {s}.assets; ANALYZE {s}.index_journal")
    print(f"built {entries} rows (and as many journal entries) in {time.perf_counter() - started:.1f} s")

    def read(cursor):
        started = time.perf_counter()
        with read_pg_changes(index, cursor, 50_000) as changes:
            count = sum(len(b) for b in changes.rows)
            return time.perf_counter() - started, changes.cursor, count, changes.full

    took, cursor, count, full = read(None)
    print(f"full read of {count} rows: {took:.2f} s")
    one, none, bare = [], [], []
    for r in range(rounds):
        index.add_many([entry("read", r)])
        took, cursor, count, full = read(cursor)
        assert count == 1 and not full
        one.append(took)
        took, cursor, count, full = read(cursor)
        assert count == 0 and not full
        none.append(took)
        conn = index.conn()
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        bare.append(time.perf_counter() - started)
    for name, values in (("1 new row", one), ("nothing new (floor)", none), ("bare SELECT 1 (floor)", bare)):
        print(f"read after {name:22}: median {statistics.median(values) * 1000:6.2f} ms"
              f" (max {max(values) * 1000:.2f}, {rounds} rounds)")  # fmt: skip
    conn = index.conn()
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        gone = prune_journal(cur, index, keep=entries - entries // 10 - 1)
    print(f"pruning {gone} journal entries: {time.perf_counter() - started:.2f} s")
    took, cursor, count, full = read(cursor)
    print(f"read after the pruning (cursor had seen everything): {took * 1000:.2f} ms, full={full}")
    index.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with server(args.pg_url) as url:
        writer_cost(url, args.rows, args.rounds)
        reader_cost(url, args.entries, args.rounds)


if __name__ == "__main__":
    main()
