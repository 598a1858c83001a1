"""The warehouse domain's definitions: the DuckDB catalog asset, its refresh job and the sensor after ingests."""

import dagster as dg

from .assets import duckdb_catalog, refresh_job, refresh_on_ingest

defs = dg.Definitions(assets=[duckdb_catalog], jobs=[refresh_job], sensors=[refresh_on_ingest])
