"""The ingest domain's definitions: the catalog partition asset (its checks are its ``check_specs``), the ingest
job and the staging sensor."""

import dagster as dg

from .assets import catalog_partition
from .sensors import ingest_job, staging_sensor

defs = dg.Definitions(
    assets=[catalog_partition],
    jobs=[ingest_job],
    sensors=[staging_sensor],
)
