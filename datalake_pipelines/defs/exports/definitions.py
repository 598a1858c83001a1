"""The exports domain's definitions, for ``dg.Definitions.merge`` into the code location."""

import dagster as dg

from .jobs import export_job

defs = dg.Definitions(jobs=[export_job])
