"""The 2M-row partition case: adding a 1,000-row batch to a partition of 2M rows vs to an empty partition.

    python benchmarks/partition_scale.py --rows 2000000 --batch 1000 --rounds 5

Target (issue 14, item 3): the big-partition batch costs at most 1.5 x the empty-partition batch, on a local lake
and on S3 (moto's server in its own process). Rounds alternate the two cases and the medians are compared.

The big partition is built quickly, not through ingest: one seed batch is ingested (it sets the partition's
``_metadata.json`` and schema contract), then a part file ``part-bulk.parquet`` of ``--rows`` rows in the seed
part's schema is written directly with pyarrow (unique random ``row_hash`` values) and recorded as batch ``bulk``
in ``_metadata.json``. Its row-index entries come from the documented lazy path: the first use of the partition
reads the part's ``row_hash`` column once (locally into ``index/hash_index.sqlite``; on S3 into the cache, with a
row-hash segment published for the part). That one-time build is timed and printed apart, next to what the old
per-batch scan of the partition's ``row_hash`` column costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.client import DatalakeClient  # noqa: E402
from datalake_pipelines.core.catalog.parts import ROW_HASH  # noqa: E402
from datalake_pipelines.core.lake import keys  # noqa: E402
from datalake_pipelines.core.lake.layout import PartitionRef  # noqa: E402
from datalake_pipelines_tests.support.s3_server import MotoS3  # noqa: E402

META = {"lang": "ko", "src": "real"}
BIG = PartitionRef("aihub", "scale", "ocr", "big")
TARGET = 1.5


def stage(client: DatalakeClient, ref: PartitionRef, values: list[str]) -> None:
    client.upload_task_data(pa.table({"text": values}), ref.provider, ref.dataset, ref.task, ref.variant, META)


def process(client: DatalakeClient) -> tuple[float, int]:
    """Seconds of ``process_pending`` (the core, no Dagster) and rows added."""
    started = time.perf_counter()
    results = client.process_pending()
    seconds = time.perf_counter() - started
    assert [r.status for r in results] == ["done"], [(r.status, r.error) for r in results]
    return seconds, sum(r.rows_added for r in results)


def bulk_part(seed: pa.Schema, rows: int, path: Path) -> None:
    """``rows`` rows in the seed part's schema, unique random row hashes, written in 128k-row groups."""
    chunk = 131_072
    with pq.ParquetWriter(path, seed, compression="zstd") as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            blob = os.urandom(32 * n).hex()
            columns = {
                ROW_HASH: [blob[64 * i : 64 * i + 64] for i in range(n)],
                "text": [f"bulk row {start + i}" for i in range(n)],
                "batch_id": ["bulk"] * n,
            }
            arrays = [
                pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
                for f in seed
                if f.name != "ingested_at"
            ]
            names = [f.name for f in seed if f.name != "ingested_at"]
            table = pa.table(dict(zip(names, arrays)))
            if "ingested_at" in seed.names:
                stamp = pa.array([time.time_ns() // 1000] * n, pa.int64()).cast(seed.field("ingested_at").type)
                table = table.append_column("ingested_at", stamp)
            writer.write_table(table.select(seed.names))


def build_big_partition(client: DatalakeClient, rows: int, work: Path) -> dict[str, float]:
    """The seed batch, the bulk part and its ``_metadata.json`` entry; then the one-time row-index build."""
    stage(client, BIG, ["seed row"])
    process(client)
    storage = client.lake.storage
    [seed_key] = [o.key for o in storage.list(keys.partition(BIG) + "/") if o.key.endswith(".parquet")]
    storage.download(seed_key, work / "seed.parquet")
    local = work / "part-bulk.parquet"
    started = time.perf_counter()
    bulk_part(pq.read_schema(work / "seed.parquet"), rows, local)
    built = time.perf_counter() - started
    storage.upload(local, keys.part_file(BIG, "bulk"))
    meta = json.loads(storage.read_bytes(keys.partition_metadata(BIG)))
    meta["batches"].append({"job_id": "bulk", "rows": rows, "created_at": None, "ingested_at": None})
    meta["row_count"] = sum(b["rows"] for b in meta["batches"])
    storage.write_bytes(keys.partition_metadata(BIG), json.dumps(meta).encode())
    started = time.perf_counter()
    pq.read_table(local, columns=[ROW_HASH]).column(0).to_pylist()
    scan = time.perf_counter() - started  # what every batch paid before the row index (locally; S3 added a download)
    started = time.perf_counter()
    row_dedup(client).prepare(BIG)
    index_build = time.perf_counter() - started
    return {"write_part_s": built, "old_scan_s": scan, "index_build_s": index_build}


def row_dedup(client: DatalakeClient):
    """The lake's row index through its documented lazy path (``RowDedup.prepare`` reads a new part once)."""
    from datalake_pipelines.core.ingest.hash_index import HashIndex
    from datalake_pipelines.core.ingest.row_index import LocalRowDedup, RowIndex
    from datalake_pipelines.core.ingest.s3_rows import S3RowSegments

    lake = client.lake
    if hasattr(lake, "layout"):
        return LocalRowDedup(lake.layout, RowIndex(HashIndex(lake.layout.hash_index)))
    cache = lake.index_cache()
    return S3RowSegments(lake.storage, cache.index, cache.folder)


def measure(base: str, rows: int, batch: int, rounds: int, work: Path) -> dict[str, object]:
    client = DatalakeClient(base, num_proc=2, batch_size=1000, progress=False)
    setup = build_big_partition(client, rows, work)
    big, empty = [], []
    for r in range(rounds):
        values = [f"round {r} row {i}" for i in range(batch)]
        for case in ("big", "empty") if r % 2 == 0 else ("empty", "big"):
            ref = BIG if case == "big" else PartitionRef("aihub", "scale", "ocr", f"empty{r}")
            stage(client, ref, values)
            seconds, added = process(client)
            assert added == batch, (case, added)
            (big if case == "big" else empty).append(seconds)
    again = [f"round 0 row {i}" for i in range(batch)]  # a re-upload into the big partition adds nothing
    stage(client, BIG, again)
    _seconds, added = process(client)
    assert added == 0, added
    return {**setup, "big": big, "empty": empty}


def report(name: str, rows: int, batch: int, r: dict) -> None:
    big, empty = statistics.median(r["big"]), statistics.median(r["empty"])
    ratio = big / empty
    print(
        f"{name:<6}{batch:>7,}-row batch into {rows:,} rows: {big:6.3f} s | into an empty partition: {empty:6.3f} s"
        f" | ratio {ratio:4.2f} x (target <= {TARGET} x: {'met' if ratio <= TARGET else 'NOT met'})"
    )
    print(
        f"{'':<6}rounds big {[round(s, 3) for s in r['big']]} empty {[round(s, 3) for s in r['empty']]}; one-time:"
        f" bulk part written {r['write_part_s']:.1f} s, row index built {r['index_build_s']:.1f} s; the old per-batch"
        f" scan of row_hash alone: {r['old_scan_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="partition-scale-"))
    try:
        (work / "local").mkdir()
        local = measure(str(work / "lake"), args.rows, args.batch, args.rounds, work / "local")
        report("local", args.rows, args.batch, local)
        if not args.skip_s3:
            (work / "s3").mkdir()
            with MotoS3(process=True) as moto, moto.environment():
                os.environ["DATALAKE_CACHE_DIR"] = str(work / "cache")
                boto3.client("s3").create_bucket(Bucket="bench-lake")
                s3 = measure("s3://bench-lake/lake", args.rows, args.batch, args.rounds, work / "s3")
            report("s3", args.rows, args.batch, s3)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
