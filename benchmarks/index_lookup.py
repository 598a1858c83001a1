"""Batched hash-index lookups at scale: SQLite (the single-host default) and PostgreSQL (``DATALAKE_INDEX_URL``).

    python benchmarks/index_lookup.py --entries 1000000            # quick run
    python benchmarks/index_lookup.py --entries 10000000           # the issue's size (a few minutes of build)
    python benchmarks/index_lookup.py --pg-url postgresql://...    # an existing server instead of a throwaway one

Target (issue 15): at 10M entries a batched lookup costs p50 and p99 <= 1 ms per file on both backends.

What is timed is what processing does: ``get_many`` of one chunk of files (``--batch``, processing's STORE_CHUNK of
64), half of them known and half new, through the real ``HashIndex`` / ``PgHashIndex`` classes. Per-file figures
are the call's time divided by the chunk size. The floor beside each figure is the same call against an index of
1,000 entries, measured in the same run: what is left above it is the cost of the size.

How N entries are made quickly (no ingest, no Python loop per row on the PostgreSQL side): entry ``i`` has the key
``sha256(str(i))``.
* PostgreSQL: one ``INSERT ... SELECT`` over ``generate_series(1, N)`` computing ``sha256()`` on the server, in key
  order (the primary key's B-tree is appended to, not split at random); the ``path`` index is dropped for the load
  and rebuilt once after it (a bulk build).
* SQLite: one ``INSERT ... SELECT`` over a recursive CTE, the key from a Python function registered with
  ``create_function``, ``ORDER BY`` key into the ``WITHOUT ROWID`` table, with the journal off for the load only
  (the index then reopens in WAL mode like the lake's).
Both are built right before they are measured, so their pages are in the OS cache (warm, as in a running ingest).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.core.ingest.hash_index import SCHEMA, HashIndex  # noqa: E402
from datalake_pipelines.core.ingest.pg_index import PgHashIndex  # noqa: E402

ROW_SQL = (
    "{key}, {key}, 'assets/provider=p/dataset=d/' || substr({key}, 1, 2) || '/' || substr({key}, 3, 2) || '/' || {key}"
    " || '.jpg', 1000 + i % 100000, 'image', 'JPEG', 640, 480, 'RGB', 'p', 'd', 'bench', '2026-12-01T00:00:00Z', 1, i"
)


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def build_sqlite(path: Path, n: int) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.create_function("k", 1, key, deterministic=True)
    conn.execute(SCHEMA)
    with conn:
        conn.execute(
            "INSERT INTO assets WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?)"
            f" SELECT {ROW_SQL.format(key='k(i)')} FROM s ORDER BY 1",
            (n,),
        )
    conn.close()
    return time.perf_counter() - started


def build_pg(url: str, schema: str, n: int) -> float:
    started = time.perf_counter()
    index = PgHashIndex(url, schema)  # creates the schema and tables like a lake's first use
    conn = index.conn()
    pg_key = "encode(sha256(i::text::bytea), 'hex')"
    with conn, conn.cursor() as cur:
        cur.execute(f"DROP INDEX {schema}.assets_path")
        rows = ROW_SQL.format(key=pg_key).replace("%", "%%")  # psycopg2's placeholders: a literal % doubled
        cur.execute(f"INSERT INTO {schema}.assets SELECT {rows} FROM generate_series(1, %s) i ORDER BY 1", (n,))
        cur.execute(f"CREATE INDEX assets_path ON {schema}.assets (path)")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {schema}.assets")
    index.close()
    return time.perf_counter() - started


def chunks(n: int, batch: int, count: int, seed: int) -> list[list[str]]:
    """``count`` lookup chunks of ``batch`` keys: half of entries 1..n, half unknown."""
    rng = random.Random(seed)
    out = []
    for c in range(count):
        known = [key(i) for i in rng.sample(range(1, n + 1), batch // 2)]
        unknown = [hashlib.sha256(f"new-{seed}-{c}-{j}".encode()).hexdigest() for j in range(batch - batch // 2)]
        out.append(sorted(known + unknown))
    return out


def per_file_ms(lookup: Callable[[list[str]], dict], work: list[list[str]], hits: int) -> list[float]:
    """Per-file milliseconds of each chunk's lookup (after a warm-up of a few chunks)."""
    for chunk in work[:5]:
        lookup(chunk)
    times = []
    for chunk in work:
        t0 = time.perf_counter()
        found = lookup(chunk)
        times.append((time.perf_counter() - t0) * 1000 / len(chunk))
        assert len(found) == hits, (len(found), hits)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from datalake_pipelines_tests.support.services import postgres_server

    with postgres_server() as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=64, help="keys per get_many (processing's chunk of files)")
    parser.add_argument("--lookups", type=int, default=1000, help="chunks timed per backend and size")
    parser.add_argument("--pg-url", default="", help="an existing PostgreSQL database (default: a throwaway server)")
    args = parser.parse_args()
    floor_n = 1000
    hits = args.batch // 2
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp, postgres(args.pg_url) as url:
        results: dict[tuple[str, str], list[float]] = {}
        builds = {}
        for label, n in (("floor", floor_n), ("size", args.entries)):
            work = chunks(n, args.batch, args.lookups, seed=n)
            path = Path(tmp) / f"hash_index_{n}.sqlite"
            builds[("sqlite", label)] = build_sqlite(path, n)
            builds[("postgres", label)] = build_pg(url, f"lake_bench{n}", n)
            sqlite_index = HashIndex(path)
            pg_index = PgHashIndex(url, f"lake_bench{n}")
            # alternate the backends in rounds: on a busy 2-core machine neither gets all the quiet moments
            for r in range(4):
                part = work[r::4]
                for name, index in (("sqlite", sqlite_index), ("postgres", pg_index)):
                    results.setdefault((name, label), []).extend(per_file_ms(index.get_many, part, hits))
            sqlite_index.close()
            pg_index.close()
            path.unlink()
        print(f"batched lookups: {args.batch} keys per get_many ({hits} known), {args.lookups} chunks per case")
        head = f"{'backend':<10} {'entries':>11} {'build s':>8} {'p50 ms/file':>12} {'p99 ms/file':>12}"
        print(f"{head}   floor (1,000 entries) p50 / p99")
        for name in ("sqlite", "postgres"):
            size, floor = results[(name, "size")], results[(name, "floor")]
            build = builds[(name, "size")]
            print(
                f"{name:<10} {args.entries:>11,} {build:>8.1f} {pct(size, 50):>12.4f} {pct(size, 99):>12.4f}"
                f"   {pct(floor, 50):.4f} / {pct(floor, 99):.4f}"
            )


if __name__ == "__main__":
    main()
