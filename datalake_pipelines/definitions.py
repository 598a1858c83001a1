"""The Dagster code location: ``defs`` for ``dagster dev``, ``dagster asset materialize`` and workspace.yaml."""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from .core.catalog.s3 import cached_duckdb_file
from .core.lake.layout import BASE_PATH_ENV, LakeLayout
from .core.storage.backends import is_s3_uri
from .defs.athena.assets import athena_tables
from .defs.athena.resources import athena_settings_from_env
from .defs.athena.sensors import athena_job, athena_on_ingest
from .defs.exports.jobs import export_job
from .defs.ingest.assets import catalog_partition
from .defs.ingest.checks import asset_files_match_hashes, no_duplicate_rows, required_meta_present
from .defs.ingest.sensors import ingest_job, staging_sensor
from .defs.neardup.assets import near_duplicates
from .defs.warehouse.assets import duckdb_catalog, refresh_job, refresh_on_ingest
from .lib.resources import lake_resource_from_env


def duckdb_file(base: str):
    """``<base>/catalog.duckdb``, or its local copy in the cache folder for an S3 lake."""
    return cached_duckdb_file(base) if is_s3_uri(base) else LakeLayout(base or None, create=False).duckdb_file


def build_defs() -> dg.Definitions:
    lake = lake_resource_from_env()
    return dg.Definitions(
        assets=[catalog_partition, duckdb_catalog, athena_tables, near_duplicates],
        asset_checks=[asset_files_match_hashes, no_duplicate_rows, required_meta_present],
        jobs=[ingest_job, refresh_job, export_job, athena_job],
        sensors=[staging_sensor, refresh_on_ingest, athena_on_ingest],
        resources={
            "lake": lake,
            "duckdb": DuckDBResource(database=str(duckdb_file(os.environ.get(BASE_PATH_ENV, "")))),
            "s3": S3Resource(),
            "athena": athena_settings_from_env(),
        },
    )


defs = build_defs()
