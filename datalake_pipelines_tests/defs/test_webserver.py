"""The UI's view through a real dagster-webserver's GraphQL API: assets, sensors, and a partition backfill run."""

import time

import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.services.runner import batch_status
from datalake_pipelines_tests.support.webserver import DagsterUI, prepare_home

pytestmark = pytest.mark.timeout(300)

ASSETS_AND_SENSORS = """query($repo: RepositorySelector!) {
  assetNodes { assetKey { path } }
  sensorsOrError(repositorySelector: $repo) { __typename ... on Sensors { results { name sensorState { status } } } }
}"""

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""

PARTITION_KEYS = """{ assetNodeOrError(assetKey: {path: ["catalog_partition"]}) {
  ... on AssetNode { partitionKeysByDimension { partitionKeys } } } }"""

BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill {
  status runs { runId status tags { key value } } } } }"""


@pytest.fixture
def ui_env(tmp_path, monkeypatch):
    home = prepare_home(tmp_path / "dagster_home")
    lake = tmp_path / "lake"
    env = {
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": str(lake),
        "DATALAKE_SENSOR_INTERVAL": "1",
        "DATALAKE_NUM_PROC": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return home, lake, env


def test_assets_sensor_and_backfill_through_graphql(ui_env, make_jpeg, tmp_path):
    home, lake, env = ui_env
    client = DatalakeClient(lake, progress=False)
    paths = [str(make_jpeg(tmp_path / "src" / f"i{i}.jpg")) for i in range(3)]
    _, job_id = client.upload_raw_data(pd.DataFrame({"image": paths, "n": [1, 2, 3]}), "inhouse", "ui", "ui test")
    with DagsterUI(home, env, daemon=True, log_dir=tmp_path) as ui:
        data = ui.graphql(ASSETS_AND_SENSORS, {"repo": ui.repository_selector()})
        keys = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
        assert {"catalog_partition", "duckdb_catalog"} <= keys
        sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
        assert sensors.get("staging_sensor") == "RUNNING"

        # The daemon's staging sensor ingests the batch (and adds its partition key).
        deadline = time.monotonic() + 120
        while batch_status(client.layout, None, job_id)["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, ui.log_tail("dagster-daemon")
            time.sleep(0.5)
        assert batch_status(client.layout, None, job_id)["state"] == "done"

        # A rebuild of that partition, launched the way the UI's "Materialize" dialog launches a backfill.
        keys = ui.graphql(PARTITION_KEYS)["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"]
        [key] = [k for k in keys if k.startswith("inhouse/ui/")]
        launched = ui.graphql(
            LAUNCH_BACKFILL,
            {"params": {"partitionNames": [key], "assetSelection": [{"path": ["catalog_partition"]}]}},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        deadline = time.monotonic() + 150
        while True:
            backfill = ui.graphql(BACKFILL, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
                break
            assert time.monotonic() < deadline, (backfill, ui.log_tail("dagster-daemon"))
            time.sleep(1)
        assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
        [run] = backfill["runs"]
        assert run["status"] == "SUCCESS"
        assert {"key": "dagster/partition", "value": key} in run["tags"]
