"""``CollectionClientMixin``: collections and data units on :class:`DatalakeClient` (the reference client's shape).

The host class provides ``layout`` (a :class:`LakeLayout`), ``num_proc``, ``batch_size`` and ``progress``.
"""

from __future__ import annotations

import os
from typing import Any

from .core.collection import api as cols
from .core.collection.file_copy import CopyProgress
from .core.lake.layout import LakeLayout


class CollectionClientMixin:
    layout: LakeLayout
    num_proc: int
    batch_size: int
    progress: bool

    @property
    def lake_ref(self) -> LakeLayout | str:
        """The lake collections work on: the layout, or an ``s3://`` base (a host for an S3 lake overrides this)."""
        return self.layout

    def list_data_collection(self) -> list[dict[str, Any]]:
        """Every collection: ``id``, ``name``, ``description``, ``file_specifications``, ``project``, ``created_at``."""
        return cols.list_data_collection(self.lake_ref)

    def get_data_collection(self, data_collection_id: str | int) -> dict[str, Any]:
        """One collection by id or name."""
        return cols.get_data_collection(self.lake_ref, data_collection_id)

    def create_data_collection(
        self,
        name: str,
        provider: str,
        dataset: str,
        file_specifications: list[dict[str, Any]],
        description: str = "",
        task: str | None = None,
        variant: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Declare a collection in ``config/collections.yaml``; provider/task/meta are checked against the schema."""
        return cols.create_collection(
            self.lake_ref, name, provider, dataset, file_specifications, description, task, variant, meta
        ).to_dict()

    def upload_data_file(
        self, organized_file: dict[str, Any], collection_id: str | int, use_chunked_upload: bool = False
    ) -> dict[str, Any]:
        """Copy one organized unit (``{"files": {spec: Path}, "meta": {...}}``) into the lake's upload area.

        ``use_chunked_upload=True`` copies every file in bounded 8 MB chunks with a progress bar (files above
        50 MB are always chunked, as the reference recommends).
        """
        if not use_chunked_upload:
            return cols.upload_data_file(self.lake_ref, organized_file, str(collection_id))
        sizes = [os.path.getsize(p) for p in organized_file.get("files", {}).values() if os.path.isfile(p)]
        bar = CopyProgress(sum(sizes), len(sizes), "uploading", self.progress)
        try:
            return cols.upload_data_file(self.lake_ref, organized_file, str(collection_id), progress=bar, chunked=True)
        finally:
            bar.close()

    def create_data_units(self, uploaded_files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stage uploaded units as one batch; each data unit's ``id`` is its future catalog ``row_hash``."""
        return cols.create_data_units(self.lake_ref, uploaded_files, num_proc=self.num_proc, batch_size=self.batch_size)

    def upload_collection(
        self,
        folder: str | os.PathLike,
        collection: str | int,
        strict: bool = False,
        group_by: str = "stem",
        pattern: str | None = None,
        batch_size: int | None = None,
        retries: int = 4,
        report_path: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """Organize, validate and stage a folder as data units of ``collection``; return the report."""
        return cols.upload_collection(
            self.lake_ref,
            folder,
            str(collection),
            strict=strict,
            batch_size=batch_size or self.batch_size,
            progress=self.progress,
            retries=retries,
            group_by=group_by,
            pattern=pattern,
            num_proc=self.num_proc,
            report_path=report_path,
        )
