"""Benchmark run_export (Parquet, JSONL, HDF5) against DuckDB ``COPY ... TO`` and a raw h5py write.

    .venv/bin/python benchmarks/export.py                          # 1,000,000 rows + 20,000 images
    .venv/bin/python benchmarks/export.py --rows 100000 --images 2000   # quick run
    .venv/bin/python benchmarks/export.py --s3      # also: the same exports from an S3 copy of the lake (moto)

The catalog is synthesised with the core's ``PartWriter`` (``benchmarks/query.py``'s builder, 100 partitions of
OCR rows) plus one partition of distinct JPEGs for the HDF5 case. Every measurement runs in a child process,
so its peak RSS (``ru_maxrss``) is its own; the figure is the best of ``--repeat`` runs. With ``--s3`` the lake
is also uploaded to moto's S3 server (its own process, on this machine) and the same exports run from
``s3://bench/lake`` next to the local lake, rounds alternating; the peer of that line is the local export.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from PIL import Image

from datalake_pipelines.core.catalog.parts import PartWriter, record_batch_in_partition
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef

HERE = Path(__file__).resolve().parent
PHOTOS = PartitionRef("photos", "camera", "photo", "base")


def load_query_bench():
    spec = importlib.util.spec_from_file_location("bench_query", HERE / "query.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_photos(layout: LakeLayout, count: int, size: tuple[int, int]) -> None:
    """``count`` rows, each with its own noise JPEG in the asset store."""
    now = datetime.now(timezone.utc)
    cols: dict[str, list] = {k: [] for k in ("image", "image_sha256", "caption")}
    for i in range(count):
        img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = layout.asset_relpath(PHOTOS.provider, PHOTOS.dataset, sha, "jpg")
        path = layout.resolve(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cols["image"].append(rel)
        cols["image_sha256"].append(sha)
        cols["caption"].append(f"photo {i}")
    n = count
    table = pa.table(
        {
            **cols,
            "image_width": pa.array([size[0]] * n, pa.int32()),
            "image_height": pa.array([size[1]] * n, pa.int32()),
            "image_format": ["JPEG"] * n,
            "image_mode": ["RGB"] * n,
            "batch_id": ["photos-0"] * n,
            "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "row_hash": [f"photo-{i:08d}" for i in range(n)],
        }
    )
    writer = PartWriter(layout.part_file(PHOTOS, "photos-0"))
    writer.write(table)
    writer.commit()
    record_batch_in_partition(layout, PHOTOS, "photos-0", n, table.schema, {"created_at": now.isoformat()})


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import duckdb, h5py, numpy as np, pyarrow.parquet as pq
from datalake_pipelines.core.export.tasks import run_export
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.catalog.warehouse import parquet_scan
kind, base, out, arg = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
started = time.perf_counter()  # libraries are imported before the clock starts, for both sides
if kind == "export":
    lake = base if base.startswith("s3://") else LakeLayout(base, create=False)
    result = run_export(lake, {**arg, "destination": str(out)}, name="x")
    rows, files = result["scan_data_count"], list((out / "x").rglob("*"))
elif kind == "copy":
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = str(Path(base) / "catalog" / f"provider=*/dataset=*/task={arg['task']}/variant=*/*.parquet")
    out.mkdir(parents=True)
    target = out / ("data.parquet" if arg["format"] == "parquet" else "data.jsonl")
    options = "FORMAT parquet, COMPRESSION zstd" if arg["format"] == "parquet" else "FORMAT json"
    sql = f"SELECT * FROM {parquet_scan(repr(glob))} WHERE ingested_at <= now()"
    con.execute(f"COPY ({sql}) TO '{target}' ({options})")
    rows, files = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0], [target]
else:  # raw h5py: read the same asset files, write their bytes as one vlen uint8 dataset in batches
    paths = pq.read_table(arg["catalog_file"], columns=["image"]).column(0).to_pylist()
    out.mkdir(parents=True)
    target = out / "raw.h5"
    with h5py.File(target, "w") as f:
        ds = f.create_dataset("image", (0,), maxshape=(None,), chunks=True, dtype=h5py.vlen_dtype(np.uint8))
        for start in range(0, len(paths), 10_000):
            chunk = paths[start:start + 10_000]
            values = np.empty(len(chunk), dtype=object)
            for i, rel in enumerate(chunk):
                with open(Path(base) / rel, "rb") as fh:
                    values[i] = np.frombuffer(fh.read(), dtype=np.uint8)
            ds.resize((start + len(chunk),))
            ds[start:start + len(chunk)] = values
    rows, files = len(paths), [target]
seconds = time.perf_counter() - started
size = sum(p.stat().st_size for p in files if p.is_file())
print(json.dumps({"seconds": seconds, "rows": rows, "bytes": size,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(kind: str, base: Path | str, out: Path, arg: dict, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(base), str(out), json.dumps(arg)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(kind: str, base: Path, outdir: Path, arg: dict, repeat: int) -> dict:
    runs = [child(kind, base, outdir / f"{kind}-{time.time_ns()}", arg) for _ in range(repeat)]
    return {**min(runs, key=lambda r: r["seconds"]), "rss_mb": max(r["rss_mb"] for r in runs)}


def s3_rows(layout: LakeLayout, outdir: Path, repeat: int) -> list[tuple[str, dict, dict]]:
    """The same exports from an S3 copy of the lake (moto in its own process) and from the local lake."""
    import boto3

    from datalake_pipelines.core.storage.backends import S3Storage, upload_tree
    from datalake_pipelines_tests.support.s3_server import MotoS3

    rows = []
    with MotoS3(process=True) as moto:
        env = {**moto.env, "DATALAKE_CACHE_DIR": str(outdir / "s3-cache")}
        os.environ.update(env)
        boto3.client("s3").create_bucket(Bucket="bench")
        storage = S3Storage("s3://bench/lake")
        started = time.perf_counter()
        upload_tree(storage, layout.catalog_root, "catalog", workers=16)
        upload_tree(storage, layout.assets_root, "assets", workers=16)
        print(f"uploaded the lake to moto in {time.perf_counter() - started:.1f} s")
        cases = [
            ("parquet from S3 vs local lake", {"filter": {"task": ["ocr"]}, "file_type": "parquet"}),
            ("hdf5 (image bytes) from S3 vs local lake", {"filter": {"task": ["photo"]}, "file_type": "hdf5"}),
        ]
        for name, arg in cases:
            s3_runs, local_runs = [], []
            for _ in range(repeat):  # alternating rounds
                s3_runs.append(child("export", "s3://bench/lake", outdir / f"s3-{time.time_ns()}", arg, env))
                local_runs.append(child("export", layout.base, outdir / f"local-{time.time_ns()}", arg))
            pick = [{**min(r, key=lambda x: x["seconds"]), "rss_mb": max(x["rss_mb"] for x in r)}
                    for r in (s3_runs, local_runs)]  # fmt: skip
            rows.append((name, *pick))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--image-size", default="160x120")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="reuse/keep the catalog here")
    parser.add_argument("--s3", action="store_true", help="also export from an S3 copy of the lake (moto)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="datalake-export-bench-"))
    layout = LakeLayout(workdir / "lake")
    if not any(layout.catalog_root.rglob("*.parquet")):
        started = time.perf_counter()
        load_query_bench().build_catalog(layout, args.rows, args.partitions, 0.005)
        w, h = (int(v) for v in args.image_size.split("x"))
        build_photos(layout, args.images, (w, h))
        print(f"built {args.rows:,} rows + {args.images:,} images in {time.perf_counter() - started:.1f} s")
    print(f"lake: {layout.base}")
    outdir = workdir / "out"
    outdir.mkdir(exist_ok=True)
    photos_file = next(layout.partition_dir(PHOTOS).glob("*.parquet"))

    rows = []
    for fmt in ("parquet", "jsonl"):
        ours = best("export", layout.base, outdir, {"filter": {"task": ["ocr"]}, "file_type": fmt}, args.repeat)
        raw = best("copy", layout.base, outdir, {"task": "ocr", "format": fmt}, args.repeat)
        rows.append((f"{fmt}: run_export vs DuckDB COPY", ours, raw))
    ours = best("export", layout.base, outdir, {"filter": {"task": ["photo"]}, "file_type": "hdf5"}, args.repeat)
    raw = best("h5py", layout.base, outdir, {"catalog_file": str(photos_file)}, args.repeat)
    rows.append(("hdf5 (image bytes): run_export vs raw h5py", ours, raw))
    if args.s3:
        rows += s3_rows(layout, outdir, args.repeat)

    print()
    header = f"{'case':<44} {'rows':>9} {'ours rows/s':>12} {'ours MB/s':>10} {'raw rows/s':>11} {'raw MB/s':>9}"
    print(header + f" {'ratio':>6} {'peak RSS MB':>12}")
    for name, o, r in rows:
        ratio = (o["rows"] / o["seconds"]) / (r["rows"] / r["seconds"])
        print(
            f"{name:<44} {o['rows']:>9,} {o['rows'] / o['seconds']:>12,.0f} {o['bytes'] / 1e6 / o['seconds']:>10.1f}"
            f" {r['rows'] / r['seconds']:>11,.0f} {r['bytes'] / 1e6 / r['seconds']:>9.1f} {ratio:>6.2f}"
            f" {o['rss_mb']:>12.0f}"
        )
    print("MB/s = output bytes per second; ratio = ours / raw rows per second (targets: parquet >= 0.7, hdf5 >= 0.7);")
    print("S3 lines: ours = export from the S3 lake (moto on this machine), raw = the same export from the local lake")
    print(f"peak RSS of the exports: {max(o['rss_mb'] for _, o, _ in rows):.0f} MB (target <= 500 MB)")


if __name__ == "__main__":
    main()
