"""Where collections live: a local lake, or an S3 lake worked on through a local scratch lake.

Collection code works on a :class:`LakeLayout`. For a local lake that is the lake itself. For
``s3://bucket/prefix`` it is the S3 lake's scratch lake in the cache folder (``S3Lake.scratch_layout``, the one
``DatalakeClient`` assembles batches in), holding fresh copies of ``config/schema.yaml`` and
``config/collections.yaml``; a changed ``collections.yaml`` is uploaded back, and every staged batch is
uploaded to ``staging/pending/<job>/`` (manifest last, :meth:`S3Lake.stage`) and removed locally.

On S3, ``collections.yaml`` is read-modify-written without a lock across machines: two ``collection create``
calls racing on different machines may lose one of the two (on one machine the local lock still holds).

:func:`open_collection_lake` is the one place choosing the implementation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from ..catalog.parts import ROW_HASH, existing_row_hashes
from ..ingest.hash_index import HashIndex
from ..ingest.index_store import open_hash_index
from ..lake.layout import LakeLayout, PartitionRef
from ..lake.open import lake_base, lake_kind
from .config import COLLECTIONS_FILE, collections_path

COLLECTIONS_KEY = f"config/{COLLECTIONS_FILE}"


class CollectionLake(Protocol):
    layout: LakeLayout  # where collection code reads config and stages batches

    def pull_config(self) -> None:
        """Bring ``layout``'s ``config/`` up to date with the lake's."""
        ...

    def push_config(self) -> None:
        """Publish ``layout``'s ``collections.yaml`` to the lake."""
        ...

    def publish(self, job_id: str) -> str:
        """Make the batch staged in ``layout`` pending in the lake; return where it is (path or URI)."""
        ...

    def known_rows(self, ref: PartitionRef) -> set[str]:
        """Row hashes already in the partition's catalog."""
        ...

    def hash_index(self) -> HashIndex:
        """The lake's hash index (to tell whether a unit's files are already stored)."""
        ...

    def publish_report(self, path: Path) -> str:
        """Keep an upload report with the lake; return where it is."""
        ...


class LocalCollectionLake:
    def __init__(self, layout: LakeLayout):
        self.layout = layout

    def pull_config(self) -> None:
        pass

    def push_config(self) -> None:
        pass

    def publish(self, job_id: str) -> str:
        return str(self.layout.pending_batch(job_id))

    def known_rows(self, ref: PartitionRef) -> set[str]:
        return existing_row_hashes(self.layout, ref)

    def hash_index(self) -> HashIndex:
        return open_hash_index(self.layout)

    def publish_report(self, path: Path) -> str:
        return str(path)


class S3CollectionLake:
    def __init__(self, base: str):
        from ..lake.s3 import S3Lake

        self.s3_lake = S3Lake(base)
        self.storage = self.s3_lake.storage
        self.layout = self.s3_lake.scratch_layout()  # also refreshes config/schema.yaml

    def pull_config(self) -> None:
        path = collections_path(self.layout)
        try:
            data = self.storage.read_bytes(COLLECTIONS_KEY)
        except FileNotFoundError:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def push_config(self) -> None:
        self.storage.upload(collections_path(self.layout), COLLECTIONS_KEY)

    def publish(self, job_id: str) -> str:
        batch = self.layout.pending_batch(job_id)
        try:
            return self.s3_lake.stage(batch, job_id)
        finally:
            shutil.rmtree(batch, ignore_errors=True)

    def known_rows(self, ref: PartitionRef) -> set[str]:
        """The partition's ``row_hash`` column, read from S3 (that column only, no local copy)."""
        import pyarrow.parquet as pq

        from ..catalog.s3 import S3Catalog

        catalog = S3Catalog(self.s3_lake.base, self.storage)
        hashes: set[str] = set()
        for uri in catalog.files([ref]):  # a partition that does not exist yet lists nothing
            with catalog.fs.open_input_file(uri.removeprefix("s3://")) as fh:
                pf = pq.ParquetFile(fh)
                if ROW_HASH in pf.schema_arrow.names:
                    hashes.update(h for h in pf.read(columns=[ROW_HASH]).column(0).to_pylist() if h)
        return hashes

    def hash_index(self) -> HashIndex:
        return self.s3_lake.published_index()

    def publish_report(self, path: Path) -> str:
        key = f"logs/collections/{path.name}"
        self.storage.upload(path, key)
        return self.s3_lake.uri_of(key)


def open_collection_lake(lake: LakeLayout | str | os.PathLike | None) -> CollectionLake:
    """The collection lake of a :class:`LakeLayout`, ``s3://bucket/prefix`` or a folder (``None``: the
    default lake). The one place choosing local or S3 for collections."""
    if isinstance(lake, LakeLayout):
        return LocalCollectionLake(lake)
    if lake_kind(lake) == "s3":
        return S3CollectionLake(lake_base(lake))
    return LocalCollectionLake(LakeLayout(lake))
