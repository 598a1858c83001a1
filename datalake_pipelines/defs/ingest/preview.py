"""Contact sheet and profile of a ``catalog_partition`` materialization, as Dagster metadata.

The Dagster UI shows Markdown images only in the "Show Markdown" dialog of a metadata entry, strips raw HTML
and downloads recent events' metadata on every asset page load, so everything here stays small: the sheet is
capped at about 60 KB (``core/preview/thumbnails.py``), the profile PNG at about 40 KB.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from ...core.preview.partition import partition_preview
from ...core.preview.profile import compact_figures


def preview_metadata(layout, ref, results=None, log=None) -> dict[str, Any]:
    """Metadata entries for the rows ``results`` (``BatchResult``s) added, or a sample of the whole partition
    when ``results`` is None (a rebuild). ``layout`` is the view the run worked in (on S3 a work lake, which
    reads the lake's assets and hash index from S3). A failure is logged and reported in ``preview_error``,
    never raised: a preview must not fail an ingest."""
    added = None if results is None else [r.part_file for r in results if r.part_file]  # paths, or s3:// URIs
    try:
        preview = partition_preview(layout, ref, added)
    except Exception as exc:  # noqa: BLE001 - see docstring
        if log is not None:
            log.warning(f"preview of {ref.key} failed: {type(exc).__name__}: {exc}")
        return {"preview_error": f"{type(exc).__name__}: {exc}"}
    sheet = preview.sheet
    info = {
        "scope": preview.scope,
        "thumbnails": sheet.shown,
        "rows_sampled": sheet.rows_sampled,
        "side_px": sheet.side,
        "jpeg_quality": sheet.quality,
        "chars": sheet.chars,
        "skipped": sheet.skipped[:10],
        "seconds": preview.seconds,
    }
    figures = compact_figures(preview.profile) if preview.profile else {}  # top 20 columns: see profile --json
    return {
        "contact_sheet": dg.MetadataValue.md(preview.sheet_text()),
        "contact_sheet_info": dg.MetadataValue.json(json.loads(json.dumps(info, default=str))),
        "profile": dg.MetadataValue.md(preview.profile_markdown(f"profile of {ref.key}")),
        "profile_figures": dg.MetadataValue.json(json.loads(json.dumps(figures, default=str))),
    }
