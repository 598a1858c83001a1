"""The scale simulation of issue 15: the staging sensor's tick and the catalog.duckdb refresh at lake scale.

    python benchmarks/scale.py                       # 10,000 partitions, 1,000 pending batches, lakes of 1k/10k
    python benchmarks/scale.py --partitions 2000 --batches 200 --lakes 500 2000 --rounds 1   # a quick look
    python benchmarks/scale.py --with-others         # also runs index_lookup.py and celery_overhead.py

Targets (issue 15):
- **sensor tick**: with 10,000 dynamic partitions in the instance and 1,000 batches pending, one evaluation of
  ``staging_sensor`` takes <= 10 s (Dagster's sensor timeout is 60 s). Measured on a real instance (SQLite
  storage, the shipped ``config/dagster.yaml`` in a temp ``DAGSTER_HOME``) through ``dg.build_sensor_context``.
  Two ticks: the first claims all 1,000 batches (1,000 renames, 1,000 run requests); the steady one runs with
  1,000 claims outstanding whose runs are queued (the daemon's run queue holding them back: every claim is
  checked against its run by the recovery and reaper passes). The floor is the bare scan of ``pending/`` (reading
  1,000 manifests), the least any tick must do.
- **catalog refresh**: ``refresh_warehouse()`` after one new part stays proportional to the new files, not to
  the lake: printed at 1,000 and 10,000 partitions next to each other, with the floor of a one-partition lake
  measured in alternating rounds, and the walking refresh (``walk=True``: what ``catalog rebuild`` and the daily
  walk cost). The new partition is written as a writer writes one: under its lock, with a change-log entry.

How the inputs are made quickly: the 10,000 partitions are one ``instance.add_dynamic_partitions`` call; the
1,000 pending batches are real client uploads of one-row text tables (about 4 ms each: no files to copy). The
lakes are made from one batch ingested by the core (its part file and ``_metadata.json``), whose partition folder
is copied into every other ``variant=`` folder (the hive layout ``catalog/provider=/dataset=/task=/variant=``),
and ``--assets`` hash-index entries per partition are inserted straight into ``index/hash_index.sqlite`` in one
transaction (the refresh copies the index; it never opens the assets).

Chunk dispatch (Celery vs in process) and the hash index at 10M entries are measured by their own scripts,
``benchmarks/celery_overhead.py`` and ``benchmarks/index_lookup.py``; ``--with-others`` runs them after these.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pyarrow as pa
from dagster._core.utils import make_new_run_id
from dagster_aws.s3 import S3Resource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datalake_pipelines.client import DatalakeClient  # noqa: E402
from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry  # noqa: E402
from datalake_pipelines.core.lake.changes import partition_writer  # noqa: E402
from datalake_pipelines.core.lake.layout import PartitionRef  # noqa: E402
from datalake_pipelines.defs.ingest import sensors  # noqa: E402
from datalake_pipelines.lib.after_ingest import INGEST_JOB  # noqa: E402
from datalake_pipelines.lib.claims import RUN_KEY_TAG  # noqa: E402
from datalake_pipelines.lib.partitions import DAGSTER_PARTITION_TAG, LAKE_PARTITIONS  # noqa: E402
from datalake_pipelines.lib.resources import LakeResource  # noqa: E402
from datalake_pipelines.services.runner import INSTANCE_CONFIG  # noqa: E402

META = {"lang": "ko", "src": "real"}
TICK_TARGET = 10.0
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
HERE = Path(__file__).resolve().parent


def ref_of(i: int) -> PartitionRef:
    return PartitionRef("aihub", "scale", "ocr", f"p{i:05d}")


def parts(i: int) -> list[str]:
    """``provider, dataset, task, variant`` of partition ``i``, as the client's upload takes them."""
    return list(ref_of(i).as_dict().values())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# -- sensor tick --------------------------------------------------------------------------------------------------
def sensor_tick(work: Path, partitions: int, batches: int) -> dict[str, float]:
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    client = DatalakeClient(work / "lake", progress=False)
    resources = {"lake": LakeResource(base_path=str(client.base_path)), "s3": S3Resource()}
    figures: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        figures["add_partitions_s"], _ = timed(
            lambda: instance.add_dynamic_partitions(LAKE_PARTITIONS, [ref_of(i).key for i in range(partitions)])
        )
        step = max(1, partitions // batches)  # the batches spread over distinct existing partitions
        figures["stage_s"], _ = timed(
            lambda: [
                client.upload_task_data(
                    pa.table({"text": [f"row {i}"]}), *ref_of(i * step % partitions).as_dict().values(), META
                )
                for i in range(batches)
            ]
        )
        figures["scan_floor_s"], pending = timed(client.lake.pending)
        assert len(pending) == batches, len(pending)

        def tick(cursor: str | None) -> dg.SensorResult:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return sensors.staging_sensor(ctx)

        figures["tick_claim_s"], first = timed(lambda: tick(None))
        assert isinstance(first, dg.SensorResult) and len(first.run_requests or []) == batches
        # what the daemon does with the result: queue one run per request (a run record, no execution)
        for request in first.run_requests or []:
            instance.add_run(
                dg.DagsterRun(
                    job_name=INGEST_JOB,
                    run_id=make_new_run_id(),
                    tags={
                        **request.tags,
                        RUN_KEY_TAG: request.run_key,
                        DAGSTER_PARTITION_TAG: request.partition_key,
                    },
                    status=dg.DagsterRunStatus.NOT_STARTED,  # QUEUED needs a code location origin
                )
            )
        age, sensors.RECOVERY_AGE_SECONDS = sensors.RECOVERY_AGE_SECONDS, 0.0  # every claim old enough to check
        try:
            figures["tick_steady_s"], second = timed(lambda: tick(first.cursor))
        finally:
            sensors.RECOVERY_AGE_SECONDS = age
        assert isinstance(second, dg.SensorResult) and not second.run_requests, "no run may be requested twice"
    return figures


# -- catalog refresh ----------------------------------------------------------------------------------------------
def seed_lake(base: Path) -> DatalakeClient:
    client = DatalakeClient(base, progress=False)
    client.upload_task_data(pa.table({"text": ["seed row", "another row"]}), *parts(0), META)
    results = client.process_pending()
    assert [r.status for r in results] == ["done"], results
    return client


def grow_lake(client: DatalakeClient, start: int, stop: int, assets: int, as_writer: bool = False) -> None:
    """Partitions ``start..stop-1`` as copies of partition 0's folder, ``assets`` index entries each.
    ``as_writer``: each copy is made as a writer makes it, under the partition lock with a change-log entry
    (the bulk setup copies without, and its one full build walks)."""
    layout = client.layout
    seed = layout.partition_dir(ref_of(0))
    for i in range(max(start, 1), stop):
        with partition_writer(layout, ref_of(i)) if as_writer else contextlib.nullcontext():
            shutil.copytree(seed, layout.partition_dir(ref_of(i)))
    index = HashIndex(layout.hash_index)
    try:
        index.add_many(
            IndexEntry(
                sha256=(h := hashlib.sha256(f"{i}/{k}".encode()).hexdigest()),
                stored_sha256=h,
                path=f"assets/{h[:2]}/{h[2:4]}/{h}.png",
                size=1000 + k,
                kind="image",
                format="PNG",
                width=8,
                height=8,
                mode="RGB",
                provider="aihub",
                dataset="scale",
                first_batch_id=f"bulk-{i}",
                created_at=(EPOCH + timedelta(seconds=i)).isoformat(),  # later partitions, later entries
            )
            for i in range(start, stop)
            for k in range(assets)
        )
    finally:
        index.close()


def refresh_after_one_part(client: DatalakeClient, next_index: int, assets: int) -> float:
    """Seconds of a refresh after one new partition (one part file, ``assets`` index entries) lands."""
    grow_lake(client, next_index, next_index + 1, assets, as_writer=True)
    seconds, summary = timed(client.lake.refresh_warehouse)
    assert isinstance(summary, dict) and summary["changed"] == 1 and not summary["walked"], summary
    return seconds


def catalog_refresh(work: Path, lakes: list[int], rounds: int, assets: int) -> list[tuple[int, float, float, float]]:
    """Per lake size: (partitions, refresh after one part, the floor's, a walking refresh), medians of ``rounds``
    alternating rounds (lake, floor, lake, floor, ...: the machine's noise hits both alike)."""
    floor_client = seed_lake(work / "floor")
    floor_client.lake.refresh_warehouse()
    client = seed_lake(work / "lake")
    client.lake.refresh_warehouse()
    size, floor_size, rows = 1, 1, []
    for target in sorted(lakes):
        grow_lake(client, size, target, assets)
        size = target
        client.lake.refresh_warehouse(walk=True)  # the full look once: what the timed refreshes start from
        times: dict[str, list[float]] = {"lake": [], "floor": [], "walk": []}
        for _ in range(rounds):
            times["lake"].append(refresh_after_one_part(client, size, assets))
            size += 1
            times["floor"].append(refresh_after_one_part(floor_client, floor_size, assets))
            floor_size += 1
            times["walk"].append(timed(lambda: client.lake.refresh_warehouse(walk=True))[0])
        rows.append((target, *(statistics.median(times[k]) for k in ("lake", "floor", "walk"))))
    return rows


def run_other(script: str) -> None:
    path = HERE / script
    if not path.exists():
        print(f"  {script}: not present on this branch (another helper's)")
        return
    print(f"  --- {script} ---", flush=True)
    subprocess.run([sys.executable, str(path)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=10_000, help="dynamic partitions in the instance")
    parser.add_argument("--batches", type=int, default=1_000, help="batches pending when the sensor ticks")
    parser.add_argument("--lakes", type=int, nargs="+", default=[1_000, 10_000], help="lake sizes (partitions)")
    parser.add_argument("--assets", type=int, default=10, help="hash-index entries per partition")
    parser.add_argument("--rounds", type=int, default=3, help="refreshes per lake size (median)")
    parser.add_argument("--with-others", action="store_true", help="also run index_lookup.py and celery_overhead.py")
    args = parser.parse_args()
    os.environ.setdefault("DATALAKE_NUM_PROC", "1")
    with tempfile.TemporaryDirectory(prefix="datalake-scale-") as tmp:
        work = Path(tmp)
        (work / "tick").mkdir()
        tick = sensor_tick(work / "tick", args.partitions, args.batches)
        print(f"sensor tick: {args.partitions:,} dynamic partitions, {args.batches:,} batches pending")
        print(f"  setup: add partitions {tick['add_partitions_s']:.2f} s, stage batches {tick['stage_s']:.1f} s")
        print(f"  floor (scan pending/):        {tick['scan_floor_s']:6.2f} s")
        for name, key in (("claiming tick", "tick_claim_s"), ("steady tick (all claimed)", "tick_steady_s")):
            verdict = "ok" if tick[key] <= TICK_TARGET else "OVER TARGET"
            print(f"  {name + ':':29} {tick[key]:6.2f} s   target <= {TICK_TARGET:.0f} s   {verdict}")
        (work / "refresh").mkdir()
        rows = catalog_refresh(work / "refresh", args.lakes, args.rounds, args.assets)
        print(f"catalog refresh after 1 new part (median of {args.rounds}; {args.assets} index entries/partition)")
        print(f"  {'partitions':>10}  {'refresh':>9}  {'floor (1-partition lake)':>24}  ratio  {'daily walk':>10}")
        for size, seconds, floor, walk in rows:
            print(f"  {size:>10,}  {seconds:8.3f}s  {floor:23.3f}s  {seconds / floor:5.1f}x  {walk:9.3f}s")
        if len(rows) >= 2:
            (small, t_small, _, _), (big, t_big, _, _) = rows[0], rows[-1]
            print(
                f"  {big:,} vs {small:,} partitions: {t_big / t_small:.1f}x the time for {big / small:.0f}x the lake "
                "(target: about 1x, proportional to the new files)"
            )
    print("hash index lookups at 10M entries (p50/p99 per file, target <= 1 ms): see benchmarks/index_lookup.py")
    print("chunk dispatch overhead, Celery vs in process: see benchmarks/celery_overhead.py")
    if args.with_others:
        run_other("index_lookup.py")
        run_other("celery_overhead.py")


if __name__ == "__main__":
    main()
