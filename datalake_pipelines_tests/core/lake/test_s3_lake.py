"""What only an S3 lake does (moto's HTTP server): the end-to-end path with Athena and catalog.duckdb, drops
still being uploaded, the publish guard, bucket prefixes, multipart uploads, S3-specific CLI answers.

The queue cases every backend shares are in ``test_lake_contract.py``."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.core.lake import keys as lake_keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.open import duckdb_file_of
from datalake_pipelines.core.lake.s3 import S3Lake
from datalake_pipelines.core.storage.backends import S3Storage, split_s3_uri
from datalake_pipelines.definitions import build_defs, defs
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


def test_s3_ingest_end_to_end(instance, s3_lake, s3_client_api, corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DATALAKE_ATHENA", "on")  # moto serves Glue, though its endpoint is not AWS's
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
    assert checks == {
        "no_rejected_files": False,  # the broken image: a warning, the run itself a success
        "asset_files_match_hashes": True,
        "no_duplicate_rows": True,
        "required_meta_present": True,
    }

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
    athena_run = (
        build_defs(base=s3_lake)
        .resolve_job_def("refresh_athena_tables")
        .execute_in_process(instance=instance, resources=run_resources)
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
            "duckdb": DuckDBResource(database=str(duckdb_file_of(s3_lake))),
        },
    )
    assert refresh.success and S3Storage(s3_lake).exists("catalog.duckdb")


def test_a_drop_being_uploaded_in_parts_is_not_failed(instance, s3_lake, monkeypatch):
    # S3-only: an object of a multipart upload is listed only once complete (with the time it began), so a drop
    # whose last object is still uploading looks idle; the grace period counts from its newest part instead.
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(sensors, "GRACE_SECONDS", 4.0)
    storage = S3Storage(s3_lake)
    storage.write_bytes("staging/pending/big/a.txt", b"x")
    key = f"{storage.prefix}/staging/pending/big/huge.bin"
    upload = storage.client.create_multipart_upload(Bucket=storage.bucket, Key=key)["UploadId"]
    time.sleep(5.2)
    storage.client.upload_part(Bucket=storage.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"y" * 1024)
    assert tick(instance, s3_lake).run_requests == []
    assert keys(s3_lake, "staging/failed") == [], "a part arrived within the grace period: still waiting"
    storage.client.abort_multipart_upload(Bucket=storage.bucket, Key=key, UploadId=upload)
    time.sleep(5.2)
    assert tick(instance, s3_lake).run_requests == []
    error = json.loads(storage.read_bytes("staging/failed/big/error.json"))
    assert "the batch has no _metadata.json" in error["error"]
    assert storage.read_bytes("staging/failed/big/a.txt") == b"x"


def test_publishing_never_replaces_the_part_of_a_done_batch(s3_lake, s3_client_api, make_jpeg, tmp_path):
    # The last guard behind staging and claiming (test_lake_contract.py): a second batch of a done job id that
    # got past both (here claimed directly) fails instead of replacing part-<job>.parquet and the job record.
    from datalake_pipelines.core.ingest.processing import ProcessOptions

    lake = S3Lake(s3_lake)
    make_jpeg(tmp_path / "a" / "a.jpg")
    s3_client_api.upload_raw_data(tmp_path / "a", "aihub", "receipts", job_id="jobA")
    assert [r.status for r in lake.process_pending(ProcessOptions(num_proc=2))] == ["done"]
    part, record = lake_keys.part_file(RAW, "jobA"), lake_keys.job_record("jobA")
    before = {k: lake.storage.read_bytes(k) for k in (part, record, lake_keys.partition_metadata(RAW))}
    image = make_jpeg(tmp_path / "b.jpg", color=(9, 200, 90)).read_bytes()
    lake.storage.write_bytes("staging/pending/jobA/b.jpg", image)
    lake.storage.write_bytes("staging/pending/jobA/_metadata.json", b'{"provider": "aihub", "dataset": "receipts"}')
    assert lake.claim("jobA", "jobA", RAW)
    [result] = lake.process(["jobA"], ProcessOptions(num_proc=2))
    assert result.status == "failed" and result.rows_added == 0
    assert "job id 'jobA' is already used in this lake" in result.error and "was not replaced" in result.error
    assert {k: lake.storage.read_bytes(k) for k in before} == before
    assert lake.storage.read_bytes("staging/failed/jobA/b.jpg") == image
    assert keys(s3_lake, "staging/pending") == [] and lake.claims() == []


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
    rebuilt = json.loads(capsys.readouterr().out)
    assert rebuilt["rows"] == 3 and rebuilt["database"] == f"{s3_lake}/catalog.duckdb"  # the lake's, not the cache's
    assert cli("catalog", "rebuild") == 0
    assert capsys.readouterr().out.startswith(f"rebuilt {s3_lake}/catalog.duckdb: 1 partitions")
    # downloads read the S3 lake itself, never a local scratch folder (the contract suite covers every format)
    assert cli("download", "--provider", "scanner_co", "--out", str(tmp_path / "dl"), "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3
    got = DatalakeClient(s3_lake, progress=False).download({"providers": ["scanner_co"]}, out_dir=tmp_path / "dl2")
    assert got["rows"] == 3
    # preview and profile read the partition through a work lake and the images from S3; outputs are local
    key = "scanner_co/scans/raw/image"
    assert cli("preview", "--partition", key, "--out", str(tmp_path / "gallery"), "--json") == 0
    gallery = json.loads(capsys.readouterr().out)
    assert gallery["thumbnails"] == 3 and gallery["skipped"] == []
    copies = sorted(p.read_bytes() for p in (tmp_path / "gallery" / "images").iterdir())
    assert copies == sorted(p.read_bytes() for p in (tmp_path / "src").iterdir())
    assert cli("profile", "--partition", key, "--png", str(tmp_path / "p.png"), "--json") == 0
    image = json.loads(capsys.readouterr().out)["images"]["image"]
    assert image["unknown_sizes"] == 0 and image["file_bytes"]["count"] == 3  # from the published hash index
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    runs = S3Lake(s3_lake).cache / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # the work lakes are gone


def test_a_settling_hand_drop_is_claimed_by_a_later_tick(
    instance, s3_lake, s3_client_api, monkeypatch, make_jpeg, tmp_path
):
    storage = S3Storage(s3_lake)
    doc = {"provider": "aihub", "dataset": "receipts"}
    storage.write_bytes("staging/pending/drop2/_metadata.json", json.dumps(doc).encode())
    time.sleep(1.5)  # the manifest is older than the batch's newest object
    storage.upload(make_jpeg(tmp_path / "a.jpg"), "staging/pending/drop2/a.jpg")
    make_jpeg(tmp_path / "src" / "b.jpg")
    _, job = s3_client_api.upload_raw_data(tmp_path / "src", "aihub", "receipts")  # a newer, complete batch
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 3.0)
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 600.0)  # the first tick's claim is not re-issued here
    first = tick(instance, s3_lake)
    assert [r.run_key for r in first.run_requests] == [job]  # the hand drop is still settling
    time.sleep(4.6)  # past the quiet time by more than a second: a listing's LastModified has whole seconds
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


def test_cli_names_a_missing_bucket(s3_lake, make_jpeg, tmp_path, capsys):
    from datalake_pipelines.cli.main import main

    make_jpeg(tmp_path / "src" / "a.jpg")
    args = ["upload", "--type", "raw", "--data", str(tmp_path / "src"), "--provider", "aihub", "--dataset", "d"]
    assert main(["--base-path", "s3://no-such-bucket-here/lake", *args]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err


def test_a_hand_drop_is_never_older_than_it_really_is(s3_lake):
    """S3 lists ``LastModified`` in whole seconds (moto and AWS alike), so a drop at 12.9 s reads as 12.0 s;
    the quiet period must count from the end of that second, or a drop still being copied is claimed up to a
    second early (found as a flaky contract test under load)."""
    lake = S3Lake(s3_lake)
    for n in range(5):
        time.sleep(0.3)
        before = time.time()
        lake.storage.write_bytes(f"{lake_keys.pending_batch('drop')}/f{n}.bin", b"x")
        assert lake.newest_change("drop").timestamp() >= before
