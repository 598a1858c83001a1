"""Every name the lake accepts fits every path, key and tag it builds (names of the maximum length, 64).

Limits: a file name is at most 255 bytes (NAME_MAX of ext4/XFS/btrfs/APFS), an S3 key at most 1,024 bytes
(AWS "Creating object key names"), Dagster run tags and dynamic partition keys are stored as text with no
length limit (only definition tags are held to 63 characters, and partition keys must not contain ``...``).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from PIL import Image

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lake.layout import MAX_FILE_NAME_BYTES, PartitionRef, fitted_file_name
from datalake_pipelines.core.storage.backends import S3Storage
from datalake_pipelines.core.storage.files import temp_sibling
from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.ingest.sensors import staging_sensor
from datalake_pipelines.lib.partitions import LakePartitionKey, is_valid_partition_key
from datalake_pipelines.lib.resources import LakeResource

P, D, T, V = ("p" * 63 + "1", "d" * 63 + "2", "t" * 63 + "3", "v" * 63 + "4")  # 64 characters each
REF = PartitionRef(P, D, T, V)


def configure(base, capsys) -> None:
    assert main(["--base-path", str(base), "config", "provider", "create", "--name", P]) == 0
    assert main(["--base-path", str(base), "config", "task", "create", "--name", T, "--required-fields", ""]) == 0
    capsys.readouterr()


def upload(base, tmp_path, n: int = 3) -> str:
    paths = []
    for i in range(n):
        path = tmp_path / "src" / f"{'x' * 200}{i}.png"  # long user file names too
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8 + i, 8), (i, 9, 9)).save(path)
        paths.append(str(path))
    pd.DataFrame({"image": paths, "text": [f"t{i}" for i in range(n)]}).to_parquet(tmp_path / "d.parquet")
    args = ["--base-path", str(base), "upload", "--type", "task", "--data", str(tmp_path / "d.parquet")]
    args += ["--provider", P, "--dataset", D, "--task", T, "--variant", V, "--job-id", "j" * 128]
    assert main(args) == 0
    return "j" * 128


def test_file_names_derived_from_names_fit():
    assert len(REF.key) == 259
    assert len(fitted_file_name(REF.key.replace("/", "."), ".lock").encode()) <= MAX_FILE_NAME_BYTES
    assert fitted_file_name("short", ".lock") == "short.lock"
    a, b = fitted_file_name("é" * 200 + "a", ".x"), fitted_file_name("é" * 200 + "b", ".x")
    assert a != b and len(a.encode()) <= MAX_FILE_NAME_BYTES and a.endswith(".x")  # no split UTF-8 sequence
    long = temp_sibling(Path("/tmp") / ("n" * 255))
    assert len(long.name.encode()) <= MAX_FILE_NAME_BYTES and long.name.startswith(".")


def test_maximum_names_end_to_end_local(tmp_path, capsys):
    base = tmp_path / "lake"
    configure(base, capsys)
    upload(base, tmp_path)
    client = DatalakeClient(base, progress=False)
    for result in client.process_pending():
        assert result.status == "done", result.error
    with DuckDBClient(base_path=base) as duck:
        rows = duck.retrieve_with_existing_cols(providers=[P], datasets=[D], tasks=[T], variants=[V])
    assert sorted(rows["text"]) == ["t0", "t1", "t2"]
    assert main(["--base-path", str(base), "catalog", "verify"]) == 0
    for path in base.rglob("*"):
        assert len(path.name.encode()) <= MAX_FILE_NAME_BYTES


def test_maximum_names_through_the_sensor_and_a_dagster_run(tmp_path, capsys):
    base = tmp_path / "lake"
    configure(base, capsys)
    job = upload(base, tmp_path)
    key = LakePartitionKey(REF)
    assert is_valid_partition_key(key.key) and key.tags()["datalake/partition"] == REF.key
    resources = {"lake": LakeResource(base_path=str(base)), "s3": S3Resource()}
    with dg.instance_for_test() as instance:
        result = staging_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        [request] = result.run_requests
        assert request.partition_key == REF.key and request.run_key == job
        for req in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        outcome = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            resources=resources,
            raise_on_error=False,
        )
        assert outcome.success
        run = instance.get_run_by_id(outcome.run_id)
        assert run.tags["datalake/partition"] == REF.key and run.tags["datalake/variant"] == V
        assert instance.get_dynamic_partitions("lake_partitions") == [REF.key]
        checks = [e for e in outcome.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert checks and all(e.event_specific_data.passed for e in checks)


def test_maximum_names_on_s3(s3_lake, tmp_path, capsys):
    configure(s3_lake, capsys)
    upload(s3_lake, tmp_path)
    for result in DatalakeClient(s3_lake, progress=False).process_pending():
        assert result.status == "done", result.error
    keys = [o.key for o in S3Storage(s3_lake).list("")]
    assert any(k.startswith("catalog/provider=" + P) for k in keys)
    longest = max(len(f"lake/{k}".encode()) for k in keys)
    assert longest <= 1024
    assert main(["--base-path", s3_lake, "catalog", "verify"]) == 0
