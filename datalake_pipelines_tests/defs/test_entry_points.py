"""One code location name everywhere, and the dg CLI (dagster-dg-cli) working on the project: dg list defs,
dg launch of a catalog_partition partition; make demo's wait for in-flight runs on a real instance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import tomli  # dagster depends on it; tomllib is Python 3.11+
import yaml

from datalake_pipelines import DatalakeClient
from datalake_pipelines.lib.location import DEFINITIONS_MODULE, LOCATION_NAME
from datalake_pipelines.services.exports import create_export
from datalake_pipelines.services.idle import in_flight_runs, wait_until_idle
from datalake_pipelines.services.runner import start_pending

PROJECT = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).with_name("dg")
pytestmark = pytest.mark.timeout(300)


def test_one_location_name_in_every_entry_point():
    pyproject = tomli.loads((PROJECT / "pyproject.toml").read_text())
    [entry] = yaml.safe_load((PROJECT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    assert (module["location_name"], module["module_name"]) == (LOCATION_NAME, DEFINITIONS_MODULE)
    dagster = pyproject["tool"]["dagster"]
    assert (dagster["code_location_name"], dagster["module_name"]) == (LOCATION_NAME, DEFINITIONS_MODULE)
    project = pyproject["tool"]["dg"]["project"]
    assert (project["code_location_name"], project["code_location_target_module"]) == (
        LOCATION_NAME,
        DEFINITIONS_MODULE,
    )
    assert pyproject["tool"]["dg"]["directory_type"] == "project"


def test_queued_export_run_names_the_location_the_daemon_loads(tmp_path, monkeypatch, lake):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    run_id = create_export(instance, {"destination": str(tmp_path / "out"), "export_all": True}, base_path=lake.base)
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.remote_job_origin.location_name == LOCATION_NAME


def dg_env(tmp_path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT),  # this checkout's code, whatever the venv's editable install points at
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": str(tmp_path / "lake"),
        "NO_COLOR": "1",
    }


def test_dg_list_defs_and_dg_launch_a_partition(tmp_path, monkeypatch, make_jpeg):
    env = dg_env(tmp_path)
    for key in ("DAGSTER_HOME", "DATALAKE_BASE_PATH"):
        monkeypatch.setenv(key, env[key])
    listed = subprocess.run(
        [str(DG), "list", "defs", "--json"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=180
    )
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assert {"catalog_partition", "duckdb_catalog"} <= {a["asset_key"] for a in defs["assets"]}
    assert "staging_sensor" in {s["name"] for s in defs["sensors"]}

    # Ingest a batch (adds the partition key to the instance), then rebuild that partition with dg launch.
    client = DatalakeClient(env["DATALAKE_BASE_PATH"], progress=False)
    paths = [str(make_jpeg(tmp_path / "src" / f"i{i}.jpg")) for i in range(3)]
    client.upload_raw_data(pd.DataFrame({"image": paths, "n": [1, 2, 3]}), "inhouse", "dg", "dg test")
    instance = dg.DagsterInstance.get()
    start_pending(client.layout, instance, echo=lambda *a: None)
    [key] = instance.get_dynamic_partitions("lake_partitions")
    before = {r.run_id for r in instance.get_runs()}
    launched = subprocess.run(
        [str(DG), "launch", "--assets", "catalog_partition", "--partition", key],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    [run] = [r for r in instance.get_runs() if r.run_id not in before]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == key
    assert run.tags["datalake/partition"] == key and run.tags["datalake/dataset"] == "dg"  # tagged at step start
    event = instance.get_latest_materialization_event(dg.AssetKey("catalog_partition"))
    assert event.run_id == run.run_id
    assert event.asset_materialization.metadata["mode"].value == "rebuild"
    assert event.asset_materialization.metadata["dagster/row_count"].value == 3


def test_wait_until_idle_waits_for_runs_and_the_refresh():
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), status=dg.DagsterRunStatus.STARTED)
        idle, running = wait_until_idle(instance, timeout=1.0, settle=0.2, poll=0.1)
        assert not idle and [r.run_id for r in running] == [run.run_id]
        instance.report_run_canceled(run)
        assert in_flight_runs(instance) == []
        # An ingest newer than the last refresh: not idle until duckdb_catalog is materialized again.
        instance.report_runless_asset_event(dg.AssetMaterialization("catalog_partition", partition="a/b/c/d"))
        assert wait_until_idle(instance, timeout=1.0, settle=0.2, poll=0.1) == (False, [])
        instance.report_runless_asset_event(dg.AssetMaterialization("duckdb_catalog"))
        assert wait_until_idle(instance, timeout=5.0, settle=0.2, poll=0.1) == (True, [])
