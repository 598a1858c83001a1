"""export_job on a Dagster instance: typed config, status mapping (done/fail/queued), launch, CLI."""

from __future__ import annotations

import argparse
import json
import time

import dagster as dg
import pytest

from datalake_pipelines.cli.export import add_export_commands
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import ExportError
from datalake_pipelines.defs.exports.definitions import defs as export_defs
from datalake_pipelines.defs.exports.jobs import export_job
from datalake_pipelines.services.exports import create_export, export_info
from datalake_pipelines_tests.core.export.test_export import lake_rows  # noqa: F401 - fixture

DEFS_MODULE = "datalake_pipelines.defs.exports.definitions"  # until the lead merges export_job into definitions.py


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_done_task_reports_progress_sample_and_output(instance, lake, lake_rows, tmp_path):
    params = {"destination": str(tmp_path / "out"), "filter": {"provider": ["aihub"], "lang": ["ko"]}}
    task_id = create_export(instance, params, base_path=lake.base, wait=True)
    info = export_info(instance, lake, task_id)
    assert info["task_id"] == task_id and info["task_type"] == "export" and info["task_status"] == "done"
    p = info["process_info"]
    assert p["task_progress"] == "100%" and p["err_code"] == ""
    assert (p["total_data_count"], p["total_filter_count"], p["scan_data_count"]) == (5, 3, 3)
    assert len(p["sampled_data"]) == 3 and isinstance(p["sampled_timestamp"], int)
    assert info["task_params"]["filter"] == {"provider": ["aihub"], "lang": ["ko"]}
    assert info["create_time"] <= info["update_time"]
    assert sum(b.num_rows for b in iter_export_batches(info["export_path"])) == 3
    [output] = [
        e for e in instance.all_logs(task_id) if e.dagster_event and e.dagster_event.event_type_value == "STEP_OUTPUT"
    ]
    metadata = output.dagster_event.event_specific_data.metadata
    assert metadata["dagster/row_count"].value == 3
    logs = [e.user_message for e in instance.all_logs(task_id) if e.user_message.startswith("export ")]
    assert any("3 of 3 matching rows" in m for m in logs)


def test_failed_task_carries_the_error_code(instance, lake, lake_rows, tmp_path):
    params = {"destination": str(tmp_path / "out"), "filter": {"colour": ["red"]}}
    task_id = create_export(instance, params, base_path=lake.base, wait=True)
    info = export_info(instance, lake, task_id)
    assert info["task_status"] == "fail" and info["dagster_status"] == "FAILURE"
    assert info["process_info"]["err_code"] == "INVALID_FILTER_FIELD"
    assert "colour" in info["process_info"]["err_msg"]
    [failure] = [
        e for e in instance.all_logs(task_id) if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert failure.dagster_event.step_failure_data.user_failure_data.metadata["err_code"].value == (
        "INVALID_FILTER_FIELD"
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_request_errors_and_unknown_task(instance, lake, tmp_path):
    with pytest.raises(ExportError) as err:
        create_export(instance, {"destination": str(tmp_path), "filter": {"lang": []}}, base_path=lake.base)
    assert err.value.code == "EMPTY_FILTER_VALUES"
    with pytest.raises(ExportError) as err:
        export_info(instance, lake, "no-such-run")
    assert err.value.code == "TASK_NOT_FOUND"


def test_config_is_typed_for_the_launchpad():
    assert export_defs.get_job_def("export_job") is export_job
    bad = {"ops": {"export": {"config": {"destination": "/tmp/x", "filter": {"lang": "ko"}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        export_job.execute_in_process(run_config=bad, instance=dg.DagsterInstance.ephemeral())


def _home(tmp_path, monkeypatch, coordinator: str | None):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = "telemetry:\n  enabled: false\n"
    if coordinator:
        config += f"run_coordinator:\n  module: dagster._core.run_coordinator\n  class: {coordinator}\n"
    (home / "dagster.yaml").write_text(config)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def test_launched_run_executes_out_of_process(tmp_path, monkeypatch, lake, lake_rows):
    instance = _home(tmp_path, monkeypatch, "DefaultRunCoordinator")
    params = {"destination": str(tmp_path / "out"), "filter": {"lang": ["en"]}, "file_type": "jsonl"}
    task_id = create_export(instance, params, base_path=lake.base, module=DEFS_MODULE)
    deadline = time.monotonic() + 90
    while (info := export_info(instance, lake, task_id))["task_status"] not in ("done", "fail"):
        assert info["task_status"] in ("queued", "running")
        assert time.monotonic() < deadline, info
        time.sleep(0.5)
    assert info["task_status"] == "done", info["process_info"]
    assert sum(b.num_rows for b in iter_export_batches(info["export_path"])) == 2


def test_queued_run_waits_for_the_daemon(tmp_path, monkeypatch, lake, lake_rows):
    instance = _home(tmp_path, monkeypatch, "QueuedRunCoordinator")
    params = {"destination": str(tmp_path / "out"), "export_all": True}
    task_id = create_export(instance, params, base_path=lake.base, module=DEFS_MODULE)
    info = export_info(instance, lake, task_id)
    assert info["task_status"] == "queued" and info["process_info"]["task_progress"] == "0%"
    assert instance.get_run_by_id(task_id).run_config["ops"]["export"]["config"]["export_all"] is True


def run_cli(argv: list[str], base) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-path", default=str(base))
    parser.add_argument("--json", action="store_true")
    add_export_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_create_now_and_info_watch(tmp_path, monkeypatch, capsys, lake, lake_rows):
    _home(tmp_path, monkeypatch, None)
    argv = ["export", "create", "--filter", "provider=aihub", "--filter", "lang=ko", "--filter", "lang=en",
            "--file-type", "hdf5", "--destination", str(tmp_path / "out"), "--now", "--json"]  # fmt: skip
    assert run_cli(argv, lake.base) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["task_status"] == "done" and created["process_info"]["scan_data_count"] == 5
    assert run_cli(["export", "info", created["task_id"], "--watch", "--interval", "0.1"], lake.base) == 0
    out = capsys.readouterr()
    assert f"task {created['task_id']}: done (100%)" in out.out
    assert "5 exported of 5 matching" in out.out
    with pytest.raises(ExportError) as err:
        run_cli(["export", "create", "--filter", "lang=", "--destination", str(tmp_path)], lake.base)
    assert err.value.code == "EMPTY_FILTER_VALUES"
