"""``open_lake``: the one place that decides whether a lake is a folder or an S3 prefix."""

from __future__ import annotations

import os

from ...settings import load as load_settings
from ..storage.backends import is_s3_uri
from .layout import LakeLayout
from .protocol import Lake


def lake_base(base: str | os.PathLike | None = None) -> str:
    """The lake's base as given: the argument, else ``$DATALAKE_BASE_PATH``, else "" (meaning ``./lake``)."""
    return str(base) if base not in (None, "") else load_settings().base_path


def lake_kind(base: str | os.PathLike | None = None) -> str:
    """``"s3"`` for an ``s3://`` base, else ``"local"`` (what :func:`open_lake` would open, without opening it)."""
    return "s3" if is_s3_uri(lake_base(base)) else "local"


def open_lake(base: str | os.PathLike | None = None, *, client=None, create: bool = True) -> Lake:
    """The lake at ``base`` (a folder path or ``s3://bucket/prefix``; default ``$DATALAKE_BASE_PATH`` or ``./lake``).

    ``client`` is the boto3 S3 client for an S3 lake, or a callable returning one (called only for an S3 lake,
    e.g. dagster-aws ``S3Resource.get_client``);
    ``create=False`` does not create a local lake's folders. Raises ``ValueError`` for an S3 URI without a bucket.
    """
    raw = lake_base(base)
    if lake_kind(raw) == "s3":
        from ..storage.backends import S3Storage
        from .s3 import S3Lake  # boto3 work only for S3 lakes

        if callable(client):
            client = client()
        return S3Lake(raw, S3Storage(raw, client=client) if client is not None else None)
    from .local import LocalLake

    return LocalLake(LakeLayout(raw or None, create=create))
