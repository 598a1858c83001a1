"""A lake on S3 (moto's HTTP server): staging, sensor claims, runs, dedup, failures, queries."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster_duckdb import DuckDBResource

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.core.lake import keys as lake_keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.s3 import S3Lake
from datalake_pipelines.core.storage.backends import S3Storage, split_s3_uri
from datalake_pipelines.definitions import defs, duckdb_file
from datalake_pipelines.defs.athena.resources import AthenaSettings
from datalake_pipelines.defs.athena.sensors import athena_on_ingest
from datalake_pipelines.defs.ingest import sensors
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines_tests.support.s3_pipeline import resources, run, tick

RAW = PartitionRef("aihub", "receipts", "raw", "image")


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def s3_client_api(s3_lake):
    return DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)


def keys(s3_lake: str, prefix: str) -> list[str]:
    return sorted(o.key for o in S3Storage(s3_lake).list(prefix))


def valid_images(corpus_dir: Path, tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(parents=True)
    # decompression_bomb_extents.gif loads frame 0 only: its frame 2 is a 4.3 Gpx bomb (README "Image checks").
    valid = [p for p in sorted((corpus_dir / "valid").iterdir()) if p.name != "decompression_bomb_extents.gif"]
    for src in valid[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def test_s3_ingest_end_to_end(instance, s3_lake, s3_client_api, corpus_dir, tmp_path):
    folder = valid_images(corpus_dir, tmp_path)
    shutil.copy(next((corpus_dir / "invalid").iterdir()), folder / "zz_broken.jpg")
    staged, job = s3_client_api.upload_raw_data(folder, "aihub", "receipts")
    assert staged == f"{s3_lake}/staging/pending/{job}"
    assert f"staging/pending/{job}/_metadata.json" in keys(s3_lake, f"staging/pending/{job}")

    result = tick(instance, s3_lake)
    assert [r.run_key for r in result.run_requests] == [job]
    assert result.run_requests[0].partition_key == RAW.key
    assert S3Lake(s3_lake).read_claim(job).run_key == job
    outcome = run(instance, s3_lake, result.run_requests[0], result)
    assert outcome.success
    mat = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
    assert mat["rows_added"].value == 6 and mat["rows_rejected"].value == 1
    assert mat["images_new"].value == 6 and mat["bytes_stored"].value > 0
    assert mat["catalog_path"].value.startswith(f"{s3_lake}/catalog/provider=aihub/")

    # assets, catalog part, partition metadata and a hash-index segment are in S3; staging is clean
    assets = keys(s3_lake, "assets")
    assert len(assets) == 6 and all(k.startswith("assets/provider=aihub/dataset=receipts/") for k in assets)
    catalog = keys(s3_lake, "catalog")
    assert f"catalog/provider=aihub/dataset=receipts/task=raw/variant=image/part-{job}.parquet" in catalog
    assert keys(s3_lake, "index/segments") == [f"index/segments/{job}.parquet"]
    assert keys(s3_lake, "staging/pending") == [] and keys(s3_lake, "staging/processing") == []
    rejected = keys(s3_lake, f"staging/failed/{job}-rejected")
    error = json.loads(S3Storage(s3_lake).read_bytes(f"staging/failed/{job}-rejected/error.json"))
    assert [r["source"].endswith("zz_broken.jpg") for r in error["rejected"]] == [True]
    assert len([k for k in rejected if "/files/" in k]) == 1 and any(k.endswith("_metadata.json") for k in rejected)
    # the checks ran against S3 (asset hashes streamed back)
    checks = {c.check_name: c.passed for c in outcome.get_asset_check_evaluations()}
    assert checks == {"asset_files_match_hashes": True, "no_duplicate_rows": True, "required_meta_present": True}

    # a stored asset's bytes are the original's, under its own sha256
    storage = S3Storage(s3_lake)
    for key in assets:
        assert key.split("/")[-1].startswith(storage.sha256(key))

    # the same images again: nothing new stored, no rows added
    _, job2 = s3_client_api.upload_raw_data(valid_images(corpus_dir, tmp_path / "again"), "aihub", "receipts")
    result2 = tick(instance, s3_lake, result.cursor)
    assert [r.run_key for r in result2.run_requests] == [job2]
    outcome2 = run(instance, s3_lake, result2.run_requests[0], result2)
    mat2 = outcome2.asset_materializations_for_node("catalog_partition")[0].metadata
    assert mat2["images_new"].value == 0 and mat2["images_deduplicated"].value == 6
    assert mat2["rows_added"].value == 0 and mat2["rows_duplicate"].value == 6
    assert len(keys(s3_lake, "assets")) == 6

    # the catalog is queryable through DuckDB over S3
    with DuckDBClient(s3_lake) as duck:
        rows = duck.retrieve_with_existing_cols(providers=["aihub"], datasets=["receipts"])
    assert len(rows) == 6 and set(rows["provider"]) == {"aihub"}
    assert sorted(rows["image_sha256"]) == sorted(k.split("/")[-1].split(".")[0] for k in assets)

    # after ingest, the sensors refresh catalog.duckdb (uploaded to the lake) and register the Athena partition
    database = f"db_{split_s3_uri(s3_lake)[0].replace('-', '_')}"
    run_resources = {**resources(s3_lake), "athena": AthenaSettings(database=database)}
    athena_tick = athena_on_ingest(dg.build_sensor_context(instance=instance, resources=run_resources))
    assert len(athena_tick.run_requests) == 1
    athena_run = defs.resolve_job_def("refresh_athena_tables").execute_in_process(
        instance=instance, resources=run_resources
    )
    assert athena_run.success
    glue = boto3.client("glue")
    partitions = glue.get_partitions(DatabaseName=database, TableName="catalog_raw")["Partitions"]
    assert [p["Values"] for p in partitions] == [["aihub", "receipts", "raw", "image"]]
    assert partitions[0]["StorageDescriptor"]["Location"].startswith(f"{s3_lake}/catalog/provider=aihub/")
    again = dg.build_sensor_context(instance=instance, resources=run_resources, cursor=athena_tick.cursor)
    assert isinstance(athena_on_ingest(again), dg.SkipReason)  # nothing new was ingested since
    refresh = defs.resolve_job_def("refresh_catalog_db").execute_in_process(
        instance=instance,
        resources={
            "lake": LakeResource(base_path=s3_lake),
            "duckdb": DuckDBResource(database=str(duckdb_file(s3_lake))),
        },
    )
    assert refresh.success and S3Storage(s3_lake).exists("catalog.duckdb")


def test_task_data_and_invalid_batches_on_s3(instance, s3_lake, s3_client_api, make_jpeg, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)  # the hand-written batches below are complete
    images = [str(make_jpeg(tmp_path / f"im{i}.jpg")) for i in range(3)]
    df = pd.DataFrame({"image": images, "text": ["a", "b", "c"]})
    _, job = s3_client_api.upload_task_data(df, "aihub", "receipts", "ocr", "word", {"lang": "ko", "src": "real"})
    # a hand-written batch whose manifest names an unknown provider goes to failed/ without a run
    storage = S3Storage(s3_lake)
    storage.write_bytes("staging/pending/bad1/data.txt", b"x")
    storage.write_bytes(
        "staging/pending/bad1/_metadata.json", json.dumps({"provider": "nobody", "dataset": "d"}).encode()
    )
    storage.write_bytes("staging/pending/bad2/_metadata.json", b"{not json")
    result = tick(instance, s3_lake)
    assert [r.run_key for r in result.run_requests] == [job]
    for bad in ("bad1", "bad2"):
        error = json.loads(storage.read_bytes(f"staging/failed/{bad}/error.json"))
        assert error["job_id"] == bad and error["error"]
        assert not keys(s3_lake, f"staging/pending/{bad}") and not storage.exists(lake_keys.claim_marker(bad, local=False))
    assert storage.read_bytes("staging/failed/bad1/data.txt") == b"x"  # the original is kept
    assert "unknown provider 'nobody'" in json.loads(storage.read_bytes("staging/failed/bad1/error.json"))["error"]
    bad2 = json.loads(storage.read_bytes("staging/failed/bad2/error.json"))["error"]
    assert bad2.startswith(f"{s3_lake}/staging/pending/bad2/_metadata.json: not valid JSON")
    outcome = run(instance, s3_lake, result.run_requests[0], result)
    assert outcome.success
    part = f"catalog/provider=aihub/dataset=receipts/task=ocr/variant=word/part-{job}.parquet"
    fs, root = storage.arrow()
    table = pq.read_table(f"{root}/{part}", filesystem=fs)
    assert table.num_rows == 3 and set(table.column("lang").to_pylist()) == {"ko"}


def test_claim_is_exactly_once_and_a_lost_launch_is_reissued(instance, s3_lake, s3_client_api, make_jpeg, tmp_path):
    make_jpeg(tmp_path / "src" / "a.jpg")
    _, job = s3_client_api.upload_raw_data(tmp_path / "src", "aihub", "receipts")
    lake = S3Lake(s3_lake)
    assert lake.claim(job, job, RAW) is True
    assert lake.claim(job, job, RAW) is False  # a second claimer (another tick, another daemon) loses
    # the tick that claimed died before launching: the next tick does not re-claim but re-issues the run key
    marker = lake.read_claim(job)
    marker.claimed_ts = time.time() - 60
    lake.write_claim(marker)
    result = tick(instance, s3_lake)
    assert [r.run_key for r in result.run_requests] == [job]
    outcome = run(instance, s3_lake, result.run_requests[0], result)
    assert outcome.success
    # once launched, further ticks issue nothing for it
    assert tick(instance, s3_lake, result.cursor).run_requests == []


def test_failed_run_keeps_the_batch_in_failed(instance, s3_lake, s3_client_api, corpus_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for src in sorted((corpus_dir / "invalid").iterdir())[:3]:
        shutil.copy(src, folder / src.name)
    _, job = s3_client_api.upload_raw_data(folder, "aihub", "receipts")
    result = tick(instance, s3_lake)
    outcome = run(instance, s3_lake, result.run_requests[0], result)
    assert not outcome.success
    storage = S3Storage(s3_lake)
    error = json.loads(storage.read_bytes(f"staging/failed/{job}/error.json"))
    assert "rejected" in error["error"] and error["run_id"] == outcome.run_id
    kept = keys(s3_lake, f"staging/failed/{job}")
    assert len([k for k in kept if "/files/" in k]) == 3 and f"staging/failed/{job}/_metadata.json" in kept
    assert {r["source"].split("/")[-1] for r in error["rejected"]} == {p.name for p in folder.iterdir()}
    assert keys(s3_lake, "assets") == [] and keys(s3_lake, "catalog") == []  # nothing half-published
    assert keys(s3_lake, "staging/pending") == [] and not storage.exists(lake_keys.claim_marker(job, local=False))


def test_s3_base_from_environment_and_bucket_prefix(s3_lake, monkeypatch):
    bucket, prefix = split_s3_uri(s3_lake)
    assert prefix == "lake"
    monkeypatch.setenv("DATALAKE_BASE_PATH", s3_lake)
    assert LakeResource().kind == "s3" and LakeResource().base == s3_lake
    client = DatalakeClient(progress=False)
    assert client.base_path == s3_lake
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_cli_on_an_s3_lake(s3_lake, make_jpeg, tmp_path, capsys):
    from datalake_pipelines.cli.main import main

    def cli(*args: str) -> int:
        return main(["--base-path", s3_lake, *args])

    assert cli("config", "provider", "create", "--name", "scanner_co") == 0
    assert b"scanner_co" in S3Storage(s3_lake).read_bytes("config/schema.yaml")  # saved in the lake itself
    for i in range(3):
        make_jpeg(tmp_path / "src" / f"p{i}.jpg")
    code = cli(
        "upload",
        "--type",
        "raw",
        "--data",
        str(tmp_path / "src"),
        "--provider",
        "scanner_co",
        "--dataset",
        "scans",
        "--job-id",
        "scan1",
    )
    assert code == 0 and S3Storage(s3_lake).exists("staging/pending/scan1/_metadata.json")
    capsys.readouterr()
    assert cli("process", "status", "scan1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "pending"
    assert cli("process", "start") == 0
    assert "scan1: done" in capsys.readouterr().out
    assert cli("process", "status", "scan1", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done" and status["rows_added"] == 3
    assert len(keys(s3_lake, "assets/provider=scanner_co")) == 3
    assert S3Storage(s3_lake).exists("catalog.duckdb")  # process start refreshed it
    capsys.readouterr()
    assert cli("catalog", "rebuild", "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3
    # what needs a local lake says so instead of silently reading a local scratch folder
    assert cli("download", "--provider", "scanner_co", "--out", str(tmp_path / "dl")) != 0
    assert "S3 lake" in capsys.readouterr().err
    with pytest.raises(Exception, match="is an S3 lake"):
        DatalakeClient(s3_lake, progress=False).download({"providers": ["scanner_co"]}, out_dir=tmp_path / "dl2")


def test_a_run_that_died_is_requeued_once_then_failed(instance, s3_lake, s3_client_api, make_jpeg, tmp_path):
    make_jpeg(tmp_path / "src" / "a.jpg")
    _, job = s3_client_api.upload_raw_data(tmp_path / "src", "aihub", "receipts")
    lake = S3Lake(s3_lake)
    first = tick(instance, s3_lake)
    assert [r.run_key for r in first.run_requests] == [job]

    def died(run_key: str) -> None:  # a launched run whose worker vanished before it could clean up
        run = instance.create_run_for_job(
            job_def=defs.resolve_job_def("ingest_job"),
            tags={"dagster/run_key": run_key},
            status=dg.DagsterRunStatus.STARTED,
        )
        instance.report_run_failed(run, "worker killed")

    died(job)
    requeued = tick(instance, s3_lake, first.cursor)
    assert lake.read_claim(job).attempt == 2
    assert [r.run_key for r in requeued.run_requests] == []  # the new claim is issued on the next tick
    marker = lake.read_claim(job)
    retry = tick(instance, s3_lake, requeued.cursor)
    assert [r.run_key for r in retry.run_requests] == [marker.run_key] == [f"{job}.attempt2"]
    died(marker.run_key)
    tick(instance, s3_lake, retry.cursor)
    error = json.loads(S3Storage(s3_lake).read_bytes(f"staging/failed/{job}/error.json"))
    assert error["attempts"] == 2 and "ended (FAILURE)" in error["error"]
    assert keys(s3_lake, "staging/pending") == [] and lake.read_claim(job) is None


def test_hand_drop_waits_until_every_object_is_quiet(instance, s3_lake, monkeypatch, make_jpeg, tmp_path):
    storage = S3Storage(s3_lake)
    doc = {"provider": "aihub", "dataset": "receipts"}
    storage.write_bytes("staging/pending/drop1/_metadata.json", json.dumps(doc).encode())  # `aws s3 sync` order
    time.sleep(4.0)
    storage.upload(make_jpeg(tmp_path / "a.jpg"), "staging/pending/drop1/a.jpg")
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 3.0)  # the manifest is older than this, the image is not
    waiting = tick(instance, s3_lake)
    assert waiting.run_requests == [] and S3Lake(s3_lake).read_claim("drop1") is None
    time.sleep(3.2)
    ready = tick(instance, s3_lake, waiting.cursor)
    assert [r.run_key for r in ready.run_requests] == ["drop1"]
    assert run(instance, s3_lake, ready.run_requests[0], ready).success
    assert len(keys(s3_lake, "assets")) == 1


def test_a_waiting_hand_drop_is_not_skipped_by_the_cursor(
    instance, s3_lake, s3_client_api, monkeypatch, make_jpeg, tmp_path
):
    storage = S3Storage(s3_lake)
    doc = {"provider": "aihub", "dataset": "receipts"}
    storage.write_bytes("staging/pending/drop2/_metadata.json", json.dumps(doc).encode())
    time.sleep(6.5)  # more than the sensor's 5 s look-back
    storage.upload(make_jpeg(tmp_path / "a.jpg"), "staging/pending/drop2/a.jpg")
    make_jpeg(tmp_path / "src" / "b.jpg")
    _, job = s3_client_api.upload_raw_data(tmp_path / "src", "aihub", "receipts")  # a newer, complete batch
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 3.0)
    first = tick(instance, s3_lake)
    assert [r.run_key for r in first.run_requests] == [job]  # the hand drop is still settling
    time.sleep(3.2)
    second = tick(instance, s3_lake, first.cursor)
    assert [r.run_key for r in second.run_requests] == ["drop2"]


def test_multipart_threshold_comes_from_the_environment(s3_lake, monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_MULTIPART_THRESHOLD_MB", "5")
    storage = S3Storage(s3_lake)
    assert storage.transfer.multipart_threshold == 5 * 1024 * 1024
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(6 * 1024 * 1024))
    small.write_bytes(b"x" * 1000)
    storage.upload(big, "t/big.bin")
    storage.upload(small, "t/small.bin")
    bucket, prefix = split_s3_uri(s3_lake)
    head = boto3.client("s3").head_object
    assert "-" in head(Bucket=bucket, Key=f"{prefix}/t/big.bin")["ETag"]  # multipart ETags end in -<parts>
    assert "-" not in head(Bucket=bucket, Key=f"{prefix}/t/small.bin")["ETag"]
    assert storage.sha256("t/big.bin") == hashlib.sha256(big.read_bytes()).hexdigest()


def test_rebuild_compacts_an_s3_partition(instance, s3_lake, s3_client_api, make_jpeg, tmp_path):
    cursor = None
    for n in range(2):
        make_jpeg(tmp_path / f"src{n}" / "a.jpg")
        s3_client_api.upload_raw_data(tmp_path / f"src{n}", "aihub", "receipts")
        result = tick(instance, s3_lake, cursor)
        cursor = result.cursor
        assert run(instance, s3_lake, result.run_requests[0], result).success
    prefix = "catalog/provider=aihub/dataset=receipts/task=raw/variant=image"
    assert len([k for k in keys(s3_lake, prefix) if k.endswith(".parquet")]) == 2
    rebuild = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=RAW.key, resources=resources(s3_lake)
    )
    meta = rebuild.asset_materializations_for_node("catalog_partition")[0].metadata
    assert meta["mode"].value == "rebuild" and meta["files_compacted"].value == 2
    assert [k for k in keys(s3_lake, prefix) if k.endswith(".parquet")] == [f"{prefix}/data.parquet"]
    with DuckDBClient(s3_lake) as duck:
        assert len(duck.retrieve_with_existing_cols(providers=["aihub"])) == 2


def test_cli_names_a_missing_bucket(s3_lake, make_jpeg, tmp_path, capsys):
    from datalake_pipelines.cli.main import main

    make_jpeg(tmp_path / "src" / "a.jpg")
    args = ["upload", "--type", "raw", "--data", str(tmp_path / "src"), "--provider", "aihub", "--dataset", "d"]
    assert main(["--base-path", "s3://no-such-bucket-here/lake", *args]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err
