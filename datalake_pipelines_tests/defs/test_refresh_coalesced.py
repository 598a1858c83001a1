"""catalog.duckdb is refreshed by the ingest runs themselves, coalesced; the sensor only refreshes what they left.

On a real (temporary) instance: an ingest run materializes ``duckdb_catalog`` in its own step (no refresh run);
a run followed by a later queued ingest run leaves the refresh to it; ``refresh_on_ingest`` requests a run only
for ingests no refresh covers, once no catalog writer is in flight.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake.open import duckdb_file_of
from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.warehouse.assets import refresh_on_ingest
from datalake_pipelines.lib import after_ingest
from datalake_pipelines.lib.after_ingest import COVERS_KEY, ingest_refresh_skip, refresh_state
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines.services.runner import start_pending
from datalake_pipelines_tests.support.s3_pipeline import tick

INGEST = defs.resolve_job_def("ingest_job")


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    return request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")


def resources(base: str) -> dict:
    return {
        "lake": LakeResource(base_path=base),
        "s3": S3Resource(),
        "duckdb": DuckDBResource(database=str(duckdb_file_of(base))),
    }


def ingest(instance, base: str) -> dg.ExecuteInProcessResult:
    result = tick(instance, base)
    [request] = result.run_requests
    instance.add_dynamic_partitions("lake_partitions", [request.partition_key])
    return INGEST.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags, resources=resources(base)
    )


def sensor(instance) -> dg.SensorResult | dg.SkipReason:
    return refresh_on_ingest(dg.build_sensor_context(instance=instance))


def test_the_ingest_run_refreshes_catalog_duckdb_itself(base, make_jpeg, tmp_path):
    client = DatalakeClient(base, progress=False)
    with dg.instance_for_test() as instance:
        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "aihub", "one")
        first = ingest(instance, base)
        [refreshed] = first.asset_materializations_for_node("duckdb_catalog")
        [ingested] = instance.fetch_materializations(dg.AssetKey("catalog_partition"), limit=1).records
        assert refreshed.metadata[COVERS_KEY].value == ingested.storage_id
        assert refreshed.metadata["dagster/row_count"].value == 1
        assert not refresh_state(instance).stale
        skip = sensor(instance)
        assert isinstance(skip, dg.SkipReason) and "up to date" in skip.skip_message
        assert {r.job_name for r in instance.get_runs()} == {"ingest_job"}  # no refresh run

        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "b.jpg"))]}), "aihub", "two")
        second = ingest(instance, base)
        assert second.asset_materializations_for_node("duckdb_catalog")[0].metadata["dagster/row_count"].value == 2


def test_a_later_ingest_run_in_flight_takes_the_refresh_and_the_sensor_waits():
    with dg.instance_for_test() as instance:
        me = instance.create_run_for_job(INGEST, status=dg.DagsterRunStatus.STARTED)
        instance.report_runless_asset_event(dg.AssetMaterialization("duckdb_catalog", metadata={COVERS_KEY: 0}))
        instance.report_runless_asset_event(dg.AssetMaterialization("catalog_partition", partition="a/b/raw/image"))
        assert refresh_state(instance).stale
        later = instance.create_run_for_job(INGEST, status=dg.DagsterRunStatus.NOT_STARTED)  # created, not started
        reason = ingest_refresh_skip(instance, me.run_id)
        assert reason is not None and later.run_id in reason
        assert ingest_refresh_skip(instance, later.run_id) is None  # the newest run refreshes
        now = refresh_state(instance).refreshed_at + after_ingest.MAX_REFRESH_LAG_SECONDS + 1
        assert ingest_refresh_skip(instance, me.run_id, now=now) is None  # never later than the lag

        waiting = sensor(instance)
        assert isinstance(waiting, dg.SkipReason) and "waiting for 2 run(s)" in waiting.skip_message
        for run in (me, later):
            instance.report_run_failed(run, "the catalog step failed: no refresh step ran")
        [request] = sensor(instance).run_requests  # nothing in flight, ingests uncovered: one refresh run
        assert request.run_key == f"refresh-{refresh_state(instance).latest_ingest}"


def test_process_start_refreshes_once_in_its_last_run(tmp_path, make_jpeg):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    for dataset in ("one", "two", "three"):
        image = str(make_jpeg(tmp_path / dataset / "a.jpg"))
        client.upload_raw_data(pd.DataFrame({"image": [image]}), "aihub", dataset)
    with dg.instance_for_test() as instance:
        outcomes = start_pending(str(tmp_path / "lake"), instance, echo=lambda *a: None)
        assert [o["state"] for o in outcomes] == ["done"] * 3
        runs = instance.get_runs()  # newest first
        assert [r.job_name for r in runs] == ["ingest_job"] * 3  # no refresh run of its own
        [refresh] = instance.fetch_materializations(dg.AssetKey("duckdb_catalog"), limit=5).records
        assert refresh.run_id == runs[0].run_id and not refresh_state(instance).stale
        assert refresh.asset_materialization.metadata["dagster/row_count"].value == 3
        assert [r.tags.get("datalake/refresh") for r in runs] == [None, "later", "later"]
