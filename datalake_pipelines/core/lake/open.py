"""``open_lake``: the one place that decides whether a lake is a folder or an S3 prefix.

Code that holds a :class:`~.protocol.Lake` asks it (``lake.kind``, ``lake.duckdb_file``, ...); code that has only
a base asks :func:`lake_kind` or :func:`duckdb_file_of` here, never the URI's scheme.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...settings import INDEX_URL_ENV
from ...settings import load as load_settings
from ..errors import ValidationError
from ..storage.backends import StorageKind, storage_kind
from .layout import LakeLayout

if TYPE_CHECKING:
    from .protocol import Lake


def lake_base(base: str | os.PathLike | None = None) -> str:
    """The lake's base as given: the argument, else ``$DATALAKE_BASE_PATH``, else "" (meaning ``./lake``)."""
    return str(base) if base not in (None, "") else load_settings().base_path


def lake_kind(base: str | os.PathLike | None = None) -> StorageKind:
    """``"s3"`` for an ``s3://`` base, else ``"local"`` (what :func:`open_lake` would open, without opening it)."""
    return storage_kind(lake_base(base))


def duckdb_file_of(base: str | os.PathLike | None = None) -> Path:
    """The local ``catalog.duckdb`` DuckDB opens for the lake at ``base`` (what :attr:`Lake.duckdb_file` says),
    without opening the lake: ``<base>/catalog.duckdb`` for a folder (not created), its copy in the lake's cache
    folder for ``s3://bucket/prefix`` (``ValueError`` without a bucket)."""
    raw = lake_base(base)
    if lake_kind(raw) == "s3":
        from ..catalog.s3 import cached_duckdb_file

        return cached_duckdb_file(raw)
    return LakeLayout(raw or None, create=False).duckdb_file


def open_lake(base: str | os.PathLike | None = None, *, client=None, create: bool = True) -> Lake:
    """The lake at ``base`` (a folder path or ``s3://bucket/prefix``; default ``$DATALAKE_BASE_PATH`` or ``./lake``).

    ``client`` is the boto3 S3 client for an S3 lake, or a callable returning one (called only for an S3 lake,
    e.g. dagster-aws ``S3Resource.get_client``);
    ``create=False`` does not create a local lake's folders. Raises ``ValueError`` for an S3 URI without a bucket.
    """
    raw = lake_base(base)
    if lake_kind(raw) == "s3":
        if load_settings().index_url:
            # An S3 lake's index is Parquet segments in the bucket, published by the run that stored the
            # content, with a per-host SQLite cache: refused rather than silently ignored, so nobody believes
            # the lake coordinates through PostgreSQL when it does not.
            raise ValidationError(
                f"{INDEX_URL_ENV} is for a lake on a shared folder; the S3 lake {raw} keeps its hash index in the "
                f"bucket (index segments): unset {INDEX_URL_ENV} to open it"
            )
        from ..storage.backends import S3Storage
        from .s3 import S3Lake  # the S3 implementation is imported only for S3 lakes

        if callable(client):
            client = client()
        return S3Lake(raw, S3Storage(raw, client=client) if client is not None else None)
    from .local import LocalLake

    return LocalLake(LakeLayout(raw or None, create=create))
