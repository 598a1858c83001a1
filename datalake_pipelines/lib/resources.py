"""``LakeResource``: the lake's base path and processing settings, configured from the environment."""

from __future__ import annotations

import dagster as dg

from ..core.ingest.processing import ProcessOptions
from ..core.lake.layout import LakeLayout
from ..core.lake.open import lake_kind, open_lake
from ..core.lake.protocol import Lake
from ..settings import BASE_PATH_ENV, BATCH_SIZE_ENV, DEFAULT_BATCH_SIZE, NUM_PROC_ENV
from ..settings import load as load_settings
from .partitions import tag_partition_run


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives and how batches are processed.

    Empty ``base_path`` means ``$DATALAKE_BASE_PATH``/``./lake``; ``num_proc`` 0 means the settings' default
    (``$DATALAKE_NUM_PROC``, else the CPU count), read when a run starts.

    When a run's step first uses it, a single-partition run gets the ``datalake/*`` tags it lacks
    (:func:`~.partitions.tag_partition_run`): runs Dagster creates from the asset alone (the asset page's
    Materialize, asset backfills, ``dg launch --assets``) are then filtered by dataset like the sensor's runs.
    """

    base_path: str = ""
    num_proc: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    max_reject_ratio: float = 0.5

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        tag_partition_run(context.instance, context.run)

    @property
    def base(self) -> str:
        return self.base_path or load_settings().base_path

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
            num_proc=self.num_proc or load_settings().num_proc,
            batch_size=self.batch_size,
            max_reject_ratio=self.max_reject_ratio,
        )


def env_or(name: str, default: str) -> str | dg.EnvVar:
    """``dg.EnvVar(name)`` when the variable is set (shown as such in the UI), else the default."""
    return dg.EnvVar(name) if name in load_settings().explicit else default


def lake_resource_from_env() -> LakeResource:
    """The lake resource of the code location: each setting set in the environment shows as its ``EnvVar``."""
    explicit = load_settings().explicit
    num_proc = dg.EnvVar.int(NUM_PROC_ENV) if NUM_PROC_ENV in explicit else 0
    batch_size = dg.EnvVar.int(BATCH_SIZE_ENV) if BATCH_SIZE_ENV in explicit else DEFAULT_BATCH_SIZE
    return LakeResource(base_path=env_or(BASE_PATH_ENV, ""), num_proc=num_proc, batch_size=batch_size)
