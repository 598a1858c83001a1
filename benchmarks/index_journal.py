"""What the SQLite hash index's journal (triggers filling ``index_journal``) costs a writer, and what a catalog
refresh's read of it costs on a large index.

    python benchmarks/index_journal.py                    # 200,000 entries, 2,000 new per write, 7 rounds

1. ``HashIndex.add_many`` of ``--rows`` new entries into an index with the journal and into one without
   (``journal=False``, what the S3 segment cache uses: the floor), rounds alternated, medians.
2. A read of the changes after one new entry (``index_journal.read_sqlite_changes`` from the previous cursor),
   next to a whole read of the index (what a refresh did before the journal).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry  # noqa: E402
from datalake_pipelines.core.ingest.index_journal import read_sqlite_changes  # noqa: E402


def entries(start: int, count: int) -> list[IndexEntry]:
    out = []
    for i in range(start, start + count):
        h = hashlib.sha256(str(i).encode()).hexdigest()
        out.append(IndexEntry(h, h, f"assets/{h[:2]}/{h[2:4]}/{h}.jpg", 50_000 + i % 999, "image", "JPEG", 640, 480,
                              "RGB", "aihub", "bench", f"job-{i // 2000}", "2026-12-01T00:00:00+00:00", 1))  # fmt: skip
    return out


def read_all(path: Path, cursor: dict | None) -> tuple[float, dict, int]:
    started = time.perf_counter()
    with read_sqlite_changes(path, cursor, 50_000) as changes:
        assert changes is not None
        rows = sum(len(batch) for batch in changes.rows)
        return time.perf_counter() - started, changes.cursor, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datalake-journal-") as tmp:
        indexes = {name: HashIndex(Path(tmp) / f"{name}.sqlite", journal=name == "journal") for name in
                   ("journal", "floor")}  # fmt: skip
        for index in indexes.values():
            index.add_many(entries(0, args.entries))
        times: dict[str, list[float]] = {name: [] for name in indexes}
        next_id = args.entries
        for _ in range(args.rounds):
            batch = entries(next_id, args.rows)
            next_id += args.rows
            for name, index in indexes.items():
                started = time.perf_counter()
                assert index.add_many(batch) == args.rows
                times[name].append(time.perf_counter() - started)
        journal, floor = (statistics.median(times[k]) for k in ("journal", "floor"))
        print(f"add_many of {args.rows:,} new entries into {args.entries:,} (median of {args.rounds} alternating)")
        print(f"  with the journal {journal * 1000:7.1f} ms   floor (no journal) {floor * 1000:7.1f} ms   "
              f"{journal / floor:4.2f}x")  # fmt: skip

        path = Path(tmp) / "journal.sqlite"
        whole, cursor, rows = read_all(path, None)
        reads = []
        for _ in range(args.rounds):
            indexes["journal"].add_many(entries(next_id, 1))
            next_id += 1
            seconds, cursor, got = read_all(path, cursor)
            assert got == 1, got
            reads.append(seconds)
        print(f"a refresh's read after 1 new entry: {statistics.median(reads) * 1000:.2f} ms; the whole index "
              f"({rows:,} rows) {whole * 1000:.0f} ms")  # fmt: skip
        for index in indexes.values():
            index.close()


if __name__ == "__main__":
    main()
