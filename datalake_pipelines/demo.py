"""End-to-end demo on the local embedded default: sample receipts -> staging -> sensor -> assets -> query.

Run with ``make demo`` (or ``python -m datalake_pipelines.demo``). It generates sample images with
OCR-style JSON annotations, stages one raw and one task upload with ``DatalakeClient``, starts the real
Dagster daemon (the staging sensor claims the batches and launches the ingest runs), waits for the
catalog and for every run in flight (the refresh included), stops the daemon and prints what the lake now
holds, ending with a DuckDB query result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from .client import DatalakeClient
from .core.lake.layout import LakeLayout
from .services.idle import wait_until_idle
from .services.runner import PROJECT_ROOT, batch_status, get_instance, start_pending
from .settings import SENSOR_INTERVAL_ENV
from .settings import load as load_settings

WORDS = ["invoice", "total", "receipt", "coffee", "tax", "cash", "card", "change", "date", "store"]


def make_samples(folder: Path, count: int, seed: int = 7) -> pd.DataFrame:
    """Receipt-like JPEGs with their OCR words and boxes (the ground truth we drew)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = Image.new("RGB", (320, 240), (250, 248, 240))
        draw = ImageDraw.Draw(image)
        words = []
        for line in range(4):
            text = rng.choice(WORDS) if line else ("invoice" if i % 3 == 0 else "receipt")
            x, y = 16 + rng.randint(0, 20), 20 + line * 50
            draw.text((x, y), f"{text} {rng.randint(1, 999)}", fill=(20, 20, 20))
            words.append({"text": text, "bbox": [x, y, x + 8 * len(text), y + 12]})
        for _ in range(200):  # a little texture so every image is distinct
            px, py = rng.randrange(320), rng.randrange(240)
            draw.point((px, py), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        path = folder / f"receipt_{i:03d}.jpg"
        image.save(path, quality=90)
        rows.append({"image": str(path), "ocr_result": json.dumps({"words": words}), "doc_id": f"r{i:03d}"})
    return pd.DataFrame(rows)


def run_daemon_until_done(layout: LakeLayout, job_ids: list[str], timeout: float) -> bool:
    """Start ``dagster-daemon`` in its own process group, wait for the batches, stop the group."""
    settings = load_settings()
    interval = settings.sensor_interval if SENSOR_INTERVAL_ENV in settings.explicit else 5  # the demo's 5 s
    env = {**os.environ, SENSOR_INTERVAL_ENV: str(interval)}
    daemon = [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    log_path = layout.logs_dir / "demo-daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            daemon, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    print(f"dagster-daemon started (pid {proc.pid}, log {log_path}); the staging sensor will claim the batches")
    instance = get_instance()
    states: dict[str, str] = {}

    def batches_finished() -> bool:
        states.update({j: batch_status(layout, instance, j)["state"] for j in job_ids})
        return all(s in ("done", "failed") for s in states.values()) and layout.duckdb_file.exists()

    try:
        # Stop the daemon only once nothing is in flight and catalog.duckdb was refreshed after the last ingest:
        # killing it mid-run would leave a failed run behind (and an outdated catalog.duckdb).
        idle, running = wait_until_idle(instance, timeout, ready=batches_finished)
        if idle:
            print("batches:", states)
            return True
        print("timed out waiting for the daemon; states:", states, "runs in flight:", [r.run_id for r in running])
        return False
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def print_summary(layout: LakeLayout) -> None:
    from .core.catalog.query import DuckDBClient

    with DuckDBClient(base_path=layout.base) as duck:
        print("\nPartitions in the catalog:")
        print(duck.retrieve_partitions("catalog").to_string(index=False))
        ocr = duck.retrieve_with_existing_cols(providers=["inhouse"], tasks=["ocr"], limit=5)
        print(f"\nFirst OCR rows ({len(ocr)} shown):")
        print(ocr[["doc_id", "image_width", "image_height", "lang", "src"]].to_string(index=False))
        hits = duck.search_text("ocr_result", "invoice", json_path="$.words[*].text", tasks=["ocr"])
        print(f"\nQuery result: {len(hits)} receipts whose OCR text contains 'invoice':")
        print(hits[["doc_id", "matched_snippet"]].head(10).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--no-daemon", action="store_true", help="run the ingest in-process instead of the daemon")
    args = parser.parse_args(argv)

    client = DatalakeClient(progress=False)
    layout = client.layout
    print(f"lake: {layout.base}\nDAGSTER_HOME: {os.environ.get('DAGSTER_HOME') or '(default ./.dagster_home)'}")
    get_instance()
    samples = make_samples(layout.base.parent / "demo_data" / f"run-{int(time.time())}", args.images)
    _, raw_job = client.upload_raw_data(
        samples[["image", "doc_id"]], "inhouse", "receipts", "Synthetic receipts for the demo"
    )
    _, ocr_job = client.upload_task_data(
        samples, "inhouse", "receipts", "ocr", "words", meta={"lang": "en", "src": "synthetic"}
    )
    print(f"staged raw batch {raw_job} and OCR batch {ocr_job} in {layout.pending}")
    if args.no_daemon:
        ok = bool(start_pending(str(layout.base), get_instance()))
    else:
        ok = run_daemon_until_done(layout, [raw_job, ocr_job], args.timeout)
    if not ok:
        return 1
    print_summary(layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
