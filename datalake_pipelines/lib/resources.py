"""``LakeResource``: the lake's base path and processing settings, configured from the environment."""

from __future__ import annotations

import os

import dagster as dg

from ..core.ingest.processing import ProcessOptions
from ..core.lake.layout import BASE_PATH_ENV, LakeLayout
from ..core.lake.open import lake_kind, open_lake
from ..core.lake.protocol import Lake


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives and how batches are processed. Empty base_path means ``$DATALAKE_BASE_PATH``/``./lake``."""

    base_path: str = ""
    num_proc: int = 2
    batch_size: int = 1000
    max_reject_ratio: float = 0.5

    @property
    def base(self) -> str:
        return self.base_path or os.environ.get(BASE_PATH_ENV, "")

    @property
    def kind(self) -> str:
        """``"s3"`` or ``"local"``: which :class:`~..core.lake.protocol.Lake` :meth:`lake` returns."""
        return lake_kind(self.base)

    @property
    def layout(self) -> LakeLayout:
        """The layout of a local lake (ValueError for an S3 lake: ask :meth:`lake` instead)."""
        return LakeLayout(self.base_path or None)

    def lake(self, s3=None) -> Lake:
        """The lake, local or S3. ``s3`` is the dagster-aws ``S3Resource`` whose client an S3 lake uses (its
        ``get_client`` is only called for an S3 lake); without it boto3's default client is used."""
        return open_lake(self.base, client=s3.get_client if s3 is not None else None)

    def process_options(self) -> ProcessOptions:
        return ProcessOptions(
            num_proc=self.num_proc, batch_size=self.batch_size, max_reject_ratio=self.max_reject_ratio
        )


def env_or(name: str, default: str) -> str | dg.EnvVar:
    """``dg.EnvVar(name)`` when the variable is set (shown as such in the UI), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def lake_resource_from_env() -> LakeResource:
    return LakeResource(
        base_path=env_or(BASE_PATH_ENV, ""),
        num_proc=dg.EnvVar.int("DATALAKE_NUM_PROC") if os.environ.get("DATALAKE_NUM_PROC") else 2,
        batch_size=dg.EnvVar.int("DATALAKE_BATCH_SIZE") if os.environ.get("DATALAKE_BATCH_SIZE") else 1000,
    )
