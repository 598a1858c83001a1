"""``datalake preview``: a static, self-contained HTML gallery of a selection of catalog rows.

The folder holds ``index.html``, ``thumbs/<n>.jpg`` (annotated, 256 px) and ``images/<sha256>.<ext>`` (copies of
the full images, each once), so it opens from the file system with no server and nothing outside the folder:
every ``src``/``href`` is a relative path, there is no external CSS, script or font, and a Content Security
Policy forbids any other load (``default-src 'none'``). Images are copied, not hard-linked: a user editing the
gallery's copy must never change the lake's content-addressed asset. Image bytes come from a ``read`` function
(a local file or an S3 object), so a gallery of an S3 lake is the same page.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ..export.output_guard import staged_folder
from ..lake.layout import LakeLayout, PartitionRef
from .annotations import PreviewMapping, extract_annotations
from .thumbnails import generated_columns, image_columns, jpeg_bytes, key_fields, render_thumbnail

GALLERY_SIDE = 256
DEFAULT_LIMIT = 100
CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 4px} p.meta{color:#666;margin:0 0 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(272px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figure img{display:block;max-width:256px;max-height:256px;margin:0 auto}
figcaption{font-size:12px;margin-top:6px;word-break:break-word}
.id{font-weight:600} .label{background:#eef;border-radius:3px;padding:0 4px;margin-left:4px}
.qa{color:#a60} ul.ann{margin:4px 0 0;padding-left:16px;max-height:90px;overflow:auto;color:#444}
li[data-kind=text]{color:#c00} li[data-kind=field]{color:#05c} li[data-kind=region]{color:#080}
.skipped{color:#a00}
"""


def page_html(title: str, meta: str, body: str, style: str = STYLE) -> str:
    """A whole self-contained page: ``meta`` and ``body`` are HTML (escaped by the caller), ``title`` is text.
    The Content-Security-Policy (:data:`CSP`) lets the page load images from its own folder only."""
    t = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{t}</title><style>{style}</style></head><body>"
        f'<h1>{t}</h1><p class="meta">{meta}</p>{body}</body></html>\n'
    )


def _figure(n: int, row: Mapping[str, Any], shown: Sequence[tuple[str, str, str]], mapping, reason: str = "") -> str:
    """One row's ``<figure>``: a linked thumbnail per ``(column, thumb, full)`` in ``shown``, captions, and the
    reason for any image not shown."""
    names = list(row)
    ann = extract_annotations(row, mapping, skip=generated_columns(names))
    fields = key_fields(row, ann, limit=80)
    e = html.escape
    parts = [f'<figure id="row{n}" data-annotations="{len(ann.shapes) + len(ann.qa)}">']
    for col, thumb, full in shown:
        title = f' title="{e(col)}"' if len(shown) > 1 else ""
        parts.append(f'<a href="{e(full)}"{title}><img src="{e(thumb)}" alt="{e(fields["id"])}"></a>')
    if reason:
        parts.append(f'<p class="skipped">no preview: {e(reason)}</p>')
    caption = f'<span class="id">{e(fields["id"])}</span>'
    if fields["label"]:
        caption += f'<span class="label">{e(fields["label"])}</span>'
    if fields["text"]:
        caption += f"<br>{e(fields['text'])}"
    for q, a in ann.qa[:3]:
        caption += f'<br><span class="qa">Q: {e(q)}<br>A: {e(a)}</span>'
    if ann.shapes:
        items = "".join(f'<li data-kind="{s.kind}">{e(s.label or s.kind)}</li>' for s in ann.shapes[:50])
        caption += f'<br>{e(ann.summary())}<ul class="ann">{items}</ul>'
    for col, _, full in shown:
        caption += f'<br><a href="{e(full)}">full image{f" ({e(col)})" if len(shown) > 1 else ""}</a>'
    parts.append(f"<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def write_gallery(
    read: Callable[[str], bytes],
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    title: str = "",
    mapping: PreviewMapping | None = None,
    overwrite: bool = False,
    lake: object = None,
) -> dict[str, Any]:
    """Write the gallery of ``rows`` (catalog rows as dicts) into the local folder ``out_dir``; returns
    ``{"path", "index", "rows", "thumbnails", "images", "skipped": [reasons]}``.

    ``read(path)`` returns the bytes of a lake-relative asset path (``LakeLayout.read_asset``, on S3 a GET).
    ``out_dir`` is never replaced unless ``overwrite``: it is claimed with ``os.mkdir`` (``FileExistsError``
    otherwise); the gallery is written to a hidden sibling and renamed into place when complete. It may not be
    a URI, the lake at ``lake`` (its base), lie inside it or hold it (``OutputPathError``, see
    :mod:`..export.output_guard`)."""
    figures, skipped, copied = [], [], set()
    thumbs = 0
    with staged_folder(out_dir, overwrite, lake) as (tmp, out):
        (tmp / "thumbs").mkdir()
        (tmp / "images").mkdir()
        for n, row in enumerate(rows):
            cols = [c for c in image_columns(list(row)) if row.get(c)]
            if not cols:
                figures.append(_figure(n, row, [], mapping, "the row has no image"))
                skipped.append(f"row {n}: no image")
                continue
            ann = extract_annotations(row, mapping, skip=generated_columns(list(row)))
            shown, reasons = [], []
            for k, col in enumerate(cols):  # every image column; annotations are drawn on the first one
                try:
                    data = read(row[col])
                    thumb = render_thumbnail(io.BytesIO(data), ann if k == 0 else None, GALLERY_SIDE)
                    name = f"thumbs/{n:05d}_{k}.jpg"
                    (tmp / name).write_bytes(jpeg_bytes(thumb, 85))
                    suffix = PurePosixPath(row[col]).suffix.lower()
                    full = f"images/{row.get(f'{col}_sha256') or f'{n}_{k}'}{suffix}"
                    if full not in copied:
                        (tmp / full).write_bytes(data)
                        copied.add(full)
                except Exception as exc:  # noqa: BLE001 - one row's failure is reported, never aborts the page
                    reasons.append(f"{col}: {type(exc).__name__}: {exc}")
                    skipped.append(f"row {n}: {row[col]}: {type(exc).__name__}: {exc}")
                    continue
                shown.append((col, name, full))
            thumbs += len(shown)
            figures.append(_figure(n, row, shown, mapping, "; ".join(reasons)))
        meta = (
            f"{len(rows)} rows, {thumbs} thumbnails (every image column; annotations on the first); click one "
            "for the full image. Boxes: red OCR text, blue KIE fields, green layout regions."
        )
        body = f'<div class="grid">{"".join(figures)}</div>'
        (tmp / "index.html").write_text(
            page_html(title or "datalake preview", html.escape(meta), body), encoding="utf-8"
        )
    return {
        "path": str(out),
        "index": str(out / "index.html"),
        "rows": len(rows),
        "thumbnails": thumbs,
        "images": len(copied),
        "skipped": skipped,
    }


def select_rows(layout: LakeLayout, ref: PartitionRef, where: dict[str, Any] | None, limit: int | None) -> list[dict]:
    """Rows of one partition matching ``where`` (the download/export filter rules), at most ``limit``; ``layout``
    holds the partition's catalog files (the lake, or ``Lake.partition_view``'s work lake on S3)."""
    from ..catalog.query import DuckDBClient
    from ..export.download import Selection

    selection = Selection(
        providers=[ref.provider],
        datasets=[ref.dataset],
        tasks=[ref.task],
        variants=[ref.variant],
        where=where or None,
        limit=limit,
    )
    with DuckDBClient(base_path=layout.base) as duck:
        return duck.run(selection.plan(duck)).to_pylist()
