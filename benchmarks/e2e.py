"""Drop-to-catalog latency through the real Dagster daemon, next to the core processing time.

    python benchmarks/e2e.py --images 1000 --interval 5

Starts ``dagster-daemon run`` on a temporary DAGSTER_HOME and lake, drops one batch of N images with
``DatalakeClient`` and measures the time until the catalog partition is readable. In the same run the same
images are processed by the core alone (no Dagster) into a second lake. Target: drop-to-visible <=
sensor interval + Dagster launch overhead + 2 x core time.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from datalake_pipelines import DatalakeClient  # noqa: E402
from datalake_pipelines.services.runner import INSTANCE_CONFIG  # noqa: E402


def make_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        Image.frombytes("RGB", (160, 120), os.urandom(160 * 120 * 3)).save(path, quality=85)
        paths.append(str(path))
    return paths


def core_seconds(paths: list[str], lake: Path) -> float:
    client = DatalakeClient(lake, progress=False)
    client.upload_raw_data(pd.DataFrame({"image": paths}), "inhouse", "bench")
    started = time.perf_counter()
    results = client.process_pending()
    assert results and results[0].status == "done", results
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=5, help="staging sensor interval (s)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="datalake-e2e-"))
    try:
        paths = make_images(work / "src", args.images)
        core = core_seconds(paths, work / "core_lake")
        home, lake = work / "home", work / "lake"
        home.mkdir()
        shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DATALAKE_BASE_PATH": str(lake),
            "DATALAKE_SENSOR_INTERVAL": str(args.interval),
        }
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(PROJECT / "workspace.yaml")],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(args.interval + 8)  # daemon up and the sensor ticking: not part of the drop latency
            client = DatalakeClient(lake, progress=False)
            dropped = time.perf_counter()
            client.upload_raw_data(pd.DataFrame({"image": paths}), "inhouse", "bench")
            staged = time.perf_counter() - dropped
            catalog = lake / "catalog"
            while True:
                if catalog.exists() and any(catalog.rglob("*.parquet")):
                    if ds.dataset(catalog, partitioning="hive").count_rows() == args.images:
                        break
                time.sleep(0.1)
            visible = time.perf_counter() - dropped
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(30)
        budget = args.interval + 10 + 2 * core  # 10 s: run worker start + launch, per FACTS.md (~7 s)
        print(f"images                  {args.images}")
        print(f"staging (client copy)   {staged:6.2f} s")
        print(f"drop -> catalog visible {visible:6.2f} s")
        print(f"sensor interval         {args.interval:6.2f} s")
        print(f"core processing         {core:6.2f} s  (same images, no Dagster)")
        print(f"budget interval+10+2xcore {budget:6.2f} s -> {'OK' if visible <= budget else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
