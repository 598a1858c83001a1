"""The near-duplicate report as a static, self-contained HTML page: one row per cluster, members side by side.

Written by ``datalake near-dups --out DIR`` with the page machinery of the partition gallery
(:mod:`..preview.gallery`): ``DIR/index.html``, ``DIR/thumbs/c<cluster>_<member>.jpg`` (at most
:data:`THUMB_SIDE` px, EXIF orientation applied) and ``DIR/images/<sha256>.<ext>`` (a copy of each full image,
once), relative links only, no external CSS, script or font, and the same Content-Security-Policy, so it opens
from the file system with no server and loads nothing from outside the folder. The folder is claimed and
published like the gallery's (never replaces an existing folder unless ``overwrite``).

Each member is captioned with its partition, row id (a named id column of its catalog row, else the start of its
``row_hash``), ``row_hash``, image column, pixel size, and either "kept" (the member ``exclude_near_duplicates``
keeps: the earliest ingested) or its Hamming distance in bits to the kept member. Images are read with
``read(path)`` (lake-relative path -> bytes), so local and S3 lakes are the same here.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from ..preview.gallery import STYLE, page_html, staged_folder
from ..preview.thumbnails import jpeg_bytes, key_fields, render_thumbnail

THUMB_SIDE = 192
PER_CLUSTER = 24  # members shown per cluster; a cluster of a blank image can hold thousands
CLUSTER_STYLE = (
    STYLE
    + """
section.cluster{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:0 0 12px}
section.cluster h2{font-size:14px;margin:0 0 6px}
.members{display:flex;gap:10px;overflow-x:auto;align-items:flex-start}
.members figure{flex:0 0 auto;width:200px;padding:4px;border:2px solid #ddd}
.members figure.kept{border-color:#2a2;background:#f3fff3}
.members figure img{max-width:192px;max-height:192px}
.badge{border-radius:3px;padding:0 4px;font-weight:600} .kept .badge{background:#2a2;color:#fff}
.dist .badge{background:#fd8;color:#520} code{font-size:11px;color:#555} .part{color:#05c}
"""
)


def member_rows(base: str, row_hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Catalog rows (all columns, as dicts) of ``row_hashes`` across the lake at ``base``, by ``row_hash``."""
    from ..catalog.query import DuckDBClient

    wanted = sorted(set(row_hashes))
    if not wanted:
        return {}
    with DuckDBClient(base_path=base) as duck:
        table = duck.run(duck.plan_retrieval(where={"row_hash": wanted}))
    return {row["row_hash"]: row for row in table.to_pylist()}


def _member_html(cluster: int, k: int, m: Mapping[str, Any], row: Mapping[str, Any] | None, thumb: str | None,
                 full: str | None, size: tuple[int, int] | None, reason: str = "") -> str:  # fmt: skip
    e = html.escape
    ident = key_fields(row, limit=60)["id"] if row else m["row_hash"][:12]
    cls = "member kept" if m["kept"] else "member dist"
    attrs = (f'id="c{cluster}m{k}" class="{cls}" data-row-hash="{e(m["row_hash"])}" '
             f'data-partition="{e(m["partition"])}" data-distance="{m["distance"]}" '
             f'data-kept="{str(m["kept"]).lower()}"')  # fmt: skip
    parts = [f"<figure {attrs}>"]
    if thumb and full:
        parts.append(f'<a href="{e(full)}"><img src="{e(thumb)}" alt="{e(ident)}"></a>')
    else:
        parts.append(f'<p class="skipped">no preview: {e(reason)}</p>')
    badge = "kept" if m["kept"] else f"d = {m['distance']} bits"
    caption = [
        f'<span class="badge">{badge}</span> <span class="id">{e(ident)}</span>',
        f'<span class="part">{e(m["partition"])}</span>',
        f'row <code class="row-hash">{e(m["row_hash"][:16])}</code>',
        f"{e(m['column'])}" + (f" · {size[0]}×{size[1]}" if size else ""),
    ]
    if full:
        caption.append(f'<a href="{e(full)}">full image</a>')
    parts.append(f"<figcaption>{'<br>'.join(caption)}</figcaption></figure>")
    return "".join(parts)


def write_near_dups_gallery(
    report: Mapping[str, Any],
    read: Callable[[str], bytes],
    out_dir: str | os.PathLike,
    rows: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    per_cluster: int = PER_CLUSTER,
    overwrite: bool = False,
    lake: object = None,
) -> dict[str, Any]:
    """Write the page of ``report`` (:func:`~.report.near_duplicate_report`) into ``out_dir``.

    ``read(path)`` returns the bytes of a lake-relative asset path; ``rows`` maps ``row_hash`` to its catalog
    row (:func:`member_rows`) for the captions' row ids (``row_hash`` alone without it). At most ``limit``
    clusters (all when None) and ``per_cluster`` members of each are shown, in the report's order (largest
    first; kept member first). A member whose image cannot be read or decoded gets a caption and no
    thumbnail, and is listed in ``skipped``. Returns ``{"path", "index", "clusters", "clusters_shown",
    "members_shown", "thumbnails", "images", "skipped"}``. Raises ``FileExistsError`` when ``out_dir`` exists
    and not ``overwrite``; ``OutputPathError`` (a ``ValueError``) when ``out_dir`` is the lake at ``lake`` (its
    base path), inside it or holds it, or exists and is not a page written here; ``ValueError`` for a ``limit``
    below 0 or a ``per_cluster`` below 1.
    """
    if (limit is not None and limit < 0) or per_cluster < 1:
        raise ValueError("limit must be 0 or more and per_cluster at least 1")
    rows = rows or {}
    clusters = list(report["clusters"])
    shown = clusters if limit is None else clusters[:limit]
    sections, skipped, copied = [], [], set()
    thumbs = members_shown = 0
    with staged_folder(out_dir, overwrite, lake) as (tmp, out):
        (tmp / "thumbs").mkdir()
        (tmp / "images").mkdir()
        for c in shown:
            n = c["cluster"]
            figures = []
            for k, m in enumerate(c["members"][:per_cluster]):
                members_shown += 1
                row = rows.get(m["row_hash"])
                try:
                    data = read(m["path"])
                    with Image.open(io.BytesIO(data)) as im:
                        size = im.size
                    thumb = render_thumbnail(io.BytesIO(data), None, THUMB_SIDE)  # Pillow opens file objects too
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    figures.append(_member_html(n, k, m, row, None, None, None, f"{type(exc).__name__}: {exc}"))
                    skipped.append(f"cluster {n}: {m['path']}: {type(exc).__name__}: {exc}")
                    continue
                full = f"images/{m['sha256']}{PurePosixPath(m['path']).suffix.lower()}"
                if full not in copied:
                    (tmp / full).write_bytes(data)
                    copied.add(full)
                name = f"thumbs/c{n:05d}_{k:03d}.jpg"
                (tmp / name).write_bytes(jpeg_bytes(thumb, 85))
                thumbs += 1
                figures.append(_member_html(n, k, m, row, name, full, size))
            more = c["size"] - min(c["size"], per_cluster)
            head = (
                f"cluster {n} · {c['size']} images · {c['distinct_assets']} distinct asset(s) · "
                f"max distance {c['max_distance']} bits" + (f" · {more} more not shown" if more else "")
            )
            sections.append(
                f'<section class="cluster" id="cluster{n}" data-size="{c["size"]}">'
                f'<h2>{html.escape(head)}</h2><div class="members">{"".join(figures)}</div></section>'
            )
        scope = f" touching {report['scope']}" if report.get("scope") else ""
        meta = (f"{report['cluster_count']} cluster(s){scope} holding {report['images_in_clusters']} of "
                f"{report['images']} images within {report['threshold']} bits of 64-bit pHash"
                + (f"; {len(clusters) - len(shown)} more not shown (limit)" if len(shown) < len(clusters) else "")
                + ". Green: the member kept by exclude_near_duplicates (earliest ingested); d: Hamming distance "
                "to it. Click a thumbnail for the full image.")  # fmt: skip
        body = "".join(sections) or "<p>No near-duplicate clusters.</p>"
        title = f"near-duplicates{scope} (threshold {report['threshold']})"
        (tmp / "index.html").write_text(page_html(title, html.escape(meta), body, CLUSTER_STYLE), encoding="utf-8")
    return {"path": str(out), "index": str(out / "index.html"), "clusters": len(clusters),
            "clusters_shown": len(shown), "members_shown": members_shown, "thumbnails": thumbs,
            "images": len(copied), "skipped": skipped}  # fmt: skip
