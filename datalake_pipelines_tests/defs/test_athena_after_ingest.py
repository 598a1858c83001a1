"""Athena partitions are registered after every ingest, also one started by ``datalake process start``
(services.runner), not only after the daemon's ``athena_on_ingest`` sensor; a local lake has no Athena step."""

from __future__ import annotations

import uuid

import boto3
import dagster as dg
import pandas as pd

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines.services.runner import refresh_athena, start_pending


def _stage(base: str, dataset: str, tmp_path, make_jpeg) -> None:
    client = DatalakeClient(base, num_proc=1, progress=False)
    frame = pd.DataFrame({"image": [str(make_jpeg(tmp_path / f"{dataset}.jpg"))], "uid": ["a"]})
    client.upload_task_data(frame, "aihub", dataset, "ocr", "w", meta={"lang": "ko", "src": "real"})


def test_process_start_registers_new_partitions_in_glue(s3_lake, tmp_path, make_jpeg, monkeypatch):
    monkeypatch.setenv("DATALAKE_ATHENA", "on")  # moto serves Glue, though its endpoint is not AWS's
    dataset = f"d{uuid.uuid4().hex[:8]}"
    _stage(s3_lake, dataset, tmp_path, make_jpeg)
    with dg.instance_for_test() as instance:
        outcomes = start_pending(s3_lake, instance, quiet_seconds=0, echo=lambda *_: None)
        assert [o["state"] for o in outcomes] == ["done"]
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="refresh_athena_tables"))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    parts = boto3.client("glue").get_partitions(DatabaseName="datalake", TableName="catalog_ocr")["Partitions"]
    assert ["aihub", dataset, "ocr", "w"] in [p["Values"] for p in parts]


def test_a_local_lake_has_no_athena_step(tmp_path, make_jpeg):
    base = str(tmp_path / "lake")
    _stage(base, "docs", tmp_path, make_jpeg)
    with dg.instance_for_test() as instance:
        outcomes = start_pending(LakeLayout(base), instance, quiet_seconds=0, echo=lambda *_: None)
        assert [o["state"] for o in outcomes] == ["done"]
        assert instance.get_runs(filters=dg.RunsFilter(job_name="refresh_athena_tables")) == []
        assert refresh_athena(instance, LakeResource(base_path=base)) is None


def test_a_failed_run_is_described_in_one_line():
    from datalake_pipelines.services.runner import QUIET_RUN, run_failure_reason

    @dg.asset
    def broken():
        raise ValueError("no Glue here\nsecond line")

    @dg.asset
    def refused():
        raise dg.Failure(description="needs an s3:// lake\nmore")

    with dg.instance_for_test() as instance:
        reasons = [
            run_failure_reason(dg.materialize([asset], instance=instance, raise_on_error=False, run_config=QUIET_RUN))
            for asset in (broken, refused)
        ]
    assert reasons == ["ValueError: no Glue here", "Failure: needs an s3:// lake"]
