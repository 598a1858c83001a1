"""Fonts for labels drawn on thumbnails, chosen per label by glyph coverage so no label is drawn as boxes.

Pillow's ``ImageFont.load_default`` covers Latin only. The chain tried is: a CJK font if the machine has one
(WenQuanYi Micro Hei from Debian ``fonts-wqy-microhei``, 1.6 MB, installed by ``make browser``; or Noto Sans
CJK), then DejaVu Sans (matplotlib ships it, so it is always there: Latin, Greek, Cyrillic, Arabic, Hebrew;
Pillow shapes Arabic and right-to-left text with libraqm when it has it). Characters no font in the chain covers
(e.g. colour emoji) are left out of the drawn label; the gallery's HTML caption and the contact sheet's
caption keep the full text, which the browser renders with its own fonts.

Coverage is read from each font's character map with matplotlib's ``FT2Font`` (FreeType), once per font.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from PIL import ImageFont

CJK_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
)


@functools.cache
def font_chain() -> tuple[str, ...]:
    """Font files tried in order (CJK first when installed, then matplotlib's DejaVu Sans)."""
    import matplotlib

    dejavu = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return tuple(p for p in (*CJK_CANDIDATES, dejavu) if Path(p).is_file())


@functools.cache
def _coverage(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(path).get_charmap())


@functools.cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def label_font(text: str, size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, str]:
    """``(font, drawable)``: the first font of :func:`font_chain` covering the most of ``text``'s characters, and
    ``text`` without the characters it does not cover (possibly empty: then draw nothing). Whitespace always
    counts as covered. Pillow's default font (Latin only) when no font file exists."""
    size = max(8, size)
    chain = font_chain()
    if not chain:
        return ImageFont.load_default(size), "".join(ch for ch in text if ch.isascii())
    best, best_missing = chain[0], None
    for path in chain:
        cover = _coverage(path)
        missing = sum(1 for ch in text if ord(ch) not in cover and not ch.isspace())
        if best_missing is None or missing < best_missing:
            best, best_missing = path, missing
        if missing == 0:
            break
    cover = _coverage(best)
    drawable = "".join(ch for ch in text if ord(ch) in cover or ch.isspace())
    return _font(best, size), " ".join(drawable.split())
