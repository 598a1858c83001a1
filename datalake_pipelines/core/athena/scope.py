"""Which lakes have Athena tables: the one backend choice of the Athena feature.

Glue tables point at S3 locations, so only an ``s3://`` lake can have them; ``DATALAKE_ATHENA`` (settings.py)
then says whether it does: ``auto`` when the S3 endpoint is AWS's (an S3-compatible store such as MinIO or moto
has no Glue or Athena beside it), ``on`` always, ``off`` never.
"""

from __future__ import annotations

import os

from ...settings import ATHENA_ENV, Settings
from ...settings import load as load_settings
from ..lake.open import lake_kind
from ..storage.backends import is_aws_endpoint


def athena_possible(base: str | os.PathLike | None, settings: Settings | None = None) -> bool:
    """True for an ``s3://`` lake, whatever ``DATALAKE_ATHENA`` says (what an explicit ``athena_tables`` run needs).

    ``base`` empty or ``None`` means the ``base_path`` of ``settings`` (default: the environment's, read now)."""
    raw = str(base) if base not in (None, "") else (settings or load_settings()).base_path
    return bool(raw) and lake_kind(raw) == "s3"


def athena_applies(base: str | os.PathLike | None, settings: Settings | None = None) -> bool:
    """True when the lake at ``base`` keeps Athena tables: an ``s3://`` lake whose ``DATALAKE_ATHENA`` is ``on``,
    or ``auto`` with an AWS S3 endpoint (no ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, or one on
    ``amazonaws.com``). False for a folder, and for ``off``.

    ``base`` empty or ``None`` means the settings' ``base_path``; ``settings`` default to the environment's, read
    now (:class:`~datalake_pipelines.core.errors.ValidationError` for a ``DATALAKE_ATHENA`` that is no mode).
    """
    settings = settings or load_settings()
    if settings.athena == "off" or not athena_possible(base, settings):
        return False
    return settings.athena == "on" or is_aws_endpoint(settings.aws_endpoint_url)


def how_to_turn_off() -> str:
    """The words that tell a user how to stop Athena refreshes."""
    return f"set {ATHENA_ENV}=off to skip Athena"
