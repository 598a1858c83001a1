"""Every run that writes a partition is limited and tagged the same way, seen through a real webserver + daemon.

A backfill launched through GraphQL (``launchPartitionBackfill``, what the asset page's Materialize dialog sends)
and a staging-sensor run of the same partition are queued at once: the ``dagster/partition`` limit in
``config/dagster.yaml`` runs them one after the other, and the backfill run carries the ``datalake/*`` tags. The
same daemon refuses a hand drop of an unknown provider: the ``staging_queue`` observation and the sensor's skip
reason say so. On a local folder and on S3 (moto), where nothing but this limit keeps two writers apart.
"""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.services.runner import batch_status, start_pending
from datalake_pipelines_tests.support.webserver import DagsterUI, prepare_home

pytestmark = pytest.mark.timeout(400)

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""

BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill {
  status runs { runId } } } }"""

QUEUE_OBSERVATIONS = """{ assetNodeOrError(assetKey: {path: ["staging_queue"]}) { ... on AssetNode {
  assetObservations(limit: 20) { metadataEntries { label ... on TableMetadataEntry { table { records } } } } } } }"""

SENSOR_TICKS = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { ... on Sensor {
  sensorState { ticks(limit: 50) { status skipReason } } } } }"""


def wait_for(predicate, timeout: float, what: str, ui: DagsterUI):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{ui.log_tail('dagster-daemon')}"
        time.sleep(0.5)
    return value


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_backfill_and_sensor_run_of_one_partition_never_overlap(kind, request, tmp_path, monkeypatch, make_jpeg):
    base = request.getfixturevalue("s3_lake") if kind == "s3" else str(tmp_path / "lake")
    home = prepare_home(tmp_path / "dagster_home")
    env = {
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": base,
        "DATALAKE_SENSOR_INTERVAL": "1",
        "DATALAKE_QUIET_SECONDS": "1",
        "DATALAKE_NUM_PROC": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = DatalakeClient(base, progress=False)

    def batch(name: str, n: int) -> str:
        paths = [str(make_jpeg(tmp_path / name / f"i{i}.jpg")) for i in range(n)]
        return client.upload_raw_data(pd.DataFrame({"image": paths}), "inhouse", "limit", "limit test")[1]

    instance = dg.DagsterInstance.get()
    batch("first", 2)
    start_pending(base, instance, echo=lambda *a: None)  # the partition exists, with files to rebuild
    [key] = instance.get_dynamic_partitions("lake_partitions")
    second = batch("second", 20)  # the staging sensor's run of the same partition
    lake = open_lake(base)
    manifest = json.dumps({"provider": "acme", "dataset": "x"}).encode()
    lake.storage.write_bytes(f"{keys.pending_batch('acme_drop')}/{keys.BATCH_MANIFEST}", manifest)

    with DagsterUI(home, env, daemon=False, log_dir=tmp_path) as ui:
        launched = ui.graphql(
            LAUNCH_BACKFILL,
            {"params": {"partitionNames": [key], "assetSelection": [{"path": ["catalog_partition"]}]}},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        ui.start_daemon()  # its first iterations create both runs: the backfill's and the sensor's

        def backfill_done():
            backfill = ui.graphql(BACKFILL, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            return backfill if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

        backfill = wait_for(backfill_done, 240, "the backfill", ui)
        wait_for(lambda: batch_status(base, None, second)["state"] in ("done", "failed"), 240, "the sensor run", ui)
        sensor_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": second}))
        wait_for(lambda: sensor_runs and instance.get_run_by_id(sensor_runs[0].run_id).is_finished, 120, "end", ui)

        # The refused hand drop: in the staging_queue observation and in the sensor's skip reason.
        def refused_rows():
            observations = ui.graphql(QUEUE_OBSERVATIONS)["assetNodeOrError"]["assetObservations"]
            return [
                row
                for obs in observations
                for entry in obs["metadataEntries"]
                if entry["label"] == "batches"
                for row in map(json.loads, entry["table"]["records"])
                if row["job_id"] == "acme_drop" and row["state"] == "refused"
            ]

        [row] = wait_for(refused_rows, 60, "the staging_queue observation", ui)[:1]
        assert row["reason"] == "unknown provider 'acme'"
        selector = {**ui.repository_selector(), "sensorName": "staging_sensor"}

        def skip_reasons():
            ticks = ui.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]
            return [t["skipReason"] for t in ticks if "1 refused: unknown provider 'acme'" in (t["skipReason"] or "")]

        wait_for(skip_reasons, 60, "a skip reason naming the refusal", ui)

    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    [backfill_run_id] = [r["runId"] for r in backfill["runs"]]
    [sensor_run] = sensor_runs
    by_partition = dg.RunsFilter(tags={"dagster/partition": key})
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(filters=by_partition)}
    b, s = records[backfill_run_id], records[sensor_run.run_id]
    assert b.dagster_run.status == s.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    first, then = sorted((b, s), key=lambda r: r.start_time)
    assert then.create_timestamp.timestamp() < first.end_time, "both runs must have been queued at once"
    assert first.end_time <= then.start_time, "two runs wrote one partition at the same time"
    tags = b.dagster_run.tags
    assert tags["dagster/backfill"] == launched["backfillId"]
    assert (tags["datalake/partition"], tags["datalake/provider"], tags["datalake/dataset"]) == (
        key,
        "inhouse",
        "limit",
    )
    assert s.dagster_run.tags["datalake/job_ids"] == second
