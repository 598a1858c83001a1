"""The read side of a lake for downloads and exports: partitions, their stats, metadata and asset bytes.

A local folder and ``s3://bucket/prefix`` offer the same five things; :func:`open_source` is the one place
that chooses between them. Rows themselves are read by :class:`~..catalog.query.DuckDBClient` from
:attr:`LakeSource.base` (it reads an S3 catalog through ``pyarrow.fs.S3FileSystem``, see ``catalog/s3.py``);
asset bytes come one object at a time (``GET`` on S3), never through a local copy of the lake.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from ...settings import load as load_settings
from ..catalog.parts import read_partition_metadata
from ..catalog.warehouse import partition_stats, select_partitions
from ..errors import DatalakeError
from ..lake.layout import PARTITION_METADATA, LakeLayout, PartitionRef
from ..lake.open import lake_base, lake_kind


class LakeSource(Protocol):
    """What downloads and exports read from a lake."""

    @property
    def base(self) -> str | Path:
        """What :class:`DuckDBClient` takes as ``base_path`` (a folder, or ``s3://bucket/prefix``)."""
        ...

    def select(self, providers=None, datasets=None, tasks=None, variants=None) -> list[PartitionRef]:
        """Partitions matching the filters (``UnknownPartitionError`` for a name that exists nowhere)."""
        ...

    def stats(self, refs: list[PartitionRef]) -> pa.Table:
        """The ``partitions`` table rows (``warehouse.PARTITIONS_SCHEMA``) of ``refs``."""
        ...

    def partition_metadata(self, ref: PartitionRef) -> dict[str, Any]:
        """The partition's ``_metadata.json`` (``{}`` when it has none)."""
        ...

    def read_asset(self, relpath: str) -> bytes:
        """The bytes of a lake-relative asset path; ``DatalakeError`` for a path leaving the lake,
        ``OSError`` (``FileNotFoundError``) when it is missing."""
        ...


def check_relpath(relpath: str) -> str:
    if relpath.startswith(("/", "\\")) or ".." in relpath.replace("\\", "/").split("/"):
        raise DatalakeError(f"asset path {relpath!r} escapes the lake")
    return relpath


class LocalSource:
    """A lake in a local or NAS folder."""

    def __init__(self, layout: LakeLayout):
        self.layout = layout

    @property
    def base(self) -> Path:
        return self.layout.base

    def select(self, providers=None, datasets=None, tasks=None, variants=None) -> list[PartitionRef]:
        return select_partitions(self.layout, providers, datasets, tasks, variants)

    def stats(self, refs: list[PartitionRef]) -> pa.Table:
        return partition_stats(self.layout, refs)

    def partition_metadata(self, ref: PartitionRef) -> dict[str, Any]:
        return read_partition_metadata(self.layout, ref)

    def read_asset(self, relpath: str) -> bytes:
        with open(os.path.join(str(self.layout.base), check_relpath(relpath)), "rb") as fh:
            return fh.read()


class S3Source:
    """A lake under ``s3://bucket/prefix`` (listings and footers through :class:`S3Catalog`)."""

    def __init__(self, base: str):
        from ..catalog.s3 import S3Catalog  # boto3 and the S3 path are imported only for an S3 lake

        self.catalog = S3Catalog(base)
        self.storage = self.catalog.storage

    @property
    def base(self) -> str:
        return self.catalog.base

    def select(self, providers=None, datasets=None, tasks=None, variants=None) -> list[PartitionRef]:
        return self.catalog.select(providers, datasets, tasks, variants)

    def stats(self, refs: list[PartitionRef]) -> pa.Table:
        return self.catalog.stats(refs)

    def partition_metadata(self, ref: PartitionRef) -> dict[str, Any]:
        from ..catalog.s3 import partition_key

        try:
            return json.loads(self.storage.read_bytes(f"{partition_key(ref)}/{PARTITION_METADATA}"))
        except FileNotFoundError:
            return {}

    def read_asset(self, relpath: str) -> bytes:
        return self.storage.read_bytes(check_relpath(relpath).replace("\\", "/"))


def open_source(lake: LakeSource | LakeLayout | str | os.PathLike | None) -> LakeSource:
    """The source of a lake given as a source, a :class:`LakeLayout`, ``s3://bucket/prefix`` or a folder
    (``None``: ``$DATALAKE_BASE_PATH`` or ``./lake``). The one place choosing local or S3 for reading."""
    if isinstance(lake, (LocalSource, S3Source)):
        return lake
    if isinstance(lake, LakeLayout):
        return LocalSource(lake)
    raw = str(lake) if lake is not None else (load_settings().base_path or None)
    if lake_kind(raw) == "s3":
        return S3Source(lake_base(raw))
    return LocalSource(LakeLayout(raw, create=False))  # str(lake) or None: the base LakeLayout(lake) resolves to
