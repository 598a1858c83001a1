"""Which lakes have Athena tables: the one backend choice of the Athena feature."""

from __future__ import annotations

import os

from ..lake.open import lake_kind


def athena_applies(base: str | os.PathLike | None) -> bool:
    """True for an ``s3://`` lake (Glue tables point at S3 locations), False for a folder.

    ``base`` empty or ``None`` means ``$DATALAKE_BASE_PATH``."""
    return lake_kind(base) == "s3"
