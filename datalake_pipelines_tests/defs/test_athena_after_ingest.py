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


def test_process_start_registers_new_partitions_in_glue(s3_lake, tmp_path, make_jpeg):
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
