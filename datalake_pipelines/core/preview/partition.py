"""What a ``catalog_partition`` materialization shows of its data: the contact sheet and the profile.

``partition_preview`` is what the Dagster layer calls; it never raises for a bad image (the row is listed in
``skipped``), so a preview can never fail an ingest run.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from ..catalog.parts import partition_files
from ..lake.layout import LakeLayout, PartitionRef
from ..lake.schema import load_schema
from .annotations import PreviewMapping
from .profile import profile_files, profile_png
from .thumbnails import MAX_THUMBNAILS, ContactSheet, contact_sheet, sample_rows


@dataclass
class PartitionPreview:
    sheet: ContactSheet
    scope: str  # "added" (rows of this run's part files) or "partition" (a sample of every row)
    profile: dict[str, Any]
    profile_png: bytes
    seconds: dict[str, float]

    def sheet_text(self) -> str:
        """The ``contact_sheet`` entry: a line saying what is shown, then the grid; or why nothing is shown."""
        sheet = self.sheet
        what = "rows this run added" if self.scope == "added" else "a sample of the whole partition"
        if sheet.shown:
            return f"{sheet.shown} thumbnails of {what}\n\n{sheet.markdown}"
        if sheet.rows_sampled == 0:
            return "no rows added by this run" if self.scope == "added" else "the partition has no rows"
        return f"no images among {what}"

    def profile_markdown(self, title: str = "profile") -> str:
        return f"![{title}](data:image/png;base64,{base64.b64encode(self.profile_png).decode('ascii')})"


def task_mapping(layout: LakeLayout, task: str) -> PreviewMapping:
    """The task's ``preview`` setting from the lake's ``config/schema.yaml`` (empty when it has none)."""
    spec = load_schema(layout).tasks.get(task)
    return PreviewMapping.from_config(spec.preview if spec else None)


def profile_partition(layout: LakeLayout, files: Sequence[Path]) -> dict[str, Any]:
    """:func:`~.profile.profile_files` of a partition's catalog ``files``, image file sizes from the lake's hash
    index (``layout.open_hash_index``: on S3 the lake's published index, not the work lake's)."""
    index = layout.open_hash_index()
    try:
        return profile_files(files, index)
    finally:
        if index is not None:
            index.close()


def partition_preview(
    layout: LakeLayout, ref: PartitionRef, added: Sequence[str | os.PathLike] | None = None, with_profile: bool = True
) -> PartitionPreview:
    """Contact sheet of up to 24 rows from ``added`` part files (a run's new rows), or sampled from the whole
    partition when ``added`` is None (a rebuild); profile of the whole partition. ``layout`` is the lake or the
    work lake the run used; ``added`` are the parts' paths or URIs (an S3 run reports the published ``s3://``
    part, read from the partition's folder in ``layout`` by name). Images are read with ``layout.read_asset``.
    Raises ``CatalogError`` or ``SchemaConfigError`` when the catalog or the schema file cannot be read."""
    t0 = time.perf_counter()
    files = partition_files(layout, ref)
    scope = "partition" if added is None else "added"
    folder = layout.partition_dir(ref)
    source = files if added is None else [p for p in (folder / PurePath(str(a)).name for a in added) if p.is_file()]
    rows = sample_rows(source, MAX_THUMBNAILS)
    sheet = contact_sheet(rows, layout.read_asset, task_mapping(layout, ref.task))
    t1 = time.perf_counter()
    doc: dict[str, Any] = {}
    png = b""
    if with_profile:
        doc = profile_partition(layout, files)
        png = profile_png(doc, ref.key)
    t2 = time.perf_counter()
    return PartitionPreview(sheet, scope, doc, png, {"contact_sheet": round(t1 - t0, 3), "profile": round(t2 - t1, 3)})
