"""The Athena domain's definitions, for ``dg.Definitions.merge`` into the code location.

Athena tables exist only over an S3 lake, so on a local lake this domain defines nothing: no ``athena_tables``
asset, job or sensor shows up (or ticks) in the UI. The lake's place is read when the code location loads
(``DATALAKE_BASE_PATH``, the variable the ``lake`` resource reads too); changing it means reloading the location.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from ...core.lake.layout import BASE_PATH_ENV
from ...core.storage.backends import is_s3_uri
from .assets import athena_tables
from .resources import athena_settings_from_env
from .sensors import athena_job, athena_on_ingest


def lake_is_on_s3(env: Mapping[str, str] | None = None) -> bool:
    """True when ``DATALAKE_BASE_PATH`` (in ``env``, default the process environment) is an ``s3://`` URI."""
    return is_s3_uri((os.environ if env is None else env).get(BASE_PATH_ENV, ""))


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """``athena_tables``, its job, the ``athena_on_ingest`` sensor and the ``athena`` resource on an S3 lake;
    empty ``Definitions`` on a local one."""
    if not lake_is_on_s3(env):
        return dg.Definitions()
    return dg.Definitions(
        assets=[athena_tables],
        jobs=[athena_job],
        sensors=[athena_on_ingest],
        resources={"athena": athena_settings_from_env()},
    )


defs = build_defs()
