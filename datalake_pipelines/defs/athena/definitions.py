"""The Athena domain's definitions, for ``dg.Definitions.merge`` into the code location.

Athena tables exist only over an S3 lake, so on a local lake this domain defines nothing: no ``athena_tables``
asset, job or sensor shows up (or ticks) in the UI. The lake's place is read when the code location loads
(``DATALAKE_BASE_PATH``, the setting the ``lake`` resource reads too); changing it means reloading the location.
Its ``athena`` resource is bound once, with the others, in ``datalake_pipelines/definitions.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from ...core.athena.scope import athena_applies
from ...settings import load as load_settings
from .assets import athena_tables
from .sensors import athena_job, athena_on_ingest


def lake_is_on_s3(env: Mapping[str, str] | None = None) -> bool:
    """True when ``DATALAKE_BASE_PATH`` (in ``env``, default the process environment) is an ``s3://`` URI."""
    return athena_applies(load_settings(env).base_path)


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """``athena_tables``, its job and the ``athena_on_ingest`` sensor on an S3 lake; empty on a local one."""
    if not lake_is_on_s3(env):
        return dg.Definitions()
    return dg.Definitions(assets=[athena_tables], jobs=[athena_job], sensors=[athena_on_ingest])


defs = build_defs()
