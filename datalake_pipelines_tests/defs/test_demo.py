"""``make demo`` (python -m datalake_pipelines.demo) on a temp lake and instance: it waits for in-flight runs
before stopping the daemon, so the instance holds no failed or unfinished run, and the refresh saw every ingest."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from datalake_pipelines.lib.location import LOCATION_NAME
from datalake_pipelines.services.idle import in_flight_runs, refresh_is_current
from datalake_pipelines.services.runner import INSTANCE_CONFIG

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(400)


def test_demo_leaves_no_failed_run(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": str(tmp_path / "lake"),
        "DATALAKE_SENSOR_INTERVAL": "1",
    }
    demo = subprocess.run(
        [sys.executable, "-m", "datalake_pipelines.demo", "--images", "6", "--timeout", "300"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "receipts whose OCR text contains 'invoice'" in demo.stdout
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert {r.job_name for r in runs} >= {"ingest_job"}
    assert [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == []
    assert in_flight_runs(instance) == []
    assert refresh_is_current(instance)
    assert {r.remote_job_origin.location_name for r in runs} == {LOCATION_NAME}
