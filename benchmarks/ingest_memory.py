"""Peak memory of an ingest: a 100k-row task batch of text rows and a raw batch of tiny images, each in a child.

    python benchmarks/ingest_memory.py --rows 100000 --images 20000 --num-proc 2

Each case runs upload + ``process_pending`` in a fresh child process (its inputs are written beforehand, by
another child), and the peak RSS printed is the child's own ``ru_maxrss`` (the rusage ``os.wait4`` returns for
that child alone), against the 500 MB target of issue 14. Processing streams the staged
``data.parquet`` in record batches of ``--batch-size`` rows, so the peak should not grow with the batch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 500


def make_inputs(kind: str, count: int, folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "task":
        ids = pa.array(range(count), pa.int64())
        text = pa.array([f"row {i}: " + "lorem ipsum dolor sit amet " * 8 for i in range(count)])
        pq.write_table(pa.table({"id": ids, "text": text}), folder / "data.parquet")
        return
    from PIL import Image

    images = folder / "images"
    images.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(out, "PNG")
        path = images / f"{i:06d}.png"
        path.write_bytes(out.getvalue())
        paths.append(str(path))
    pq.write_table(pa.table({"image": paths, "label": [i % 10 for i in range(count)]}), folder / "data.parquet")


def ingest(kind: str, folder: Path, num_proc: int, batch_size: int) -> None:
    from datalake_pipelines.client import DatalakeClient

    client = DatalakeClient(folder / "lake", num_proc=num_proc, batch_size=batch_size, progress=False)
    start = time.perf_counter()
    if kind == "task":
        client.upload_task_data(
            folder / "data.parquet", "inhouse", "memory", "ocr", "v1", meta={"lang": "en", "src": "synthetic"}
        )
    else:
        client.upload_raw_data(folder / "data.parquet", "inhouse", "memory", image_columns=["image"])
    staged = time.perf_counter() - start
    [result] = client.process_pending()
    if result.status != "done":
        raise SystemExit(f"{kind} ingest failed: {result.error}")
    print(json.dumps({"rows": result.rows_added, "upload_s": staged, "total_s": time.perf_counter() - start}))


def run_child(*args: str) -> tuple[dict, float]:
    """Run this script as a child; return its JSON line and its own peak RSS in MB (``os.wait4``'s rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(err.read()[-3000:])
        lines = out.read().strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), usage.ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the task batch (text only)")
    parser.add_argument("--images", type=int, default=20_000, help="rows of the raw batch (one tiny PNG each)")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("STEP", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, kind = args.child
        if step == "make":
            make_inputs(kind, args.count, args.folder)
        else:
            ingest(kind, args.folder, args.num_proc, args.batch_size)
        return 0
    common = ["--num-proc", str(args.num_proc), "--batch-size", str(args.batch_size)]
    worst = 0.0
    root = Path(tempfile.mkdtemp(prefix="ingest-memory-"))
    try:
        for kind, count in (("raw", args.images), ("task", args.rows)):
            folder = root / kind
            make = ["--child", "make", kind, "--folder", str(folder), "--count", str(count)]
            run_child(*make)
            stats, peak_mb = run_child("--child", "ingest", kind, "--folder", str(folder), *common)
            worst = max(worst, peak_mb)
            print(
                f"{kind:4s} batch of {count:,} rows ({args.num_proc} workers): peak RSS {peak_mb:.0f} MB "
                f"(target < {TARGET_MB} MB), {stats.get('rows', 0):,} rows added in {stats.get('total_s', 0):.1f} s"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"worst peak RSS {worst:.0f} MB: {'PASS' if worst < TARGET_MB else 'FAIL'} (target < {TARGET_MB} MB)")
    return 0 if worst < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
