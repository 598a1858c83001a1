"""The staging sensor on a real (ephemeral) instance: claims, hand drops, bad batches, concurrency, failures."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds
import pytest
from dagster_aws.s3 import S3Resource
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.parts import partition_files
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.queue import claim
from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.ingest import sensors
from datalake_pipelines.defs.ingest.sensors import staging_sensor
from datalake_pipelines.lib.resources import LakeResource

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake_client(tmp_path):
    return DatalakeClient(tmp_path / "lake", progress=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def images(folder: Path, n: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        path = folder / f"im{i:04d}.png"
        Image.new("RGB", (16 + i, 9), (i % 256, 3, 200)).save(path)
        out.append(str(path))
    return out


def tick(instance, lake_client, cursor=None) -> dg.SensorResult:
    ctx = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"lake": LakeResource(base_path=str(lake_client.base_path)), "s3": S3Resource()},
    )
    return staging_sensor(ctx)


def run(instance, lake_client, request: dg.RunRequest, result: dg.SensorResult):
    for req in result.dynamic_partitions_requests:
        if not all(instance.has_dynamic_partition(req.partitions_def_name, k) for k in req.partition_keys):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        resources={"lake": LakeResource(base_path=str(lake_client.base_path))},
        raise_on_error=False,
    )


def test_batch_is_claimed_once_with_partition_tags(instance, lake_client, tmp_path):
    _, job = lake_client.upload_task_data(
        pd.DataFrame({"image": images(tmp_path / "src", 3), "text": ["a", "b", "c"]}),
        "aihub",
        "docs",
        "ocr",
        "v1",
        meta={"lang": "ko", "src": "real"},
    )
    result = tick(instance, lake_client)
    assert [r.run_key for r in result.run_requests] == [job]
    request = result.run_requests[0]
    assert request.partition_key == "aihub/docs/ocr/v1"
    assert request.tags["datalake/provider"] == "aihub" and request.tags["datalake/variant"] == "v1"
    assert request.tags["datalake/job_ids"] == job
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["aihub/docs/ocr/v1"]
    assert lake_client.layout.processing_batch(job).is_dir()
    outcome = run(instance, lake_client, request, result)
    assert outcome.success
    assert not tick(instance, lake_client, result.cursor).run_requests
    assert ds.dataset(lake_client.layout.catalog_root, partitioning="hive").count_rows() == 3


def test_hand_drop_is_not_claimed_while_copying(instance, lake_client, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.6)
    drop = lake_client.layout.pending / "by_hand"
    drop.mkdir()
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "scans"}))
    source = images(tmp_path / "src", 6)
    cursor = None
    for path in source[:3]:  # a slow copy: one file per tick
        shutil.copy(path, drop)
        result = tick(instance, lake_client, cursor)
        cursor = result.cursor
        assert not result.run_requests and drop.is_dir()
        time.sleep(0.3)
    for path in source[3:]:
        shutil.copy(path, drop)
    result = tick(instance, lake_client, result.cursor)
    assert not result.run_requests, "claimed before the quiet period passed"
    time.sleep(0.8)
    result = tick(instance, lake_client, result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["inhouse/scans/raw/image"]
    assert run(instance, lake_client, result.run_requests[0], result).success
    assert ds.dataset(lake_client.layout.catalog_root, partitioning="hive").count_rows() == 6


@pytest.mark.parametrize("manifest", [None, "{not json"])
def test_folder_without_usable_manifest_waits_then_fails(instance, lake_client, tmp_path, monkeypatch, manifest):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(sensors, "GRACE_SECONDS", 0.5)
    drop = lake_client.layout.pending / "no_manifest"
    drop.mkdir()
    shutil.copy(images(tmp_path / "src", 1)[0], drop)
    if manifest is not None:
        (drop / "_metadata.json").write_text(manifest)
    result = tick(instance, lake_client)
    assert not result.run_requests and drop.is_dir(), "must wait in pending during the grace period"
    time.sleep(0.6)
    result = tick(instance, lake_client, result.cursor)
    failed = lake_client.layout.failed_batch("no_manifest")
    assert not result.run_requests and not drop.exists() and failed.is_dir()
    error = json.loads((failed / "error.json").read_text())
    assert "_metadata.json" in error["error"]
    assert (failed / "im0000.png").is_file(), "the original files are kept"


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"provider": "nobody", "dataset": "x"}, "unknown provider"),
        ({"provider": "aihub", "dataset": "bad...name"}, "invalid dataset name"),
        ({"provider": "aihub", "dataset": "ok", "variant": "a/b"}, "invalid variant name"),
        ({"provider": "aihub", "dataset": "ok", "task": "ocr", "meta": {"lang": "xx"}}, "meta for task"),
    ],
)
def test_invalid_batch_goes_to_failed_without_a_run(instance, lake_client, tmp_path, monkeypatch, doc, reason):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    drop = lake_client.layout.pending / "bad"
    drop.mkdir()
    shutil.copy(images(tmp_path / "src", 1)[0], drop)
    (drop / "_metadata.json").write_text(json.dumps(doc))
    result = tick(instance, lake_client)
    assert not result.run_requests and not result.dynamic_partitions_requests
    error = json.loads((lake_client.layout.failed_batch("bad") / "error.json").read_text())
    assert reason in error["error"]


def test_concurrent_ticks_claim_each_batch_once(instance, lake_client, tmp_path):
    jobs = set()
    for i in range(6):
        _, job = lake_client.upload_raw_data(
            pd.DataFrame({"image": images(tmp_path / f"s{i}", 2, i * 2)}), "aihub", f"d{i % 3}"
        )
        jobs.add(job)
    results: list[dg.SensorResult] = []
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(tick(instance, lake_client))
        except BaseException:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not any(lake_client.layout.failed.iterdir()), "a concurrent tick must not fail a batch"
    claimed = [j for r in results for req in r.run_requests for j in req.tags["datalake/job_ids"].split(",")]
    assert sorted(claimed) == sorted(jobs), "every batch claimed exactly once across concurrent ticks"


def test_crash_between_claim_and_launch_is_recovered(instance, lake_client, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 0.0)
    _, job = lake_client.upload_raw_data(pd.DataFrame({"image": images(tmp_path / "src", 2)}), "aihub", "crash")
    # A tick that claimed the batch and died before returning its run request:
    assert claim(lake_client.layout, job, job, PartitionRef("aihub", "crash", "raw", "mixed"))
    result = tick(instance, lake_client)
    assert [(r.run_key, r.tags["datalake/job_ids"]) for r in result.run_requests] == [(job, job)]
    assert run(instance, lake_client, result.run_requests[0], result).success
    assert lake_client.layout.job_record(job).exists()


def test_failed_run_moves_batch_to_failed_with_run_id(instance, lake_client, tmp_path):
    _, job = lake_client.upload_raw_data(pd.DataFrame({"image": images(tmp_path / "src", 2)}), "aihub", "broken")
    (lake_client.layout.pending_batch(job) / "data.parquet").write_bytes(b"PAR1 this is not parquet")
    result = tick(instance, lake_client)
    outcome = run(instance, lake_client, result.run_requests[0], result)
    assert not outcome.success
    failed = lake_client.layout.failed_batch(job)
    error = json.loads((failed / "error.json").read_text())
    assert error["run_id"] == outcome.run_id and error["step"] == "catalog_partition"
    assert "malformed Parquet" in error["error"]
    assert sorted(p.name for p in (failed / "files" / "image").iterdir()) == ["00000000.png", "00000001.png"]
    assert not partition_files(lake_client.layout, PartitionRef("aihub", "broken", "raw", "mixed"))


def test_dagster_yaml_limits_one_run_per_partition(tmp_path):
    shutil.copyfile(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        config = inst.get_concurrency_config()  # what the QueuedRunCoordinatorDaemon enforces
    limits = config.run_queue_config.tag_concurrency_limits
    assert config.pool_config.default_pool_limit == 1
    assert {"key": "datalake/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_cli_materialize_rebuilds_partition_idempotently(tmp_path, lake_client):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATALAKE_BASE_PATH": str(lake_client.base_path)}
    for i in range(2):
        lake_client.upload_raw_data(pd.DataFrame({"image": images(tmp_path / f"s{i}", 3, i)}), "aihub", "re")
    lake_client.process_pending()
    ref = PartitionRef("aihub", "re", "raw", "mixed")
    before = ds.dataset(lake_client.layout.partition_dir(ref)).to_table().sort_by("row_hash")
    assert len(partition_files(lake_client.layout, ref)) == 2 and before.num_rows == 4  # one image shared
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.add_dynamic_partitions("lake_partitions", [ref.key])
    cmd = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "datalake_pipelines.definitions",
        "--select",
        "catalog_partition",
        "--partition",
        ref.key,
    ]
    for _ in range(2):
        done = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
    after = ds.dataset(lake_client.layout.partition_dir(ref)).to_table().sort_by("row_hash")
    assert [p.name for p in partition_files(lake_client.layout, ref)] == ["data.parquet"]
    assert after.column("row_hash").to_pylist() == before.column("row_hash").to_pylist()
