"""The code location: every domain's definitions merged, with the resources bound once at the root."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from datalake_pipelines import definitions
from datalake_pipelines.defs.athena import definitions as athena
from datalake_pipelines.defs.exports import definitions as exports
from datalake_pipelines.defs.ingest import definitions as ingest
from datalake_pipelines.defs.lifecycle import definitions as lifecycle
from datalake_pipelines.defs.neardup import definitions as neardup
from datalake_pipelines.defs.warehouse import definitions as warehouse

DOMAINS = {
    "ingest": ingest.defs,
    "warehouse": warehouse.defs,
    "athena": athena.build_defs({"DATALAKE_BASE_PATH": "s3://bucket/lake"}),
    "exports": exports.defs,
    "neardup": neardup.defs,
    "lifecycle": lifecycle.defs,
}
CHECKS = {"no_rejected_files", "asset_files_match_hashes", "no_duplicate_rows", "required_meta_present"}
ATHENA = {"jobs": {"refresh_athena_tables"}, "sensors": {"athena_on_ingest"}, "assets": {"athena_tables"}}


def names(defs: dg.Definitions) -> dict[str, set[str]]:
    repo = defs.get_repository_def()
    return {
        "jobs": {job.name for job in repo.get_all_jobs() if not job.name.startswith("__")},
        "sensors": {sensor.name for sensor in repo.sensor_defs},
        "assets": {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()},
        "checks": {f"{key.asset_key.to_user_string()}:{key.name}" for key in repo.asset_graph.asset_check_keys},
        "resources": set(repo.get_top_level_resources()),
    }


@pytest.mark.parametrize("base", ["local", "s3"])
def test_the_code_location_has_every_job_sensor_asset_and_check(base, monkeypatch, tmp_path):
    """Athena's asset, job and sensor exist only on an S3 lake; everything else on both."""
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "lake") if base == "local" else "s3://bucket/lake")
    monkeypatch.setenv("DATALAKE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "DATALAKE_ATHENA"):  # Athena's auto mode, on AWS
        monkeypatch.delenv(name, raising=False)
    athena_names = ATHENA if base == "s3" else {"jobs": set(), "sensors": set(), "assets": set()}
    loaded = definitions.build_defs()
    assert names(loaded) == {
        "jobs": {"ingest_job", "refresh_catalog_db", "export_job", "delete_job", "gc_job"} | athena_names["jobs"],
        "sensors": {"staging_sensor", "refresh_on_ingest"} | athena_names["sensors"],
        "assets": {"catalog_partition", "duckdb_catalog", "near_duplicates", "staging_queue"} | athena_names["assets"],
        "checks": {
            "catalog_partition:asset_files_match_hashes",
            "catalog_partition:no_duplicate_rows",
            "catalog_partition:no_rejected_files",
            "catalog_partition:required_meta_present",
        },
        "resources": {"lake", "duckdb", "s3", "athena"},
    }
    dg.Definitions.validate_loadable(loaded)


def test_the_code_location_runs_in_process_and_catalog_partition_checks_itself(monkeypatch, tmp_path):
    """A UI or backfill run of ``catalog_partition`` is one step in one process: the location's executor is in
    process and the asset's checks are its own ``check_specs`` (no separate check op to start)."""
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "lake"))
    loaded = definitions.build_defs()
    job = loaded.resolve_implicit_global_asset_job_def()
    assert job.executor_def is dg.in_process_executor
    asset = loaded.resolve_assets_def("catalog_partition")
    assert {k.name for k in asset.check_keys} == CHECKS
    nodes = {n.name for n in job.graph.nodes}
    assert "catalog_partition" in nodes and not any(name in node for node in nodes for name in CHECKS)


def declared(defs: dg.Definitions) -> dict[str, set[str]]:
    """Names a domain declares, read from its ``Definitions`` (it cannot resolve alone: resources are the root's)."""
    return {
        "jobs": {job.name for job in defs.jobs or []},
        "sensors": {sensor.name for sensor in defs.sensors or []},
        "assets": {
            key.to_user_string()
            for asset in defs.assets or []
            for key in ([asset.key] if isinstance(asset, dg.AssetSpec) else asset.keys)
        },
        "checks": {  # @asset_check definitions and the checks an asset computes itself (check_specs)
            f"{key.asset_key.to_user_string()}:{key.name}"
            for checks in [
                *(defs.asset_checks or []),
                *(a for a in defs.assets or [] if not isinstance(a, dg.AssetSpec)),
            ]
            for key in checks.check_keys
        },
        "resources": set(defs.resources or {}),
    }


def test_each_domain_declares_its_own_and_binds_no_resource(monkeypatch, tmp_path):
    """The root is exactly the union of the domains; resources live once, at the root."""
    declared_by = {domain: declared(defs) for domain, defs in DOMAINS.items()}
    assert declared_by["ingest"]["jobs"] == {"ingest_job"} and declared_by["exports"]["jobs"] == {"export_job"}
    assert declared_by["lifecycle"]["jobs"] == {"delete_job", "gc_job"}
    assert declared_by["warehouse"]["assets"] == {"duckdb_catalog"} and declared_by["athena"]["assets"] == {
        "athena_tables"
    }
    assert all(not names["resources"] for names in declared_by.values())
    monkeypatch.setenv("DATALAKE_BASE_PATH", "s3://bucket/lake")
    monkeypatch.setenv("DATALAKE_CACHE_DIR", str(tmp_path / "cache"))
    root = names(definitions.build_defs())
    for kind in ("jobs", "sensors", "assets", "checks"):
        assert set().union(*(names[kind] for names in declared_by.values())) == root[kind], kind


def test_merge_refuses_a_second_resource_under_one_key():
    """Why no domain binds its own: ``Definitions.merge`` accepts one object per resource key."""
    with pytest.raises(dg.DagsterInvariantViolationError, match="same key 'lake'"):
        dg.Definitions.merge(
            dg.Definitions(resources={"lake": definitions.resources()["lake"]}),
            dg.Definitions(resources={"lake": definitions.resources()["lake"]}),
        )


def test_resources_follow_the_settings_when_the_location_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "lake"))
    monkeypatch.setenv("DATALAKE_NUM_PROC", "3")
    monkeypatch.setenv("DATALAKE_ATHENA_DATABASE", "lakedb")
    resources = definitions.resources()
    assert resources["duckdb"].database == str((tmp_path / "lake" / "catalog.duckdb").resolve())
    with dg.build_resources({"lake": resources["lake"], "athena": resources["athena"]}) as built:
        assert built.lake.base == str(tmp_path / "lake")
        assert built.lake.process_options().num_proc == 3
        assert built.athena.database == "lakedb"
    monkeypatch.delenv("DATALAKE_NUM_PROC")
    with dg.build_resources({"lake": definitions.resources()["lake"]}) as built:
        assert built.lake.process_options().num_proc == (os.cpu_count() or 1)  # the one default
