"""The exports domain's definitions: the export job (one run per export task)."""

import dagster as dg

from .jobs import export_job

defs = dg.Definitions(jobs=[export_job])
