"""The ingest domain's definitions: the catalog partition asset (its checks are its ``check_specs``), the ingest
job, the staging sensor and the staging queue it observes."""

import dagster as dg

from .assets import catalog_partition
from .queue_asset import staging_queue
from .sensors import ingest_job, staging_sensor

defs = dg.Definitions(
    assets=[catalog_partition, staging_queue],
    jobs=[ingest_job],
    sensors=[staging_sensor],
)
