"""The UI's view through a real dagster-webserver's GraphQL API: assets, sensors, a rejected file, and a partition
backfill run (a rebuild) that is fast and still shows the rejection; on a local lake and on S3 (moto)."""

import json
import time

import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines_tests.support.webserver import DagsterUI, prepare_home

pytestmark = pytest.mark.timeout(300)

REBUILD_SECONDS = 5.0  # issue 17: a UI or backfill rebuild run of a small partition (it took 36-38 s)
REBUILD_TRIES = 3

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
  status runs { runId status startTime endTime tags { key value } } } } }"""

MATERIALIZATION = """query($key: String!) { assetNodeOrError(assetKey: {path: ["catalog_partition"]}) {
  ... on AssetNode { assetMaterializations(partitions: [$key], limit: 1) { runId metadataEntries {
    label __typename
    ... on TableMetadataEntry { table { records schema { columns { name } } } }
    ... on IntMetadataEntry { intValue }
    ... on JsonMetadataEntry { jsonString }
    ... on TextMetadataEntry { text } } } } } }"""

CHECK = """query($key: String!) { assetCheckExecutions(assetKey: {path: ["catalog_partition"]},
  checkName: "no_rejected_files", partition: $key, limit: 1) {
    runId status evaluation { success severity description } } }"""


@pytest.fixture(params=["local", "s3"])
def ui_env(request, tmp_path, monkeypatch):
    home = prepare_home(tmp_path / "dagster_home")
    # s3_lake points the AWS variables at the session's moto server (monkeypatched: the servers inherit them)
    lake = request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")
    env = {
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": lake,
        "DATALAKE_SENSOR_INTERVAL": "1",
        "DATALAKE_NUM_PROC": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return home, lake, env


def latest(ui: DagsterUI, key: str, timeout: float = 60.0) -> tuple[str, dict]:
    """The partition's latest materialization as the asset page reads it (waiting for the first one: the batch's
    job record is written before the run reports it): run id and ``label -> entry``."""
    deadline = time.monotonic() + timeout
    while not (events := ui.graphql(MATERIALIZATION, {"key": key})["assetNodeOrError"]["assetMaterializations"]):
        assert time.monotonic() < deadline, ui.log_tail("dagster-daemon")
        time.sleep(0.5)
    return events[0]["runId"], {e["label"]: e for e in events[0]["metadataEntries"]}


def table_rows(entry: dict) -> tuple[list[str], list[dict]]:
    table = entry["table"]
    return [c["name"] for c in table["schema"]["columns"]], [json.loads(r) for r in table["records"]]


def backfill_rebuild(ui: DagsterUI, key: str) -> tuple[dict, float]:
    """Launch a one-partition backfill of ``catalog_partition`` through GraphQL, wait for it; return its run
    (``runId``, ``status``, ``startTime``, ``endTime``, ``tags``) and the seconds from launch to done."""
    launched_at = time.monotonic()
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
        time.sleep(0.5)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    [run] = backfill["runs"]
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": key} in run["tags"]
    return run, time.monotonic() - launched_at


def test_a_rejection_shows_in_the_ui_and_a_backfill_rebuild_is_fast(ui_env, make_jpeg, tmp_path):
    home, lake, env = ui_env
    client = DatalakeClient(lake, progress=False)
    paths = [str(make_jpeg(tmp_path / "src" / f"i{i}.jpg")) for i in range(3)]
    whole = make_jpeg(tmp_path / "src" / "whole.jpg").read_bytes()
    (tmp_path / "src" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # a truncated JPEG
    paths.append(str(tmp_path / "src" / "cut.jpg"))
    frame = pd.DataFrame({"image": paths, "n": [1, 2, 3, 4]})
    _, job_id = client.upload_raw_data(frame, "inhouse", "ui", "ui test")
    the_lake = open_lake(lake)
    with DagsterUI(home, env, daemon=True, log_dir=tmp_path) as ui:
        data = ui.graphql(ASSETS_AND_SENSORS, {"repo": ui.repository_selector()})
        keys = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
        assert {"catalog_partition", "duckdb_catalog"} <= keys
        sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
        assert sensors.get("staging_sensor") == "RUNNING"

        # The daemon's staging sensor ingests the batch (and adds its partition key); the bad file is rejected.
        deadline = time.monotonic() + 120
        while (the_lake.status(job_id) or {}).get("state") not in ("done", "failed"):
            assert time.monotonic() < deadline, ui.log_tail("dagster-daemon")
            time.sleep(0.5)
        assert the_lake.status(job_id)["state"] == "done"
        keys = ui.graphql(PARTITION_KEYS)["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"]
        [key] = [k for k in keys if k.startswith("inhouse/ui/")]
        sensor_run_id, meta = latest(ui, key)
        assert ui.wait_run(sensor_run_id)["status"] == "SUCCESS"  # a success, with a warning (below)
        columns, rows = table_rows(meta["rejected_files"])
        assert columns[:5] == ["file", "row", "column", "reason", "quarantine"]
        [row] = rows
        assert row["file"] == paths[-1] and row["row"] == 3 and row["column"] == "image"
        assert "truncated" in row["reason"] and len(row["reason"]) > 60  # whole, not cut at 60 characters
        assert row["quarantine"] == f"{lake}/staging/failed/{job_id}-rejected"
        [check] = ui.graphql(CHECK, {"key": key})["assetCheckExecutions"]
        assert check["status"] == "FAILED" and check["evaluation"]["severity"] == "WARN"
        assert "cut.jpg" in check["evaluation"]["description"]

        # A rebuild of that partition, launched the way the UI's "Materialize" dialog launches a backfill. The
        # machine may be shared: the best of up to REBUILD_TRIES rebuilds (idempotent) is what the run costs.
        durations: list[tuple[float, float, str]] = []
        while len(durations) < REBUILD_TRIES and (not durations or min(durations)[0] > REBUILD_SECONDS):
            run, waited = backfill_rebuild(ui, key)
            step = json.loads(latest(ui, key)[1]["step_seconds"]["jsonString"])
            durations.append((run["endTime"] - run["startTime"], waited, f"{step}"))
        shown = [(round(d, 2), round(w, 1)) for d, w, _ in durations]
        print(
            f"{'s3' if lake.startswith('s3://') else 'local'}: backfill rebuild runs (run, launch to done): {shown} s"
        )
        assert min(durations)[0] <= REBUILD_SECONDS, durations  # (run duration, launch to done, step's parts)

        # The rebuild rejected nothing (the check passes) but its metadata still names the earlier rejection.
        run_id, meta = latest(ui, key)
        assert run_id == run["runId"]
        assert table_rows(meta["rejected_files"])[1] == []
        [past] = table_rows(meta["rejection_history"])[1]
        assert (past["file"], past["job_id"], past["reason"]) == (row["file"], job_id, row["reason"])
        assert meta["history_files_rejected"]["intValue"] == 1
        [check] = ui.graphql(CHECK, {"key": key})["assetCheckExecutions"]
        assert check["runId"] == run["runId"] and check["status"] == "SUCCEEDED"
        assert "history holds 1 rejected file" in check["evaluation"]["description"]
