"""The lifecycle domain's definitions: ``delete_job`` and ``gc_job``."""

import dagster as dg

from .jobs import delete_job, gc_job

defs = dg.Definitions(jobs=[delete_job, gc_job])
