"""``duckdb_catalog``: ``<base>/catalog.duckdb`` with the ``catalog`` view and ``partitions``/``hash_index`` tables.

The lake builds it (``Lake.refresh_warehouse``) at ``Lake.duckdb_file``, where the ``duckdb`` resource must point.
On an S3 lake that file is in the lake's cache folder and is uploaded to ``<base>/catalog.duckdb``; it holds the
two tables only (the ``catalog`` view is created per connection by ``DuckDBClient``). The lock file is local to
this machine there, and the ``catalog_warehouse`` pool is what keeps refreshes from overlapping across runs.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from ...core.catalog.totals import read_lake_totals
from ...core.lake.locks import exclusive_lock
from ...lib.after_ingest import COVERS_KEY, INGEST_JOB, ingest_refresh_skip, latest_ingest_event, refresh_when_settled
from ...lib.asset_info import asset_info
from ...lib.resources import LakeResource
from ..ingest.assets import catalog_partition
from .totals_metadata import totals_metadata

WAREHOUSE_POOL = "catalog_warehouse"


class RefreshConfig(dg.Config):
    rebuild: bool = False
    """Build catalog.duckdb from scratch (every footer read, the hash index copied whole), the old file ignored:
    sees part files copied in or removed by hand at once, and repairs a damaged file. A refresh otherwise reads
    what the change log names, and walks every partition once every DATALAKE_CATALOG_WALK_SECONDS."""


@dg.asset(
    deps=[catalog_partition],
    group_name="warehouse",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    output_required=False,  # an ingest run's refresh step may leave it to a later run (lib/after_ingest.py)
    description="DuckDB database over the Parquet catalog; rebuilt in a temp file and swapped in atomically. "
    "Its metadata holds the lake's totals per provider and dataset (rows, stored files and bytes, dedup ratio). "
    "Refreshed by the ingest runs themselves (coalesced), and by refresh_on_ingest after backfills and rebuilds.",
    **asset_info().asset_kwargs(),
)
def duckdb_catalog(
    context: dg.AssetExecutionContext, config: RefreshConfig, lake: LakeResource, duckdb: DuckDBResource
) -> Iterator[dg.MaterializeResult]:
    in_ingest_run = context.job_name == INGEST_JOB  # the ingest run's own refresh step: coalesced
    if in_ingest_run and (skip := ingest_refresh_skip(context.instance, context.run.run_id)):
        context.log.info(skip)
        return
    the_lake = lake.lake()
    database = the_lake.duckdb_file.resolve()
    if Path(duckdb.database).resolve() != database:
        message = f"the duckdb resource points at {duckdb.database}, not this lake's {database}"
        if in_ingest_run:  # the ingest itself succeeded: say so, and leave catalog.duckdb to an explicit refresh
            context.log.warning(f"{message}; catalog.duckdb not refreshed by this run")
            return
        raise dg.Failure(message)
    covers = latest_ingest_event(context.instance)  # read first: every ingest up to it is in the files read below
    with exclusive_lock(the_lake.warehouse_lock):
        summary = the_lake.refresh_warehouse(database, rebuild=config.rebuild)
    # DuckDB over the refreshed file plus the catalog view: totals per provider/dataset for the metadata
    totals = read_lake_totals(the_lake.base)
    context.log.info(f"catalog.duckdb refreshed: {summary}")
    yield dg.MaterializeResult(
        metadata={
            "database": dg.MetadataValue.path(str(duckdb.database)),
            COVERS_KEY: dg.MetadataValue.int(covers if covers is not None else -1),
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
    description="Refreshes catalog.duckdb when ingests are not covered by a refresh and no catalog writer is in "
    "flight (after asset backfills and UI rebuilds; ingest runs refresh it themselves).",
)
def refresh_on_ingest(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    return refresh_when_settled(context)
