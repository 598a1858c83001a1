"""Registers new catalog partitions in Glue/Athena after ingest runs (S3 lakes only; coalesced)."""

import dagster as dg

from ...core.athena.scope import athena_applies
from ...lib.after_ingest import after_new_materializations
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
    if not athena_applies(lake.base):
        return dg.SkipReason("no Athena tables to maintain: the lake is not on S3, or DATALAKE_ATHENA leaves it out")
    return after_new_materializations(context, catalog_partition.key, "athena", "Athena partitions are up to date")
