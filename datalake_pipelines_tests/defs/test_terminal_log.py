"""The one-line logger (lib/terminal_log.py): every job knows it, only a run whose config names it uses it; a run
without logger config (UI, daemon) logs through Dagster's default console logger, with the same event log."""

from __future__ import annotations

import re

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from datalake_pipelines.core.lake.open import duckdb_file_of
from datalake_pipelines.definitions import defs
from datalake_pipelines.lib.after_ingest import REFRESH_JOB
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines.lib.terminal_log import LOGGERS, ONE_LINE
from datalake_pipelines.services.runner import refresh_catalog_db

ONE_LINE_FORMAT = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S")
CONSOLE_FORMAT = " - dagster - DEBUG - refresh_catalog_db - "  # Dagster's colored console logger


def test_every_job_knows_the_one_line_logger_and_the_console_logger():
    jobs = [job for job in defs.get_repository_def().get_all_jobs() if not job.name.startswith("__")]
    assert {job.name for job in jobs} >= {"ingest_job", "refresh_catalog_db", "export_job"}
    for job in jobs:
        assert set(job.loggers) == {"console", ONE_LINE}, job.name


def event_types(instance: dg.DagsterInstance, run_id: str) -> list[str | None]:
    return [entry.dagster_event_type for entry in instance.all_logs(run_id)]  # None: a step's own log line


def test_a_run_naming_no_logger_logs_as_before_and_only_the_runner_s_runs_are_one_line(tmp_path, capfd):
    lake = LakeResource(base_path=str(tmp_path / "lake"))
    resources = {"lake": lake, "duckdb": DuckDBResource(database=str(duckdb_file_of(lake.base)))}
    with dg.instance_for_test() as instance:
        capfd.readouterr()
        # as the daemon launches it: the job's own run config, which names no logger
        default = defs.resolve_job_def(REFRESH_JOB).execute_in_process(instance=instance, resources=resources)
        _, default_err = capfd.readouterr()
        assert refresh_catalog_db(instance, lake)
        _, one_line_err = capfd.readouterr()
        [one_line_run] = [r for r in instance.get_runs() if r.run_id != default.run_id]
        assert CONSOLE_FORMAT in default_err and not any(ONE_LINE_FORMAT.match(x) for x in default_err.splitlines())
        assert "catalog.duckdb refreshed" in one_line_err and " - dagster - " not in one_line_err
        assert all(ONE_LINE_FORMAT.match(line) for line in one_line_err.splitlines()), one_line_err
        assert event_types(instance, one_line_run.run_id) == event_types(instance, default.run_id)


@dg.op
def fails(context) -> None:  # (no annotation: Dagster checks it, and annotations are strings here)
    context.log.info("first line\nsecond line")
    context.log.debug("details")
    raise ValueError("bad value\nmore about it")


@dg.job(logger_defs=dict(LOGGERS))
def failing_job() -> None:
    fails()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_failure_is_one_line_with_the_error_once(level, capfd):
    config = {"loggers": {ONE_LINE: {"config": {"log_level": level}}}}
    result = failing_job.execute_in_process(run_config=config, raise_on_error=False)
    assert not result.success
    _, err = capfd.readouterr()
    lines = err.splitlines()
    assert lines and all(ONE_LINE_FORMAT.match(line) for line in lines), err
    assert "Stack Trace" not in err and "second line" not in err and "more about it" not in err
    [failure] = [line for line in lines if "ValueError" in line]
    assert failure.split()[1:3] == ["ERROR", "fails"] and failure.endswith("ValueError: bad value")
    assert ("fails first line" in err) and (("fails details" in err) == (level == "DEBUG"))
    assert any("Execution of run" in line and "failed" in line for line in lines)  # the run's failure, shortened


def test_an_unknown_level_is_refused():
    with pytest.raises(Exception, match="log_level must be one of"):
        failing_job.execute_in_process(run_config={"loggers": {ONE_LINE: {"config": {"log_level": "LOUD"}}}})
