"""The Athena domain is defined only on an S3 lake: nothing shows (or ticks) in the UI of a local lake."""

import dagster as dg
from dagster_aws.s3 import S3Resource

from datalake_pipelines.defs.athena.definitions import athena_is_defined, build_defs
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
    assert not athena_is_defined()
    assert keys_and_sensors(loaded(build_defs(), str(tmp_path / "lake"))) == (set(), set(), set())
    monkeypatch.delenv("DATALAKE_BASE_PATH")  # the default ./lake is local too
    assert keys_and_sensors(loaded(build_defs(), "")) == (set(), set(), set())


def test_s3_lake_defines_the_athena_asset_job_and_sensor(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "DATALAKE_ATHENA"):  # auto, on AWS
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATALAKE_BASE_PATH", "s3://bucket/lake")
    assets, sensors, jobs = keys_and_sensors(loaded(build_defs(), "s3://bucket/lake"))
    assert "athena_tables" in assets and sensors == {"athena_on_ingest"} and jobs == {"refresh_athena_tables"}
    assert build_defs({"DATALAKE_BASE_PATH": "/data/lake"}).assets in (None, [])


def test_the_athena_setting_and_the_endpoint_decide_on_an_s3_lake():
    s3 = {"DATALAKE_BASE_PATH": "s3://bucket/lake"}
    assert build_defs({**s3, "DATALAKE_ATHENA": "off"}).assets in (None, [])
    assert build_defs({**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}).assets in (None, [])  # auto: not AWS
    on = build_defs({**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "DATALAKE_ATHENA": "on"})
    assert keys_and_sensors(loaded(on, "s3://bucket/lake"))[1] == {"athena_on_ingest"}


def test_the_code_location_for_another_base_keeps_the_athena_setting(monkeypatch):
    """``build_defs(base=...)`` (the CLI's ``--base-path``) still reads ``DATALAKE_ATHENA`` and the endpoint."""
    from datalake_pipelines.definitions import build_defs as location

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("DATALAKE_ATHENA", "off")
    assert "athena_tables" not in keys_and_sensors(location(base="s3://bucket/lake"))[0]
    monkeypatch.setenv("DATALAKE_ATHENA", "auto")
    assert "athena_tables" in keys_and_sensors(location(base="s3://bucket/lake"))[0]
