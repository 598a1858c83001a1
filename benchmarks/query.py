"""Benchmark DuckDBClient and download() against raw DuckDB SQL over the same catalog files.

    .venv/bin/python benchmarks/query.py                      # 1,000,000 rows in 100 partitions
    .venv/bin/python benchmarks/query.py --rows 100000 --partitions 20 --download-rows 20000   # quick run
    .venv/bin/python benchmarks/query.py --no-downloads --s3-rows 0     # query rows only (search vs LIKE scan)

Builds a synthetic catalog (OCR-style JSON, image columns pointing at real JPEG assets) with the core's
``PartWriter``, then prints: operation, client ms, raw DuckDB ms, ratio. Downloads run in a child process
so their peak RSS (``resource.getrusage``) is their own.

S3 case (``--s3-rows``, default 100,000 in 20 partitions; 0 skips it): a smaller catalog is uploaded to moto's
S3 server (its own process, on loopback) and the same client calls run on ``s3://`` and on the local copy:
S3 with a reused client (footers cached), S3 with a new client per call (listing + footers each time), local.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
from PIL import Image

from datalake_pipelines.core.catalog.parts import PartWriter, record_batch_in_partition
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.catalog.warehouse import parquet_scan
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef

WORDS = ["total", "amount", "date", "tax", "paid", "receipt", "order", "customer", "address", "qty", "price"]
NEEDLE = "invoice"


def partition_ref(i: int) -> PartitionRef:
    return PartitionRef(f"prov{i // 20}", f"ds{(i // 5) % 4}", "ocr", f"v{i % 5}")


def make_assets(layout: LakeLayout, ref: PartitionRef, count: int, seed: int) -> list[dict]:
    assets = []
    for k in range(count):
        image = Image.new("RGB", (64, 48), ((seed * 7 + k) % 256, (k * 13) % 256, 90))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=80)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = layout.asset_relpath(ref.provider, ref.dataset, sha, "jpg")
        path = layout.resolve(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        assets.append({"path": rel, "sha": sha})
    return assets


def ocr_document(rng: random.Random, needle: bool) -> str:
    words = rng.sample(WORDS, 6)
    if needle:
        words[rng.randrange(6)] = NEEDLE.upper() if rng.random() < 0.5 else NEEDLE
    items = ",".join(f'{{"text":"{w}","bbox":[{i},{i + 2},{i + 30},{i + 12}]}}' for i, w in enumerate(words))
    return f'{{"words":[{items}],"lines":[{{"text":"{" ".join(words)}"}}]}}'


def build_catalog(layout: LakeLayout, rows: int, partitions: int, needle_rate: float) -> None:
    rng = random.Random(7)
    per_partition = rows // partitions
    pools: dict[tuple[str, str], list[dict]] = {}
    now = datetime.now(timezone.utc)
    for p in range(partitions):
        ref = partition_ref(p)
        pool = pools.setdefault(
            (ref.provider, ref.dataset), make_assets(layout, ref, 25, seed=len(pools))
        )  # fmt: skip
        job_id = f"bench-{p:04d}"
        picks = [pool[rng.randrange(len(pool))] for _ in range(per_partition)]
        table = pa.table(
            {
                "lang": pa.array([rng.choice(("en", "ko", "ja")) for _ in range(per_partition)]),
                "src": pa.array(["real"] * per_partition),
                "ocr_result": pa.array([ocr_document(rng, rng.random() < needle_rate) for _ in range(per_partition)]),
                "image": pa.array([a["path"] for a in picks]),
                "image_sha256": pa.array([a["sha"] for a in picks]),
                "image_width": pa.array([64] * per_partition, pa.int32()),
                "image_height": pa.array([48] * per_partition, pa.int32()),
                "image_format": pa.array(["JPEG"] * per_partition),
                "image_mode": pa.array(["RGB"] * per_partition),
                "batch_id": pa.array([job_id] * per_partition),
                "ingested_at": pa.array([now] * per_partition, pa.timestamp("us", tz="UTC")),
                "row_hash": pa.array([f"{p:04d}-{i:08d}" for i in range(per_partition)]),
            }
        )
        if p % 10 == 0:  # some partitions carry an extra user column
            table = table.append_column("reviewer", pa.array(["alice"] * per_partition))
        writer = PartWriter(layout.part_file(ref, job_id))
        writer.write(table)
        writer.commit()
        record_batch_in_partition(layout, ref, job_id, per_partition, table.schema, {"created_at": now.isoformat()})


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (file system cache, imports)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


DOWNLOAD_CHILD = """
import json, resource, sys, time
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.export.download import download
base, fmt, out, selection = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
started = time.perf_counter()
result = download(LakeLayout(base, create=False), selection, fmt, out, progress=False)
print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "rows": result["rows"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_download(base: Path, fmt: str, out: Path, selection: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_CHILD, str(base), fmt, str(out), json.dumps(selection)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--download-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--needle-rate", type=float, default=0.005, help="share of rows containing the search word")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse/keep the catalog here")
    parser.add_argument("--s3-rows", type=int, default=100_000, help="rows of the S3 case's catalog (0: skip it)")
    parser.add_argument("--s3-partitions", type=int, default=20)
    parser.add_argument("--no-downloads", action="store_true", help="skip the download rows (query rows only)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="datalake-bench-"))
    layout = LakeLayout(workdir / "lake")
    if not any(layout.catalog_root.rglob("*.parquet")):
        started = time.perf_counter()
        build_catalog(layout, args.rows, args.partitions, args.needle_rate)
        print(f"built {args.rows:,} rows in {args.partitions} partitions in {time.perf_counter() - started:.1f} s")
    print(f"catalog: {layout.catalog_root}")

    raw = duckdb.connect()
    raw.execute("SET TimeZone = 'UTC'")
    scan = parquet_scan("'" + str(layout.catalog_root / "**" / "*.parquet") + "'")
    two = [partition_ref(0), partition_ref(1)]
    variants = [r.variant for r in two]
    results = []

    with DuckDBClient(layout.base) as duck:
        rows = len(
            duck.retrieve_with_existing_cols(providers=two[0].provider, datasets=two[0].dataset, variants=variants)
        )
        results.append(
            (
                f"retrieve 2 partitions ({rows:,} rows)",
                median_ms(
                    lambda: duck.retrieve_with_existing_cols(
                        providers=two[0].provider, datasets=two[0].dataset, variants=variants
                    ),
                    args.repeat,
                ),
                median_ms(
                    lambda: raw.sql(
                        f"SELECT * FROM {scan} WHERE provider = $p AND dataset = $d AND variant IN ($v0, $v1)",
                        params={"p": two[0].provider, "d": two[0].dataset, "v0": variants[0], "v1": variants[1]},
                    ).df(),
                    args.repeat,
                ),
            )
        )
        results.append(
            (
                "retrieve_partitions",
                median_ms(lambda: duck.retrieve_partitions(), args.repeat),
                median_ms(
                    lambda: raw.sql(
                        f"SELECT provider, dataset, task, variant, count(*) AS rows FROM {scan} GROUP BY ALL"
                    ).df(),
                    args.repeat,
                ),
            )
        )
        hits = len(duck.search_text("ocr_result", NEEDLE))
        results.append(
            (
                f"text search all, case-insensitive ({hits:,} hits)",
                median_ms(lambda: duck.search_text("ocr_result", NEEDLE), args.repeat),
                median_ms(
                    lambda: raw.sql(
                        f"SELECT * FROM {scan} WHERE lower(ocr_result) LIKE '%' || lower($needle) || '%'",
                        params={"needle": NEEDLE},
                    ).df(),
                    args.repeat,
                ),
            )
        )
        hits = len(duck.search_text("ocr_result", NEEDLE, json_path="$.words[*].text"))
        results.append(
            (
                f"JSON search all ({hits:,} hits)",
                median_ms(lambda: duck.search_text("ocr_result", NEEDLE, json_path="$.words[*].text"), args.repeat),
                median_ms(
                    lambda: raw.sql(
                        f"SELECT * FROM {scan} WHERE len(list_filter(json_extract_string(ocr_result, $path), "
                        "lambda x: contains(lower(x), $needle))) > 0",
                        params={"path": "$.words[*].text", "needle": NEEDLE},
                    ).df(),
                    args.repeat,
                ),
            )
        )

    per_partition = args.rows // args.partitions
    wanted = [partition_ref(i) for i in range(max(1, args.download_rows // per_partition))]
    selection = {
        "providers": sorted({r.provider for r in wanted}),
        "datasets": sorted({r.dataset for r in wanted}),
        "variants": sorted({r.variant for r in wanted}),
    }
    downloads = workdir / "downloads"
    downloads.mkdir(exist_ok=True)
    rss = {}
    for fmt in () if args.no_downloads else ("parquet", "hf"):
        runs = [run_download(layout.base, fmt, downloads / f"{fmt}-{time.time_ns()}", selection) for _ in range(2)]
        child = {**min(runs, key=lambda r: r["ms"]), "rss_mb": max(r["rss_mb"] for r in runs)}
        rss[fmt] = round(child["rss_mb"])
        target = downloads / f"raw-{time.time_ns()}.parquet"
        filters = " AND ".join(
            f"{level[:-1]} IN ({', '.join(repr(v) for v in values)})" for level, values in selection.items()
        )
        query = f"SELECT * FROM {scan} WHERE {filters}"
        raw.execute(f"COPY ({query}) TO '{target}.warm' (FORMAT parquet, COMPRESSION zstd)")  # warm cache
        raw_times = []
        for k in range(3):
            started = time.perf_counter()
            raw.execute(f"COPY ({query}) TO '{target}.{k}' (FORMAT parquet, COMPRESSION zstd)")
            raw_times.append((time.perf_counter() - started) * 1000)
        raw_ms = min(raw_times)  # the client figure is also the best of its runs
        label = f"download {child['rows']:,} rows -> {fmt} (peak RSS {child['rss_mb']:.0f} MB)"
        results.append((label, child["ms"], raw_ms))

    print()
    print(f"{'operation':<58} {'client ms':>10} {'raw ms':>10} {'ratio':>7}")
    for name, client_ms, raw_ms in results:
        print(f"{name:<58} {client_ms:>10.1f} {raw_ms:>10.1f} {client_ms / raw_ms:>7.2f}")
    print("(download raw = DuckDB COPY of the same rows to Parquet; for hf it is only a floor: no image bytes)")
    print(f"targets: client/raw <= 1.2, 2-partition retrieval < 150 ms, download peak RSS < 500 MB ({rss})")
    if args.s3_rows:
        s3_case(workdir, args)


def s3_case(workdir: Path, args: argparse.Namespace) -> None:
    """The same client calls on an S3 copy of a smaller catalog (moto server) and on the local copy."""
    import boto3

    from datalake_pipelines.core.storage.backends import S3Storage, upload_tree

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project root: the moto server helper
    from datalake_pipelines_tests.support.s3_server import MotoS3

    layout = LakeLayout(workdir / "s3-source")
    if not any(layout.catalog_root.rglob("*.parquet")):
        build_catalog(layout, args.s3_rows, args.s3_partitions, args.needle_rate)
    two = [partition_ref(0), partition_ref(1)]
    calls = {
        "retrieve 2 partitions": lambda d: d.retrieve_with_existing_cols(
            providers=two[0].provider, datasets=two[0].dataset, variants=[r.variant for r in two]
        ),
        "retrieve_partitions": lambda d: d.retrieve_partitions(),
        "JSON search all": lambda d: d.search_text("ocr_result", NEEDLE, json_path="$.words[*].text"),
        "sql count(*) over the catalog view": lambda d: d.sql("SELECT count(*) FROM catalog"),
    }
    with MotoS3(process=True) as moto, moto.environment():
        boto3.client("s3").create_bucket(Bucket="bench-lake")
        base = "s3://bench-lake/lake"
        started = time.perf_counter()
        files = upload_tree(S3Storage(base), layout.catalog_root, "catalog")
        print(
            f"\nS3 case: {args.s3_rows:,} rows, {files} catalog files uploaded in {time.perf_counter() - started:.1f} s"
        )
        print(f"{'operation':<40} {'S3 reused ms':>13} {'S3 new ms':>10} {'local ms':>9} {'S3/local':>9}")
        with DuckDBClient(base) as s3_duck, DuckDBClient(layout.base) as local_duck:
            for name, call in calls.items():
                reused = median_ms(lambda c=call: c(s3_duck), args.repeat)
                fresh = median_ms(lambda c=call: _with_new_client(base, c), args.repeat)
                local = median_ms(lambda c=call: c(local_duck), args.repeat)
                print(f"{name:<40} {reused:>13.1f} {fresh:>10.1f} {local:>9.1f} {reused / local:>9.2f}")
    print("(moto on loopback: no network latency, but every listing/footer read is a real HTTP request)")


def _with_new_client(base: str, call) -> None:
    with DuckDBClient(base) as duck:
        call(duck)


if __name__ == "__main__":
    main()
