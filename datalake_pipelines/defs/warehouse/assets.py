"""``duckdb_catalog``: ``<base>/catalog.duckdb`` with the ``catalog`` view and ``partitions``/``hash_index`` tables.

The lake builds it (``Lake.refresh_warehouse``) at ``Lake.duckdb_file``, where the ``duckdb`` resource must point.
On an S3 lake that file is in the lake's cache folder and is uploaded to ``<base>/catalog.duckdb``; it holds the
two tables only (the ``catalog`` view is created per connection by ``DuckDBClient``). The lock file is local to
this machine there, and the ``catalog_warehouse`` pool is what keeps refreshes from overlapping across runs.
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from ...core.catalog.totals import read_lake_totals
from ...core.lake.locks import exclusive_lock
from ...lib.after_ingest import after_new_materializations
from ...lib.asset_info import asset_info
from ...lib.resources import LakeResource
from ..ingest.assets import catalog_partition
from .totals_metadata import totals_metadata

WAREHOUSE_POOL = "catalog_warehouse"


@dg.asset(
    deps=[catalog_partition],
    group_name="warehouse",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    description="DuckDB database over the Parquet catalog; rebuilt in a temp file and swapped in atomically. "
    "Its metadata holds the lake's totals per provider and dataset (rows, stored files and bytes, dedup ratio).",
    **asset_info().asset_kwargs(),
)
def duckdb_catalog(
    context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    the_lake = lake.lake()
    database = the_lake.duckdb_file.resolve()
    if Path(duckdb.database).resolve() != database:
        raise dg.Failure(f"the duckdb resource points at {duckdb.database}, not this lake's {database}")
    with exclusive_lock(the_lake.warehouse_lock):
        summary = the_lake.refresh_warehouse(database)
    # DuckDB over the refreshed file plus the catalog view: totals per provider/dataset for the metadata
    totals = read_lake_totals(the_lake.base)
    context.log.info(f"catalog.duckdb refreshed: {summary}")
    return dg.MaterializeResult(
        metadata={
            "database": dg.MetadataValue.path(str(duckdb.database)),
            "partitions": totals.totals["partitions"],
            "dagster/row_count": totals.totals["rows"],
            **totals_metadata(totals),
            "summary": dg.MetadataValue.json(summary),
        }
    )


refresh_job = dg.define_asset_job("refresh_catalog_db", selection=[duckdb_catalog], executor_def=dg.in_process_executor)


@dg.sensor(
    job=refresh_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes catalog.duckdb after new catalog_partition materializations (coalesced).",
)
def refresh_on_ingest(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    return after_new_materializations(context, catalog_partition.key, "refresh", "catalog.duckdb is up to date")
