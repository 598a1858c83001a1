"""GC benchmark: ``datalake gc`` on a lake of N assets, half referenced by a catalog partition, next to a floor.

    python benchmarks/gc.py --assets 10000 [--rounds 3] [--s3]

The lake is written directly (assets, one compacted partition referencing every other asset, hash-index entries
for all), on a local folder or, with ``--s3``, on moto's S3 server over HTTP. Rounds alternate, so a warm cache
or a busy neighbour favours neither:
  floor  list every asset with its size and modification time: ``os.walk`` + ``stat`` (local), the paginated
         ``ListObjectsV2`` of ``assets/`` (S3), which GC's sweep cannot avoid
  mark   ``collect_garbage(dry_run=True)``: read the catalog's references, list and classify every asset
Then one real sweep (index entries removed, then the unreferenced half deleted, 1000 per request on S3).
Times are printed per 10k assets.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.lifecycle.gc import collect_garbage

REF = PartitionRef("bench", "gc", "raw", "image")


def build(lake, n: int, local_root: Path | None) -> None:
    """Write ``n`` distinct assets, a partition referencing the even ones, and an index entry for each."""
    entries = []
    for i in range(n):
        data = f"asset {i}".encode()
        sha = hashlib.sha256(data).hexdigest()
        path = keys.asset(REF.provider, REF.dataset, sha, "bin")
        entries.append(
            (data, IndexEntry(sha, sha, path, len(data), "file", None, None, None, None, "bench", "gc", "b1", "t"))
        )
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda e: lake.storage.write_bytes(e[1].path, e[0]), entries))
    kept = [e for i, (_, e) in enumerate(entries) if i % 2 == 0]
    table = pa.table(
        {
            "image": [e.path for e in kept],
            "image_sha256": [e.sha256 for e in kept],
            "batch_id": ["b1"] * len(kept),
            "row_hash": [f"r{i}" for i in range(len(kept))],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "data.parquet"
        pq.write_table(table, part)
        lake.storage.upload(part, keys.compacted_file(REF))
    index_entries = [e for _, e in entries]
    if local_root is not None:
        index = HashIndex(LakeLayout(local_root).hash_index)
        index.add_many(index_entries)
        index.close()
    else:
        from datalake_pipelines.core.ingest.s3_index import segment_bytes

        lake.storage.write_bytes(keys.index_segment("bench"), segment_bytes(index_entries))


def floor(lake, local_root: Path | None) -> int:
    if local_root is None:
        return sum(1 for _ in lake.storage.list(keys.ASSETS))
    n = 0
    for dirpath, _dirs, files in os.walk(local_root / keys.ASSETS):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n


def timed(fn) -> tuple[float, object]:
    """Seconds ``fn()`` took, and what it returned."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(base: str, n: int, rounds: int, local_root: Path | None) -> None:
    lake = open_lake(base)
    t, _ = timed(lambda: build(lake, n, local_root))
    print(f"built {n} assets in {t:.1f} s on {base}")
    per = 10_000 / n
    floors, marks = [], []
    for _ in range(rounds):
        floors.append(timed(lambda: floor(lake, local_root))[0])
        t_mark, report = timed(lambda: collect_garbage(lake, dry_run=True, grace_seconds=0))
        assert isinstance(report, dict) and report["collected"] == n // 2, report
        marks.append(t_mark)
    t_sweep, sweep = timed(lambda: collect_garbage(lake, grace_seconds=0, retention_seconds=0))
    assert isinstance(sweep, dict) and sweep["collected"] == sweep["index_entries_removed"] == n // 2, sweep
    f, m = min(floors), min(marks)
    ratio = m / f
    print(f"per 10k assets (best of {rounds}): floor {f * per:.2f} s, gc mark+classify {m * per:.2f} s ({ratio:.1f}x)")
    print(f"real sweep of {n // 2} of {n} assets: {t_sweep * per:.2f} s per 10k assets listed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="on moto's S3 server (HTTP) instead of a local folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.s3:
            run(str(Path(tmp) / "lake"), args.assets, args.rounds, Path(tmp) / "lake")
            return 0
        import boto3

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from datalake_pipelines_tests.support.s3_server import MotoS3

        with MotoS3() as moto:
            os.environ.update(moto.env)  # a benchmark script, not the package: it sets up its own endpoint
            os.environ["DATALAKE_CACHE_DIR"] = str(Path(tmp) / "cache")
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            run(f"s3://{bucket}/lake", args.assets, args.rounds, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
