"""Registers new catalog partitions in Glue/Athena after ingest runs (S3 lakes only; coalesced)."""

import dagster as dg

from ...lib.resources import LakeResource
from ..ingest.assets import catalog_partition
from .assets import athena_tables

athena_job = dg.define_asset_job(
    "refresh_athena_tables", selection=[athena_tables], executor_def=dg.in_process_executor
)


@dg.sensor(
    job=athena_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materializes athena_tables after new catalog_partition materializations on an S3 lake.",
)
def athena_on_ingest(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult | dg.SkipReason:
    if not lake.is_s3:
        return dg.SkipReason("the lake is not on S3: no Athena tables to maintain")
    records = context.instance.fetch_materializations(catalog_partition.key, limit=1).records
    if not records:
        return dg.SkipReason("no catalog_partition materialization yet")
    latest = records[0].storage_id
    if context.cursor and int(context.cursor) >= latest:
        return dg.SkipReason("Athena partitions are up to date")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"athena-{latest}")], cursor=str(latest))
