"""Which lakes have Athena tables: the one backend choice of the Athena feature."""

from __future__ import annotations

import os

from ...settings import load as load_settings
from ..storage.backends import is_s3_uri


def athena_applies(base: str | os.PathLike | None) -> bool:
    """True for an ``s3://`` lake (Glue tables point at S3 locations), False for a folder.

    ``base`` empty or ``None`` means ``$DATALAKE_BASE_PATH``."""
    return is_s3_uri(str(base or load_settings().base_path))
