"""Benchmark ``stream_url_to_s3``: URL -> S3 (moto in its own process) next to boto3's ``upload_fileobj`` of the
same kind of stream into the same endpoint, alternating rounds, and a plain download of the body.

    python benchmarks/transfer.py --size-mb 1024 --part-mb 16 --concurrency 4 --rounds 3

Targets: ours >= 0.9 x ``upload_fileobj`` (medians); peak RSS <= part x (concurrency + 2) + 200 MB (read after
the first of our rounds, before any ``upload_fileobj`` round).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
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
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
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
            ours, theirs, peak_mb, ok_bytes = [], [], None, True
            for n in range(args.rounds):
                for which in ("ours", "boto3") if n % 2 == 0 else ("boto3", "ours"):
                    if which == "boto3":
                        theirs.append(boto3_stream(client, url, settings, size))
                        continue
                    result = stream_url_to_s3(
                        url, "s3://bench/body.bin", settings, progress=args.progress, client=client
                    )
                    ours.append(result["mb_per_s"])
                    peak_mb = peak_mb or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
                    stored = client.head_object(Bucket="bench", Key="body.bin")["ContentLength"]
                    ok_bytes &= stored == size and result["sha256"] == body_sha256(size, args.seed)
                print(f"round {n + 1}: ours {ours[-1]:7.1f} MiB/s, boto3 upload_fileobj {theirs[-1]:7.1f} MiB/s")
    finally:
        body.terminate()
        body.wait(10)
    ratio = statistics.median(ours) / statistics.median(theirs)
    budget = args.part_mb * (args.concurrency + 2) + 200
    print(
        f"stream -> S3    : {size / MiB:8.0f} MiB, median {statistics.median(ours):8.1f} MiB/s, "
        f"{result['parts']} parts, etag {result['etag']}"
    )
    print(f"boto3 upload_fileobj(response), same parts/threads: median {statistics.median(theirs):8.1f} MiB/s")
    print(f"byte-exact      : {ok_bytes} (size and sha256 {result['sha256'][:16]}...)")
    print(f"ours / boto3    : {ratio:.2f} (target >= 0.90) {'OK' if ratio >= 0.9 else 'MISSED'}")
    print(
        f"peak RSS        : {peak_mb:.0f} MB; part x concurrency = {args.part_mb * args.concurrency} MB; "
        f"budget part x (concurrency + 2) + 200 = {budget} MB {'OK' if peak_mb <= budget else 'MISSED'}"
    )
    return 0 if ok_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
