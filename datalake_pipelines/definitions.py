"""The Dagster code location: ``defs`` for ``dagster dev``, ``dagster asset materialize`` and workspace.yaml."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from .core.layout import LakeLayout
from .defs.exports.jobs import export_job
from .defs.ingest.assets import catalog_partition
from .defs.ingest.checks import asset_files_match_hashes, no_duplicate_rows, required_meta_present
from .defs.ingest.sensors import ingest_job, staging_sensor
from .defs.warehouse.assets import duckdb_catalog, refresh_job, refresh_on_ingest
from .lib.resources import lake_resource_from_env


def build_defs() -> dg.Definitions:
    lake = lake_resource_from_env()
    return dg.Definitions(
        assets=[catalog_partition, duckdb_catalog],
        asset_checks=[asset_files_match_hashes, no_duplicate_rows, required_meta_present],
        jobs=[ingest_job, refresh_job, export_job],
        sensors=[staging_sensor, refresh_on_ingest],
        resources={
            "lake": lake,
            "duckdb": DuckDBResource(database=str(LakeLayout(create=False).duckdb_file)),
        },
    )


defs = build_defs()
