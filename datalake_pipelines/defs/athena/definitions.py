"""The Athena domain's definitions: the Glue tables asset, its job and the sensor after ingests.

Its ``athena`` resource is bound once, with the others, in ``datalake_pipelines/definitions.py``.
"""

import dagster as dg

from .assets import athena_tables
from .sensors import athena_job, athena_on_ingest

defs = dg.Definitions(assets=[athena_tables], jobs=[athena_job], sensors=[athena_on_ingest])
