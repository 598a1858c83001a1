"""Dagster-specific behaviour of the staging sensor and the ingest job (a real, ephemeral instance).

The queue cases shared by every backend (claiming once, hand drops, unusable and invalid batches, concurrency,
failures, requeue, rebuild) are in ``core/lake/test_lake_contract.py``; what stays here is the instance's run
limits and ``dagster asset materialize`` (on both backends).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from dagster_aws.s3 import S3Resource
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.parts import partition_files
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.ingest.sensors import staging_sensor
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines.services.runner import INSTANCE_CONFIG

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


def test_dagster_yaml_limits_one_run_per_partition(tmp_path):
    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        config = inst.get_concurrency_config()  # what the QueuedRunCoordinatorDaemon enforces
    limits = config.run_queue_config.tag_concurrency_limits
    assert config.pool_config.default_pool_limit == 1
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_cli_materialize_rebuilds_partition_idempotently(tmp_path, request, kind):
    base = request.getfixturevalue("s3_lake") if kind == "s3" else str(tmp_path / "lake")
    lake_client = DatalakeClient(base, progress=False)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATALAKE_BASE_PATH": base}  # with moto's AWS env on S3
    for i in range(2):
        lake_client.upload_raw_data(pd.DataFrame({"image": images(tmp_path / f"s{i}", 3, i)}), "aihub", "re")
    lake_client.process_pending()
    ref = PartitionRef("aihub", "re", "raw", "mixed")

    def partition() -> tuple[list[str], pa.Table]:
        with open_lake(base).partition_view(ref) as view:
            files = [p.name for p in partition_files(view, ref)]
            return files, ds.dataset(view.partition_dir(ref)).to_table().sort_by("row_hash")

    files, before = partition()
    assert len(files) == 2 and before.num_rows == 4  # one image shared
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
    files, after = partition()
    assert files == ["data.parquet"]
    assert after.column("row_hash").to_pylist() == before.column("row_hash").to_pylist()
    with dg.DagsterInstance.from_config(str(home)) as inst:
        runs = inst.get_runs()
    assert len(runs) == 2  # a CLI run carries the datalake/* tags too (added when its step starts)
    for cli_run in runs:
        assert cli_run.tags["dagster/partition"] == ref.key == cli_run.tags["datalake/partition"]
        assert (cli_run.tags["datalake/provider"], cli_run.tags["datalake/variant"]) == ("aihub", "mixed")
