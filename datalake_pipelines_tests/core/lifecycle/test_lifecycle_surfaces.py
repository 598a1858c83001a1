"""The CLI and the Dagster jobs over the same core: ``datalake delete|gc`` and ``delete_job``/``gc_job``."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lake import keys
from datalake_pipelines.definitions import defs
from datalake_pipelines.lib.resources import LakeResource


@pytest.fixture
def lake_with_rows(client, make_jpeg, tmp_path):
    make_jpeg(tmp_path / "imgs" / "a.jpg", color=(5, 5, 5))
    client.upload_raw_data(tmp_path / "imgs", "inhouse", "alpha")
    client.upload_raw_data(pd.DataFrame({"text": ["x", "y"]}), "inhouse", "beta")
    client.process_pending()
    return client


def test_cli_delete_and_gc(lake_with_rows, base, capsys):
    assert main(["--base-path", base, "delete", "--json", "--dataset", "inhouse/alpha", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and plan["rows"] == 1 and plan["assets_freed"] == 1
    assert main(["--base-path", base, "delete", "--provider", "inhouse"]) == 0
    out = capsys.readouterr().out
    assert "deleted 3 row(s) in 2 partition(s) (2 removed)" in out and "catalog_retained/" in out
    assert main(["--base-path", base, "gc", "--grace", "0", "--retention", "0"]) == 0
    assert "collected 1 (" in capsys.readouterr().out
    assert main(["--base-path", base, "delete", "--provider", "inhouse"]) == 1
    assert "nothing to delete" in capsys.readouterr().err
    assert main(["--base-path", base, "delete"]) == 2  # one of --batch/--partition/--dataset/--provider
    assert main(["--base-path", base, "gc", "--grace", "soon"]) == 1


def test_dagster_jobs_dry_run_by_default_then_delete_and_collect(lake_with_rows, base):
    lake = lake_with_rows.lake
    resources = {"lake": LakeResource(base_path=base)}
    job = defs.resolve_job_def("delete_job")
    config = {"ops": {"delete_rows": {"config": {"dataset": "inhouse/alpha"}}}}
    dry = job.execute_in_process(run_config=config, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert dry.success and dry.output_for_node("delete_rows")["dry_run"] and len(lake.partitions()) == 2
    config["ops"]["delete_rows"]["config"]["dry_run"] = False
    done = job.execute_in_process(run_config=config, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert done.success and done.output_for_node("delete_rows")["rows"] == 1
    assert [p.key for p in lake.partitions()] == ["inhouse/beta/raw/mixed"]
    bad = job.execute_in_process(
        run_config=config, resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not bad.success  # nothing left to delete: the run fails with the reason
    gc = defs.resolve_job_def("gc_job")
    gc_config = {"ops": {"collect_garbage": {"config": {"dry_run": False, "grace": "0s", "retention": "0s"}}}}
    swept = gc.execute_in_process(run_config=gc_config, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert swept.success and swept.output_for_node("collect_garbage")["collected"] == 1
    assert list(lake.storage.list(keys.ASSETS)) == []
