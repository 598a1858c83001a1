"""An S3 lake's ``catalog.duckdb`` refresh after one new part: the full build (as before the incremental refresh)
against the incremental refresh, alternating rounds, on moto in its own process (no added latency).

    python benchmarks/s3_refresh.py --partitions 500 --rounds 5

Each round adds a part (and rewrites ``_metadata.json``) in one partition, then refreshes. The floor is one
listing of the catalog (what an incremental refresh with no change costs at least). Requests: boto3's
(listings, ``_metadata.json`` GETs, the upload) plus the footers pyarrow reads (a ranged GET or two each).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.core.catalog.s3 import S3Catalog, refresh_duckdb_s3  # noqa: E402
from datalake_pipelines.core.catalog.warehouse import HASH_INDEX_SCHEMA, build_database  # noqa: E402
from datalake_pipelines.core.lake import keys  # noqa: E402
from datalake_pipelines.core.lake.layout import PartitionRef  # noqa: E402
from datalake_pipelines.core.storage.backends import S3Storage  # noqa: E402
from datalake_pipelines.core.storage.pool import s3_map  # noqa: E402
from datalake_pipelines_tests.support.s3_server import MotoS3  # noqa: E402


def part(n: int, job: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"lang": ["en"] * n, "batch_id": [job] * n}), sink)
    return sink.getvalue()


def metadata(job: str, at: str) -> bytes:
    return json.dumps({"batches": [{"job_id": job, "ingested_at": at, "rows": 3}]}).encode()


def full_build(base: str, target: Path, storage: S3Storage) -> None:
    """What ``refresh_duckdb_s3`` did before it was incremental: select, list every partition (twice), read every
    footer, ``_metadata.json`` and segment."""
    catalog = S3Catalog(base, storage)
    refs = catalog.select()
    catalog.fragments(catalog.files(refs))
    build_database(target, catalog.stats(refs), catalog.build_hash_index)
    storage.upload(target, keys.DUCKDB)


def counted(storage: S3Storage, footers: list[str], fn) -> tuple[float, int, int]:
    calls: list[str] = []
    handler = storage.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    footers.clear()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    storage.client.meta.events.unregister("before-call.s3", handler)
    return seconds, len(calls), len(footers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=500)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    footers: list[str] = []
    real = S3Catalog._fragment

    def spy(self, uri):
        footers.append(uri)
        return real(self, uri)

    S3Catalog._fragment = spy  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp, MotoS3(process=True) as moto, moto.environment():
        import os

        os.environ["DATALAKE_CACHE_DIR"] = f"{tmp}/cache"
        boto3.client("s3").create_bucket(Bucket="bench")
        base = "s3://bench/lake"
        storage = S3Storage(base)
        refs = [PartitionRef(f"p{i % 10}", f"d{i // 10 % 10}", "ocr", f"v{i // 100}") for i in range(args.partitions)]
        body = part(3, "job-0")
        objects = [(keys.part_file(r, "job-0"), body) for r in refs]
        objects += [(keys.partition_metadata(r), metadata("job-0", "2024-01-01T00:00:00+00:00")) for r in refs]
        sink = io.BytesIO()
        rows = [{"sha256": f"{i:064x}", "path": f"assets/{i}.jpg", "created_at": "2024-01-01"} for i in range(200)]
        pq.write_table(pa.Table.from_pylist(rows, schema=HASH_INDEX_SCHEMA), sink)
        objects += [(keys.index_segment(f"job-{i}"), sink.getvalue()) for i in range(args.segments)]
        s3_map(lambda kv: storage.write_bytes(*kv), objects)
        full_target, incremental_target = Path(tmp) / "full.duckdb", Path(tmp) / "incremental.duckdb"
        refresh_duckdb_s3(base, incremental_target, storage)  # the previous file
        results: dict[str, list[tuple[float, int, int]]] = {"full build": [], "incremental": [], "floor": []}
        for round_ in range(args.rounds):
            ref = refs[(round_ * 37) % len(refs)]
            job = f"job-r{round_}"
            storage.write_bytes(keys.part_file(ref, job), part(2, job))
            storage.write_bytes(keys.partition_metadata(ref), metadata(job, f"2024-02-0{round_ + 1}T00:00:00+00:00"))
            order = ["full build", "incremental"] if round_ % 2 == 0 else ["incremental", "full build"]
            for kind in order:
                if kind == "full build":
                    results[kind].append(counted(storage, footers, lambda: full_build(base, full_target, storage)))
                else:
                    results[kind].append(
                        counted(storage, footers, lambda: refresh_duckdb_s3(base, incremental_target, storage))
                    )
            results["floor"].append(counted(storage, footers, lambda: list(storage.list(keys.CATALOG))))
        print(f"{args.partitions} partitions, {args.segments} segments, medians of {args.rounds} rounds (moto)")
        for kind, runs in results.items():
            seconds = statistics.median(r[0] for r in runs)
            print(f"{kind:12s} {seconds:7.3f} s   boto3 requests {runs[-1][1]:5d}   footers read {runs[-1][2]:5d}")


if __name__ == "__main__":
    main()
