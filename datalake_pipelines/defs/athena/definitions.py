"""The Athena domain's definitions, for ``dg.Definitions.merge`` into the code location.

Athena tables exist only over an S3 lake, and only when ``DATALAKE_ATHENA`` lets them (``auto``: the S3 endpoint
is AWS's, see ``core/athena/scope.py``); otherwise this domain defines nothing: no ``athena_tables`` asset, job
or sensor shows up (or ticks) in the UI. The settings are read when the code location loads
(``DATALAKE_BASE_PATH``, the setting the ``lake`` resource reads too); changing them means reloading the location.
Its ``athena`` resource is bound once, with the others, in ``datalake_pipelines/definitions.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from ...core.athena.scope import athena_applies
from ...settings import load as load_settings
from .assets import athena_tables
from .sensors import athena_job, athena_on_ingest


def athena_is_defined(env: Mapping[str, str] | None = None, base: str | None = None) -> bool:
    """Whether the lake at ``base`` (default ``DATALAKE_BASE_PATH``) has Athena tables under the settings of
    ``env`` (default the process environment): ``DATALAKE_ATHENA`` and the S3 endpoint."""
    settings = load_settings(env)
    return athena_applies(settings.base_path if base is None else base, settings)


def build_defs(env: Mapping[str, str] | None = None, base: str | None = None) -> dg.Definitions:
    """``athena_tables``, its job and the ``athena_on_ingest`` sensor when :func:`athena_is_defined`; else empty."""
    if not athena_is_defined(env, base):
        return dg.Definitions()
    return dg.Definitions(assets=[athena_tables], jobs=[athena_job], sensors=[athena_on_ingest])


defs = build_defs()
