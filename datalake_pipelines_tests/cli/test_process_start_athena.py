"""``datalake process start`` on an S3 lake that is not AWS (moto here, MinIO for users): the ingest's answer is
not buried under an Athena refresh. ``DATALAKE_ATHENA=auto`` skips Athena on such an endpoint; a refresh that
fails (``on``, Glue unreachable) is one warning line naming the reason and ``DATALAKE_ATHENA=off``, exit 0."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.services.runner import get_instance
from datalake_pipelines_tests.support.s3_server import BodyServer


def stage(base: str, tmp_path, make_jpeg) -> None:
    client = DatalakeClient(base, num_proc=1, progress=False)
    frame = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))], "uid": ["a"]})
    client.upload_task_data(frame, "aihub", "docs", "ocr", "w", meta={"lang": "ko", "src": "real"}, job_id="job-1")


def athena_lines(err: str) -> list[str]:
    # (no test here has "athena" in its name: tmp_path, which the run logs print, is named after the test)
    return [line for line in err.splitlines() if "athena" in line.lower()]


def athena_runs() -> list[dg.DagsterRun]:
    return get_instance().get_runs(filters=dg.RunsFilter(job_name="refresh_athena_tables"))


def test_auto_skips_the_refresh_on_a_non_aws_endpoint(s3_lake, tmp_path, make_jpeg, capfd, monkeypatch):
    monkeypatch.delenv("DATALAKE_ATHENA", raising=False)
    stage(s3_lake, tmp_path, make_jpeg)
    capfd.readouterr()
    assert main(["--base-path", s3_lake, "process", "start", "--num-proc", "1"]) == 0
    out, err = capfd.readouterr()
    assert "job-1" in out and "done" in out
    assert "Traceback" not in err and athena_lines(err) == []
    assert athena_runs() == []


@pytest.fixture
def unreachable_glue(monkeypatch):
    """Glue's endpoint answers every API call with HTTP 501, as a plain S3 store (MinIO) would."""
    with BodyServer() as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", server.base_url)
        yield


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_failed_refresh_is_one_warning_line(
    s3_lake, tmp_path, make_jpeg, capfd, monkeypatch, unreachable_glue, json_flag
):
    monkeypatch.setenv("DATALAKE_ATHENA", "on")
    stage(s3_lake, tmp_path, make_jpeg)
    capfd.readouterr()
    assert main(["--base-path", s3_lake, *json_flag, "process", "start", "--num-proc", "1"]) == 0  # ingest is done
    out, err = capfd.readouterr()
    assert "job-1" in out and "done" in out
    assert "Traceback" not in err and "botocore" not in err
    [line] = athena_lines(err)
    assert "ClientError" in line and "501" in line and "DATALAKE_ATHENA=off" in line
    assert [r.status for r in athena_runs()] == [dg.DagsterRunStatus.FAILURE]  # the details stay in the run


def test_a_bad_setting_is_one_error_line_naming_it(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("DATALAKE_ATHENA", "yes")
    assert main(["--base-path", str(tmp_path / "lake"), "process", "list"]) == 1
    out, err = capfd.readouterr()
    assert err.strip() == "error: DATALAKE_ATHENA must be one of auto, on, off, not 'yes'" and out == ""
