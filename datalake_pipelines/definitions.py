"""The Dagster code location: ``defs`` for ``dagster dev``, ``dagster asset materialize`` and workspace.yaml.

Each domain under ``defs/`` declares its own ``defs`` (assets, checks, jobs, sensors); this module merges them
with ``dg.Definitions.merge`` and binds the resources, once, here (``merge`` refuses two different resource
objects under one key, so no domain binds its own).
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from .core.lake.open import duckdb_file_of
from .defs.athena import definitions as athena
from .defs.athena.resources import athena_settings_from_env
from .defs.exports import definitions as exports
from .defs.ingest import definitions as ingest
from .defs.lifecycle import definitions as lifecycle
from .defs.neardup import definitions as neardup
from .defs.warehouse import definitions as warehouse
from .lib.executor import step_io_manager
from .lib.resources import lake_resource_from_env
from .lib.terminal_log import LOGGERS
from .settings import load as load_settings


def resources() -> dict[str, object]:
    """The code location's resources (``lake``, ``duckdb``, ``s3``, ``athena``), configured from the settings;
    with ``DATALAKE_EXECUTOR=celery`` also an ``io_manager`` on the lake (``lib/executor.py``)."""
    base = load_settings().base_path
    return {
        "lake": lake_resource_from_env(),
        "duckdb": DuckDBResource(database=str(duckdb_file_of(base))),
        "s3": S3Resource(),
        "athena": athena_settings_from_env(),
        **step_io_manager(base),
    }


def build_defs(base: str | None = None) -> dg.Definitions:
    """Every domain's definitions merged, with the resources bound once; ``base`` (default: the
    ``DATALAKE_BASE_PATH`` setting) and ``DATALAKE_ATHENA`` decide whether the S3-only Athena domain is in."""
    return dg.Definitions.merge(
        ingest.defs,
        warehouse.defs,
        athena.build_defs(base=base),  # empty on a local lake, or with DATALAKE_ATHENA=off
        exports.defs,
        neardup.defs,
        lifecycle.defs,
        # In process: a UI, backfill or CLI run is one process, not one subprocess per step (asset and checks).
        # ingest_job alone names its own executor (DATALAKE_EXECUTOR: in process or on Celery workers).
        # The loggers: Dagster's console one and the CLI's one-line one; a run uses only those its run config
        # names, and Dagster's default console logger when it names none (UI and daemon runs).
        dg.Definitions(resources=resources(), executor=dg.in_process_executor, loggers=LOGGERS),
    )


defs = build_defs()
