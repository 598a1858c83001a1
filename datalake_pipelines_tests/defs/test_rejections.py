"""Rejected files in ``catalog_partition`` runs on a real instance, on a local lake and on S3 (moto): WARNING log
lines, the ``rejected_files`` table, the WARN check, the history in ``_metadata.json`` that a rebuild keeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.definitions import defs
from datalake_pipelines_tests.support.s3_pipeline import resources, run, tick

REF = PartitionRef("inhouse", "scans", "raw", "mixed")
COLUMNS = ["file", "row", "column", "reason", "quarantine", "job_id", "batch_file"]


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    return request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def images(make_jpeg, folder: Path, names: list[str], truncated: list[str] = ()) -> list[str]:
    """JPEGs named ``names`` in ``folder`` (random pixels: each is new); those in ``truncated`` cut in half."""
    paths = []
    for name in names:
        path = make_jpeg(folder / name)
        if name in truncated:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        paths.append(str(path))
    return paths


def ingest(instance, base: str, paths: list[str], cursor=None):
    """Upload ``paths`` as one batch, tick the staging sensor, run the ingest job; return the job id, the run's
    outcome and the sensor's cursor."""
    client = DatalakeClient(base, progress=False)
    _, job_id = client.upload_raw_data(pd.DataFrame({"image": paths, "n": range(len(paths))}), "inhouse", "scans")
    result = tick(instance, base, cursor)
    [request] = result.run_requests
    return job_id, run(instance, base, request, result), result.cursor


def rebuild(instance, base: str):
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=REF.key, resources=resources(base)
    )


def materialization(outcome) -> dict:
    return outcome.asset_materializations_for_node("catalog_partition")[0].metadata


def records(entry: dg.TableMetadataValue) -> list[dict]:
    return [dict(r.data) for r in entry.records]


def checks(outcome) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in outcome.get_asset_check_evaluations()}


def warnings_of(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING]


def test_a_truncated_image_is_named_everywhere_and_its_history_survives_rebuilds(base, instance, make_jpeg, tmp_path):
    lake = open_lake(base)
    src = tmp_path / "src"
    paths = images(make_jpeg, src, ["a.jpg", "b.jpg", "c.jpg", "bad.jpg"], truncated=["bad.jpg"])
    job_id, outcome, cursor = ingest(instance, base, paths)
    assert outcome.success  # the three good rows are in; the bad one is quarantined
    meta = materialization(outcome)
    quarantine = f"{base}/staging/failed/{job_id}-rejected"
    # the full reason as the lake recorded it in the quarantine's error.json
    [recorded] = json.loads(lake.storage.read_bytes(f"{keys.rejected_batch(job_id)}/error.json"))["rejected"]
    assert len(recorded["reason"]) > 60  # the table used to cut it at 60 characters

    # the table: a real TableSchema, the file under `file`, the whole reason, the quarantine folder
    table = meta["rejected_files"]
    assert [c.name for c in table.schema.columns] == COLUMNS
    [rejected] = records(table)
    assert rejected["file"] == str(src / "bad.jpg") and rejected["row"] == 3 and rejected["column"] == "image"
    assert rejected["reason"] == recorded["reason"] and rejected["quarantine"] == quarantine
    assert rejected["job_id"] == job_id and rejected["batch_file"] == recorded["file"]
    assert meta["files_rejected"].value == 1 and meta["rows_rejected"].value == 1

    # one WARNING naming the file, the column, the whole reason and the quarantine folder
    [warning] = [w for w in warnings_of(instance, outcome.run_id) if "rejected file" in w]
    assert str(src / "bad.jpg") in warning and "'image'" in warning
    assert recorded["reason"] in warning and quarantine in warning

    # the WARN check fails; the run stays a success and the integrity checks pass
    evaluations = checks(outcome)
    assert not evaluations["no_rejected_files"].passed
    assert evaluations["no_rejected_files"].severity == dg.AssetCheckSeverity.WARN
    assert "bad.jpg" in evaluations["no_rejected_files"].description
    assert all(evaluations[n].passed for n in ("asset_files_match_hashes", "no_duplicate_rows"))

    # the partition's _metadata.json keeps the rejection (lake-relative quarantine: the same on both backends)
    doc = json.loads(lake.storage.read_bytes(keys.partition_metadata(REF)))
    [entry] = doc["rejections"]
    assert entry["job_id"] == job_id and entry["run_id"] == outcome.run_id
    assert entry["quarantine"] == keys.rejected_batch(job_id)
    assert entry["files"][0]["file"] == str(src / "bad.jpg")

    # rebuilds (twice: idempotent) reject nothing, pass the check and still show the earlier rejection
    for _ in range(2):
        again = rebuild(instance, base)
        assert again.success
        meta = materialization(again)
        assert meta["mode"].value == "rebuild" and records(meta["rejected_files"]) == []
        [past] = records(meta["rejection_history"])
        assert (past["file"], past["reason"], past["quarantine"]) == (
            str(src / "bad.jpg"),
            recorded["reason"],
            quarantine,
        )
        assert meta["history_files_rejected"].value == 1
        evaluation = checks(again)["no_rejected_files"]
        assert evaluation.passed and "history holds 1 rejected file" in evaluation.description

    # the same good images again with another bad one: no row is added (no part file), yet the history
    # records the rejection on both backends (on S3 the partition's _metadata.json is published for it)
    more = images(make_jpeg, tmp_path / "src2", ["worse.jpg"], truncated=["worse.jpg"])
    second, outcome, cursor = ingest(instance, base, paths[:3] + more, cursor)
    meta = materialization(outcome)
    assert outcome.success and meta["rows_added"].value == 0 and meta["rows_duplicate"].value == 3
    assert not checks(outcome)["no_rejected_files"].passed
    history = records(meta["rejection_history"])
    assert [h["file"] for h in history] == [more[0], str(src / "bad.jpg")]  # newest first
    doc = json.loads(lake.storage.read_bytes(keys.partition_metadata(REF)))
    assert [e["job_id"] for e in doc["rejections"]] == [job_id, second]

    # a clean batch: the check passes, the history is still shown
    clean = images(make_jpeg, tmp_path / "src3", ["d.jpg", "e.jpg"])
    _, outcome, _ = ingest(instance, base, clean, cursor)
    assert outcome.success and checks(outcome)["no_rejected_files"].passed
    meta = materialization(outcome)
    assert records(meta["rejected_files"]) == [] and meta["history_files_rejected"].value == 2
    assert not [w for w in warnings_of(instance, outcome.run_id) if "rejected file" in w]
