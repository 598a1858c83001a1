"""What ``datalake process start`` shows on the terminal: one line per log event, no Dagster stack traces, even for
a batch that fails as expected (its full record stays in the run's event log for the Dagster UI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines.services.runner import get_instance
from datalake_pipelines_tests.conftest import PROJECT_ROOT

DATALAKE = Path(sys.executable).parent / "datalake"
# Lines on stderr one batch may take: the batch's own line, a rejected file, the step's failure, the skipped
# catalog.duckdb step, the run's failure, the catalog refresh after it (a done batch: its checks, its refresh).
LINES_PER_BATCH = 8
REASON = "every row of the batch was rejected"


def truncated_jpeg(make_jpeg, path: Path) -> Path:
    make_jpeg(path)
    path.write_bytes(path.read_bytes()[:200])  # a JPEG cut short: its header reads, its pixels do not
    return path


def process_start(lake) -> subprocess.CompletedProcess:
    """``datalake process start --json`` in a subprocess, running this checkout's code on the lake ``lake``."""
    env = {**os.environ, "DATALAKE_BASE_PATH": str(lake.base), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [str(DATALAKE), "process", "start", "--json", "--num-proc", "1"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def assert_one_line_per_event(err: str) -> list[str]:
    lines = err.splitlines()
    assert "Stack Trace" not in err and "Traceback" not in err, err
    assert not [line for line in lines if re.match(r"\s+File \"", line)], err
    assert all(line.strip() and not line[0].isspace() for line in lines), err  # no continuation lines
    return lines


@pytest.fixture
def stage(client, tmp_path):
    def stage_images(dataset: str, *paths: Path) -> str:
        return client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in paths]}), "inhouse", dataset)[1]

    return stage_images


def test_a_failed_batch_is_a_few_lines_without_a_stack_trace(lake, stage, tmp_path, make_jpeg):
    job_id = stage("broken", truncated_jpeg(make_jpeg, tmp_path / "cut.jpg"))
    proc = process_start(lake)
    assert proc.returncode == 1, proc.stderr  # a failed batch: exit 1, as before
    [result] = json.loads(proc.stdout)
    assert (result["job_id"], result["state"]) == (job_id, "failed") and REASON in result["error"]
    lines = assert_one_line_per_event(proc.stderr)
    assert len(lines) <= LINES_PER_BATCH, proc.stderr
    assert len([line for line in lines if REASON in line]) == 1, proc.stderr
    [failure] = [line for line in lines if "Failure" in line]
    assert "1 of 1 batch(es) failed" in failure  # the reason was on the batch's own line
    # the full record stays in the run's event log, for the UI: each batch's reason, the stack trace
    [event] = get_instance().get_records_for_run(result["run_id"], of_type=dg.DagsterEventType.STEP_FAILURE).records
    data = event.event_log_entry.dagster_event.step_failure_data
    assert f"batch {job_id} failed: {REASON}" in data.user_failure_data.description
    assert data.error.stack and "Stack Trace" in data.error.to_string()


def test_a_rejected_file_of_a_done_batch_is_still_one_warning_line(lake, stage, tmp_path, make_jpeg):
    good = make_jpeg(tmp_path / "good.jpg")
    job_id = stage("mixed", good, truncated_jpeg(make_jpeg, tmp_path / "cut.jpg"))
    proc = process_start(lake)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    assert (result["job_id"], result["state"], result["rows_rejected"]) == (job_id, "done", 1)
    lines = assert_one_line_per_event(proc.stderr)
    assert len(lines) <= LINES_PER_BATCH, proc.stderr
    [warning] = [line for line in lines if "rejected file" in line]
    assert "WARNING" in warning and "cut.jpg" in warning and job_id in warning
