"""The ingest domain's definitions: the catalog partition asset, its checks, the ingest job, the staging sensor
and the staging queue it observes."""

import dagster as dg

from .assets import catalog_partition
from .checks import asset_files_match_hashes, no_duplicate_rows, required_meta_present
from .queue_asset import staging_queue
from .sensors import ingest_job, staging_sensor

defs = dg.Definitions(
    assets=[catalog_partition, staging_queue],
    asset_checks=[asset_files_match_hashes, no_duplicate_rows, required_meta_present],
    jobs=[ingest_job],
    sensors=[staging_sensor],
)
