"""The README demo's ingest on an S3 lake (moto in its own process) next to the same ingest on a local lake.

    python benchmarks/s3_ingest.py --receipts 300

Both runs use the demo's sample receipts (JPEG + OCR JSON), one raw and one task upload through
``DatalakeClient`` (staging timed apart) and ``process_pending`` (the same engine the Dagster run uses;
on S3 it claims with a conditional write, processes in a local work lake and publishes to S3).
The local run is the floor: the S3 figure shows what the object store and the publish steps cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.client import DatalakeClient  # noqa: E402
from datalake_pipelines.demo import make_samples  # noqa: E402
from datalake_pipelines_tests.support.s3_server import MotoS3  # noqa: E402


def ingest(base: str, samples, num_proc: int) -> dict[str, float]:
    client = DatalakeClient(base, num_proc=num_proc, batch_size=500, progress=False)
    started = time.perf_counter()
    client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
    client.upload_task_data(
        samples,
        "inhouse",
        "receipts",
        "ocr",
        "receipt_words",
        {"lang": "en", "src": "synthetic"},
        image_columns=["image"],
    )
    staged = time.perf_counter()
    results = client.process_pending()
    done = time.perf_counter()
    assert [r.status for r in results] == ["done", "done"], [(r.status, r.error) for r in results]
    return {
        "stage_s": staged - started,
        "process_s": done - staged,
        "rows": sum(r.rows_added for r in results),
        "images_new": sum(r.images_new for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=300)
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3-ingest-bench-"))
    try:
        samples = make_samples(work / "samples", args.receipts)
        local = ingest(str(work / "lake"), samples, args.num_proc)
        with MotoS3(process=True) as moto, moto.environment():
            os.environ["DATALAKE_CACHE_DIR"] = str(work / "cache")
            boto3.client("s3").create_bucket(Bucket="bench-lake")
            s3 = ingest("s3://bench-lake/lake", samples, args.num_proc)
        rows, images = local["rows"], local["images_new"]
        print(f"demo ingest of {args.receipts} receipts (raw + ocr upload, {rows} rows, {images} new images)")
        print(f"{'lake':<8}{'stage s':>10}{'process s':>12}{'total s':>10}{'rows/s':>10}")
        for name, r in (("local", local), ("s3", s3)):
            total = r["stage_s"] + r["process_s"]
            print(f"{name:<8}{r['stage_s']:>10.2f}{r['process_s']:>12.2f}{total:>10.2f}{r['rows'] / total:>10.0f}")
        ratio = (local["stage_s"] + local["process_s"]) / (s3["stage_s"] + s3["process_s"])
        print(f"S3 / local throughput: {ratio:.2f} (local is the floor; moto runs in a separate process)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
