"""The Athena domain is defined only on an S3 lake: nothing shows (or ticks) in the UI of a local lake."""

import dagster as dg
from dagster_aws.s3 import S3Resource

from datalake_pipelines.defs.athena.definitions import build_defs, lake_is_on_s3
from datalake_pipelines.defs.athena.resources import athena_settings_from_env
from datalake_pipelines.lib.resources import LakeResource


def loaded(defs: dg.Definitions, base: str) -> dg.Definitions:
    """The domain's definitions merged with the resources the code location provides, resolved as Dagster loads them."""
    resources = {"lake": LakeResource(base_path=base), "s3": S3Resource(), "athena": athena_settings_from_env()}
    merged = dg.Definitions.merge(defs, dg.Definitions(resources=resources))
    dg.Definitions.validate_loadable(merged)
    return merged


def keys_and_sensors(defs: dg.Definitions) -> tuple[set[str], set[str], set[str]]:
    repo = defs.get_repository_def()
    return (
        {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()},
        {s.name for s in repo.sensor_defs},
        {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
    )


def test_local_lake_defines_no_athena(tmp_path, monkeypatch):
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "lake"))
    assert not lake_is_on_s3()
    assert keys_and_sensors(loaded(build_defs(), str(tmp_path / "lake"))) == (set(), set(), set())
    monkeypatch.delenv("DATALAKE_BASE_PATH")  # the default ./lake is local too
    assert keys_and_sensors(loaded(build_defs(), "")) == (set(), set(), set())


def test_s3_lake_defines_the_athena_asset_job_and_sensor(monkeypatch):
    monkeypatch.setenv("DATALAKE_BASE_PATH", "s3://bucket/lake")
    assets, sensors, jobs = keys_and_sensors(loaded(build_defs(), "s3://bucket/lake"))
    assert "athena_tables" in assets and sensors == {"athena_on_ingest"} and jobs == {"refresh_athena_tables"}
    assert build_defs({"DATALAKE_BASE_PATH": "/data/lake"}).assets in (None, [])
