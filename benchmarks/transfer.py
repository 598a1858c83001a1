"""Benchmark ``stream_url_to_s3``: URL -> S3 (moto in its own process) against a plain download.

    python benchmarks/transfer.py --size-mb 2048 --part-mb 16 --concurrency 4

Targets: streaming rate >= 0.7 x plain download rate; peak RSS <= part x (concurrency + 2) + 200 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boto3.s3.transfer import TransferConfig  # noqa: E402

from datalake_pipelines.core.storage.transfer import MiB, TransferSettings, s3_client  # noqa: E402
from datalake_pipelines.core.storage.url_stream import stream_url_to_s3  # noqa: E402
from datalake_pipelines_tests.support.s3_server import MotoS3, body_sha256, free_port, wait_for_port  # noqa: E402


def plain_download(url: str) -> tuple[int, float]:
    """Read the body to /dev/null; return (bytes, seconds)."""
    started, total = time.monotonic(), 0
    with urllib.request.urlopen(url, timeout=60) as resp, open(os.devnull, "wb") as sink:
        while chunk := resp.read(MiB):
            sink.write(chunk)
            total += len(chunk)
    return total, time.monotonic() - started


def boto3_stream(client, url: str, settings: TransferSettings, size: int) -> float:
    """The same stream through boto3's managed transfer (non-seekable input); return MiB/s."""
    part = settings.part_size_for(size)
    config = TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=settings.max_concurrency,
        preferred_transfer_client="classic",
    )
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as resp:
        client.upload_fileobj(resp, "bench", "boto3.bin", Config=config)
    return size / MiB / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--compare-boto3", action="store_true", help="also time upload_fileobj (after RSS is read)")
    args = parser.parse_args()
    size = args.size_mb * MiB
    settings = TransferSettings(part_size=args.part_mb * MiB, max_concurrency=args.concurrency)

    port = free_port()  # the body server runs in its own process so it does not share our GIL or RSS
    body = subprocess.Popen(
        [sys.executable, "-m", "datalake_pipelines_tests.support.s3_server", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for_port(port, body)
        url = f"http://127.0.0.1:{port}/body/{size}?seed={args.seed}"
        with MotoS3(process=True) as moto, moto.environment():
            client = s3_client(max_attempts=1)
            client.create_bucket(Bucket="bench")
            got, seconds = plain_download(url)
            plain_rate = got / MiB / seconds
            print(f"plain download  : {got / MiB:8.0f} MiB in {seconds:6.2f} s = {plain_rate:8.1f} MiB/s")
            result = stream_url_to_s3(url, "s3://bench/body.bin", settings, progress=args.progress, client=client)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            stored = client.head_object(Bucket="bench", Key="body.bin")["ContentLength"]
            boto3_rate = boto3_stream(client, url, settings, size) if args.compare_boto3 else None
    finally:
        body.terminate()
        body.wait(10)
    ok_bytes = stored == size and result["sha256"] == body_sha256(size, args.seed)
    ratio = result["mb_per_s"] / plain_rate
    budget = args.part_mb * (args.concurrency + 2) + 200
    print(
        f"stream -> S3    : {result['bytes'] / MiB:8.0f} MiB in {result['seconds']:6.2f} s = "
        f"{result['mb_per_s']:8.1f} MiB/s, {result['parts']} parts, etag {result['etag']}"
    )
    if boto3_rate is not None:
        print(f"boto3 upload_fileobj(response), same parts/threads: {boto3_rate:8.1f} MiB/s (the S3 sink's rate)")
    print(f"byte-exact      : {ok_bytes} (size and sha256 {result['sha256'][:16]}...)")
    print(f"rate ratio      : {ratio:.2f} (target >= 0.70) {'OK' if ratio >= 0.7 else 'MISSED'}")
    print(
        f"peak RSS        : {peak_mb:.0f} MB; part x concurrency = {args.part_mb * args.concurrency} MB; "
        f"budget part x (concurrency + 2) + 200 = {budget} MB {'OK' if peak_mb <= budget else 'MISSED'}"
    )
    return 0 if ok_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
