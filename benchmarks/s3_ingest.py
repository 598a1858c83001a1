"""The README demo's ingest on an S3 lake (moto in its own process, behind a proxy adding 20 ms to every request,
like real S3's latency) next to the same ingest on a local lake, alternating rounds.

    python benchmarks/s3_ingest.py --receipts 300 --rounds 3 --latency-ms 20

Target: S3 with 20 ms latency >= 0.3 x the local rate (medians).

Both runs use the demo's sample receipts (JPEG + OCR JSON), one raw and one task upload through
``DatalakeClient`` (staging timed apart) and ``process_pending`` (the same engine the Dagster run uses;
on S3 it claims with a conditional write, processes in a local work lake and publishes to S3).
The local run is the floor: the S3 figure shows what the object store and the publish steps cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.client import DatalakeClient  # noqa: E402
from datalake_pipelines.core.storage.transfer import s3_client  # noqa: E402
from datalake_pipelines.demo import make_samples  # noqa: E402
from datalake_pipelines_tests.support.s3_server import MotoS3, free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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


PROBE_FILES = 300


def _requests(port: int) -> int:
    """How many requests the latency proxy on ``port`` forwarded."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__proxy_requests__", timeout=10) as resp:
        return int(resp.read())


def _moto_rate(endpoint: str) -> float:
    """Small requests per second moto serves straight (no proxy): PUTs then GETs of 50 KB, 32 at once."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket="bench-probe")
    body = os.urandom(50_000)
    keys = [f"probe/{i}" for i in range(PROBE_FILES)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda k: client.put_object(Bucket="bench-probe", Key=k, Body=body), keys))
        list(pool.map(lambda k: client.get_object(Bucket="bench-probe", Key=k)["Body"].read(), keys))
    return 2 * PROBE_FILES / (time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=300)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3-ingest-bench-"))
    proxies: dict[str, subprocess.Popen] = {}
    s3_slow = f"s3 {args.latency_ms:g}ms"
    kinds = ["local", "s3 0ms", s3_slow]  # s3 0ms: the same moto and proxy without the delay, moto's own floor
    try:
        samples = make_samples(work / "samples", args.receipts)
        with MotoS3(process=True) as moto, moto.environment():
            ports = {}
            for kind, delay in (("s3 0ms", 0.0), (s3_slow, args.latency_ms / 1000)):
                ports[kind] = free_port()  # each proxy in its own process: its threads do not share our GIL
                proxies[kind] = subprocess.Popen(
                    [sys.executable, "-m", "datalake_pipelines_tests.support.latency_proxy"]
                    + [str(ports[kind]), str(moto.port), str(delay)],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                wait_for_port(ports[kind], proxies[kind])
            os.environ["DATALAKE_CACHE_DIR"] = str(work / "cache")
            runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
            for n in range(args.rounds):
                for i, kind in enumerate(kinds[n % 3 :] + kinds[: n % 3]):  # rotate the order every round
                    if kind == "local":
                        base = str(work / f"lake-{n}")
                    else:
                        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{ports[kind]}"
                        boto3.client("s3").create_bucket(Bucket=f"bench-lake-{n}-{i}")
                        base = f"s3://bench-lake-{n}-{i}/lake"
                    runs[kind].append(ingest(base, samples, args.num_proc))
                    r = runs[kind][-1]
                    rate = r["rows"] / (r["stage_s"] + r["process_s"])
                    print(
                        f"round {n + 1} {kind:<8}: stage {r['stage_s']:6.2f} s, process {r['process_s']:6.2f} s, "
                        f"{rate:6.0f} rows/s"
                    )
            cpu = {"moto": _cpu_seconds(moto._proc.pid), "proxies": sum(_cpu_seconds(p.pid) for p in proxies.values())}
            forwarded = sum(_requests(port) for port in ports.values())
            moto_rate = _moto_rate(moto.endpoint_url)
        rows, images = runs["local"][0]["rows"], runs["local"][0]["images_new"]
        print(f"demo ingest of {args.receipts} receipts (raw + ocr upload, {rows} rows, {images} new images)")
        print(
            f"medians of {args.rounds} rounds; s3 = moto behind a proxy adding 0 or {args.latency_ms:g} ms per request"
        )
        print(f"{'lake':<10}{'stage s':>10}{'process s':>12}{'total s':>10}{'rows/s':>10}")
        rates = {}
        for kind, rs in runs.items():
            stage = statistics.median(r["stage_s"] for r in rs)
            process = statistics.median(r["process_s"] for r in rs)
            total = statistics.median(r["stage_s"] + r["process_s"] for r in rs)
            rates[kind] = rows / total
            print(f"{kind:<10}{stage:>10.2f}{process:>12.2f}{total:>10.2f}{rates[kind]:>10.0f}")
        print(
            f"CPU over all rounds: moto {cpu['moto']:.1f} s, proxies {cpu['proxies']:.1f} s, "
            f"this process (client, all lakes) {time.process_time():.1f} s"
        )
        per_ingest = forwarded / (2 * args.rounds)
        floor_s = per_ingest / moto_rate
        local_s = rows / rates["local"]
        print(
            f"requests per S3 ingest: {per_ingest:.0f}; moto alone answers {moto_rate:.0f} small PUT/GET per s here "
            f"({PROBE_FILES} at once, no proxy), so {floor_s:.1f} s is the S3 ingest's floor even without latency: "
            f"at best {local_s / floor_s:.2f} x the local rate on this machine"
        )
        ratio = rates[s3_slow] / rates["local"]
        verdict = "OK" if ratio >= 0.3 else "MISSED"
        print(f"{s3_slow} / local rate: {ratio:.2f} (target >= 0.30, local is the floor) {verdict}")
        print(f"{s3_slow} / s3 0ms rate: {rates[s3_slow] / rates['s3 0ms']:.2f} (what the latency costs)")
    finally:
        for proc in proxies.values():
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
