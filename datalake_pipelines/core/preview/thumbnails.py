"""Annotated thumbnails (Pillow) and the Markdown contact sheet shown in a ``catalog_partition`` materialization.

A thumbnail is the image as displayed (EXIF orientation applied), fitted into ``max_side`` pixels, with the row's
annotations drawn on it: OCR words red, KIE fields blue, layout regions green, a VQA question and answer in a
band at the bottom. The contact sheet is a Markdown table of such JPEGs as ``data:`` URIs, because the Dagster UI
renders Markdown images only (raw HTML is stripped, so the images carry their own size) and re-downloads the
metadata of recent events on every asset page load: its total length is capped (``MAX_SHEET_CHARS``) by lowering
the JPEG quality, then the size, then dropping thumbnails from the end.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageOps

from .annotations import PreviewMapping, RowAnnotations, extract_annotations
from .fonts import label_font
from .markdown import md_escape

MAX_THUMBNAILS = 24
THUMB_SIDE = 128
MAX_SHEET_CHARS = 60_000
SHEET_COLUMNS = 4
MIN_SIDE = 16  # px: the short side of a thumbnail of an extreme aspect ratio is padded to this
# (side, JPEG quality) steps tried in order until the sheet fits its cap
LADDER = ((128, 70), (128, 55), (112, 50), (96, 45), (80, 40), (64, 35))
COLORS = {"text": (255, 0, 0), "field": (0, 90, 255), "region": (0, 170, 0)}
BOOKKEEPING = {"batch_id", "ingested_at", "row_hash", "provider", "dataset", "task", "variant"}
ID_COLUMNS = ("id", "doc_id", "image_id", "uid", "sample_id", "key", "file_name", "filename", "name")
TEXT_COLUMNS = ("caption", "text", "title", "description", "question", "ocr_text", "transcription", "sentence")
LABEL_COLUMNS = ("label", "labels", "category", "class", "class_name", "tag", "answer")


def image_columns(names: Sequence[str]) -> list[str]:
    """Image columns of a catalog schema: ``c`` with ``c_sha256``, ``c_width`` and ``c_height`` beside it."""
    have = set(names)
    return [c for c in names if {f"{c}_sha256", f"{c}_width", f"{c}_height"} <= have]


def generated_columns(names: Sequence[str]) -> set[str]:
    """Columns the lake writes (paths, hashes, image facts, bookkeeping): never a caption or an annotation."""
    have = set(names)
    out = set(BOOKKEEPING)
    for c in names:
        if f"{c}_sha256" in have:
            out |= {
                c,
                f"{c}_sha256",
                f"{c}_width",
                f"{c}_height",
                f"{c}_format",
                f"{c}_mode",
                f"{c}_orientation",
                f"{c}_size",
            }
    return out


# rendering ------------------------------------------------------------------------------------------------
def _rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: deep samples scaled by their range (``convert`` would clamp them)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill) -> None:
    """Draw ``text`` in a font that has its glyphs (:mod:`.fonts`); characters no font has are left out."""
    font, drawable = label_font(text, size)
    if drawable:
        draw.text(xy, drawable, fill=fill, font=font)


def render_thumbnail(
    path: Path | IO[bytes], annotations: RowAnnotations | None = None, max_side: int = THUMB_SIDE
) -> Image.Image:
    """The displayed image fitted into ``max_side`` px with ``annotations`` drawn; raises ``OSError`` when the
    file cannot be read or decoded. Only the first frame of an animation is shown."""
    with Image.open(path) as im:
        orientation = im.getexif().get(274) if im.format != "TIFF" else None  # Pillow shows TIFF transposed
        full = im.size
        if im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))  # decode at 1/2..1/8 scale: a few times faster for big JPEGs
        shown = ImageOps.exif_transpose(im) if orientation and orientation != 1 else im
        thumb = _rgb(shown)
    display = (full[1], full[0]) if orientation in (5, 6, 7, 8) else full
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if annotations:
        draw_annotations(thumb, annotations, display)
    return letterbox(thumb)


def letterbox(thumb: Image.Image, min_side: int = MIN_SIDE) -> Image.Image:
    """``thumb`` centred on a grey band of at least ``min_side`` px each way: a 10000x50 image fitted into 128 px
    is 128x1, which no one can see or click."""
    w, h = thumb.size
    if w >= min_side and h >= min_side:
        return thumb
    canvas = Image.new("RGB", (max(w, min_side), max(h, min_side)), (200, 200, 200))
    canvas.paste(thumb, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return canvas


def draw_annotations(thumb: Image.Image, annotations: RowAnnotations, display: tuple[int, int]) -> None:
    """Draw ``annotations`` (coordinates of the ``display``-sized image, or normalized) onto ``thumb``."""
    w, h = thumb.size
    sx, sy = (w, h) if annotations.normalized else (w / max(display[0], 1), h / max(display[1], 1))
    draw = ImageDraw.Draw(thumb)
    width = max(1, round(max(w, h) / 128))  # 1 px at 128, 2 px at 256
    labelled = max(w, h) >= 192  # a label on a 128 px thumbnail only hides the image: the caption lists them
    size = max(8, max(w, h) // 22)
    for shape in annotations.scaled(sx, sy):
        color = COLORS.get(shape.kind, COLORS["region"])
        if shape.is_box:
            (x0, y0), (x1, y1) = shape.points
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=width)
        else:
            draw.line([*shape.points, shape.points[0]], fill=color, width=width, joint="curve")
        if labelled and shape.label:
            x, y = shape.points[0]
            _text(draw, (x, max(0, y - size - 1)), shape.label[:24], size, color)
    if annotations.qa:
        q, a = annotations.qa[0]
        size = max(8, max(w, h) // 12)
        lines = [f"Q: {q}"[:48], f"A: {a}"[:48]]
        band = (size + 2) * len(lines) + 2
        draw.rectangle([0, h - band, w, h], fill=(0, 0, 0))
        for i, line in enumerate(lines):
            _text(draw, (2, h - band + 1 + i * (size + 2)), line, size, (255, 255, 0))


def jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    """JPEG of ``im``; 4:4:4 chroma keeps 2 px coloured box edges their colour (4:2:0 smears them). No
    ``optimize``: with it Pillow 13 fails on noisy 256 px images at quality >= 70 ("broken data stream when
    writing image file": libjpeg's Huffman pass outgrows Pillow's buffer); the contact sheet's size cap is
    met by its quality/size ladder instead."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


# rows -------------------------------------------------------------------------------------------------
def sample_rows(paths: Sequence[Path], n: int = MAX_THUMBNAILS) -> list[dict[str, Any]]:
    """Up to ``n`` rows spread evenly over the files (in order), reading only the row groups that hold them."""
    files = [pq.ParquetFile(p) for p in paths]
    counts = [f.metadata.num_rows for f in files]
    total = sum(counts)
    if total == 0 or n <= 0:
        return []
    k = min(n, total)
    wanted = sorted({(i * total) // k for i in range(k)})
    rows: list[dict[str, Any]] = []
    offset = 0
    for pf, count in zip(files, counts):
        local = [w - offset for w in wanted if offset <= w < offset + count]
        start = 0
        for rg in range(pf.num_row_groups):
            size = pf.metadata.row_group(rg).num_rows
            idx = [i - start for i in local if start <= i < start + size]
            if idx:
                rows += pf.read_row_group(rg).take(idx).to_pylist()
            start += size
        offset += count
    return rows


def _short(value: Any, limit: int) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_fields(row: Mapping[str, Any], annotations: RowAnnotations | None = None, limit: int = 40) -> dict[str, str]:
    """``{"id", "text", "label"}`` of a row: named columns first, then fallbacks (``row_hash``; OCR words; the
    first plain text column). Values are single-line and at most ``limit`` characters."""
    names = list(row)
    generated = generated_columns(names)
    lowered = {n.lower(): n for n in names if n not in generated}

    def first(candidates: Sequence[str]) -> str | None:
        for c in candidates:
            if c in lowered and row[lowered[c]] not in (None, ""):
                return lowered[c]
        return None

    id_col = first(ID_COLUMNS) or next((n for n in lowered.values() if n.lower().endswith("_id")), None)
    ident = row[id_col] if id_col else str(row.get("row_hash") or "")[:12]
    label_col = first(LABEL_COLUMNS)
    text_col = first(TEXT_COLUMNS)
    text = row[text_col] if text_col else None
    if text is None and annotations is not None and annotations.shapes:
        text = " ".join(s.label for s in annotations.shapes if s.label)
    if text is None:
        plain = [
            n
            for n in lowered.values()
            if n not in (id_col, label_col) and isinstance(row[n], str) and row[n][:1] not in ("{", "[")
        ]
        text = row[plain[0]] if plain else ""
    label = row[label_col] if label_col else ""
    return {"id": _short(ident, limit), "text": _short(text, limit), "label": _short(label, limit)}


# contact sheet ---------------------------------------------------------------------------------------------
@dataclass
class Thumb:
    fields: dict[str, str]
    image: Image.Image
    summary: str = ""
    qa: str = ""
    jpeg: bytes = b""


@dataclass
class ContactSheet:
    """The Markdown grid and what it took: ``shown`` thumbnails at ``side`` px / ``quality``, ``chars`` long."""

    markdown: str
    shown: int
    rows_sampled: int
    side: int
    quality: int
    chars: int
    skipped: list[str] = field(default_factory=list)  # rows whose image could not be shown, with why


def make_thumbs(
    rows: Sequence[Mapping[str, Any]],
    read: Callable[[str], bytes],
    mapping: PreviewMapping | None = None,
    max_side: int = THUMB_SIDE,
) -> tuple[list[Thumb], list[str]]:
    """An annotated thumbnail of each row's first image; ``read`` returns the bytes of a lake-relative path
    (``LakeLayout.read_asset``: a local file, or an S3 object). Returns the thumbnails and, for rows without
    one, why."""
    thumbs, skipped = [], []
    for row in rows:
        names = list(row)
        cols = [c for c in image_columns(names) if row.get(c)]
        if not cols:
            skipped.append(f"{key_fields(row)['id']}: no image")
            continue
        ann = extract_annotations(row, mapping, skip=generated_columns(names))
        try:
            image = render_thumbnail(io.BytesIO(read(row[cols[0]])), ann, max_side)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            skipped.append(f"{row[cols[0]]}: {type(exc).__name__}: {exc}")
            continue
        qa = f"Q: {ann.qa[0][0]} A: {ann.qa[0][1]}" if ann.qa else ""
        thumbs.append(Thumb(key_fields(row, ann), image, ann.summary(), _short(qa, 60)))
    return thumbs, skipped


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


_md = md_escape  # the one escape of user text in metadata Markdown


def sheet_markdown(thumbs: Sequence[Thumb], columns: int = SHEET_COLUMNS) -> str:
    """A Markdown table: a row of images, then a row of their captions, per ``columns`` thumbnails."""
    if not thumbs:
        return ""
    n = min(columns, len(thumbs))
    lines = ["|" + " |" * n, "|" + "---|" * n]
    for start in range(0, len(thumbs), n):
        chunk = list(thumbs[start : start + n])
        pad = [""] * (n - len(chunk))
        images = [f"![{_md(t.fields['id'])}]({data_uri(t.jpeg)})" for t in chunk]
        captions = []
        for t in chunk:
            bits = [f"**{_md(t.fields['id'])}**"] + [_md(x) for x in (t.fields["label"], t.fields["text"], t.qa) if x]
            if t.summary:
                bits.append(f"_{_md(t.summary)}_")
            captions.append(" · ".join(bits))
        lines.append("| " + " | ".join(images + pad) + " |")
        lines.append("| " + " | ".join(captions + pad) + " |")
    return "\n".join(lines)


def contact_sheet(
    rows: Sequence[Mapping[str, Any]],
    read: Callable[[str], bytes],
    mapping: PreviewMapping | None = None,
    max_chars: int = MAX_SHEET_CHARS,
) -> ContactSheet:
    """The contact sheet of ``rows`` (at most ``MAX_THUMBNAILS`` are used) within ``max_chars`` characters;
    ``read`` as in :func:`make_thumbs`."""
    rows = list(rows)[:MAX_THUMBNAILS]
    thumbs, skipped = make_thumbs(rows, read, mapping, LADDER[0][0])
    side, quality, text = LADDER[0][0], LADDER[0][1], ""
    for side, quality in LADDER:
        for t in thumbs:
            im = t.image if side >= max(t.image.size) else t.image.copy()
            im.thumbnail((side, side), Image.Resampling.LANCZOS)
            t.jpeg = jpeg_bytes(im, quality)
        text = sheet_markdown(thumbs)
        if len(text) <= max_chars:
            break
    while thumbs and len(text) > max_chars:
        thumbs.pop()
        text = sheet_markdown(thumbs)
    return ContactSheet(text, len(thumbs), len(rows), side, quality, len(text), skipped)
