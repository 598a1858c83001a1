"""The perceptual hash recorded for every image at ingest (``<col>_phash`` in the catalog, ``phash`` in the index).

Which hash and why: ``imagehash.phash`` (a maintained library), the 64-bit DCT hash of Zauner / hackerfactor:
grey levels resized to 32x32, 2-D DCT, the 8x8 lowest frequencies compared with their median. Low DCT
frequencies survive re-encoding, resizing and small crops (measured in ``datalake_pipelines_tests/test_near_dups.py``:
JPEG re-encode and a 10 % resize move 0-2 bits, a 2 % crop 0-6), while unrelated images differ in about 32 bits.
aHash/dHash are cheaper but flip more bits on re-encoding; wavelet and colour hashes cost more for no gain here.

The hash is taken of frame 0 **as displayed** (EXIF orientation applied, as for ``<col>_width``/``_height``),
so a copy rotated by its orientation tag hashes like the displayed image. JPEGs are decoded with
``Image.draft`` at the smallest DCT scale that keeps at least 64 px a side (libjpeg skips the rest of the
work: the hash only needs 32x32); other formats are hashed from the frame ``inspect_image`` already decoded.

Storage: the 64 bits as a **signed int64** (two's complement of the unsigned value ``int(str(hash), 16)``).
SQLite integers, Parquet/Arrow ``int64``, DuckDB ``BIGINT`` and Athena ``bigint`` all hold it; SQLite and
Athena have no unsigned 64-bit type. The Hamming distance in DuckDB is ``bit_count(xor(a, b))`` (``bit_count``
counts the bits of the two's complement, so signs do not matter); in numpy XOR the ``uint64`` views and use
``np.bitwise_count`` (on signed values it would count the absolute value's bits).

``$DATALAKE_PHASH`` (default on; ``0``/``false``/``off`` turns it off) says whether ingest computes it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from ...settings import PHASH_ENV  # noqa: F401 - re-exported: tests and docs name it here
from ...settings import load as load_settings
from ..ingest.images import ORIENTATION_TAG, SIZE_ALREADY_DISPLAYED

HASH_BITS = 64
DRAFT_SIDE = 64  # JPEG draft target: at least twice the 32x32 the DCT runs on
JPEG_FORMATS = frozenset(("JPEG", "MPO"))


def phash_enabled() -> bool:
    """``$DATALAKE_PHASH``: on unless set to ``0``/``false``/``no``/``off`` (any case)."""
    return load_settings().phash


def to_signed(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_hex(value: int) -> str:
    """The stored signed int64 as 16 hex digits (``imagehash``'s ``str(hash)``)."""
    return f"{value & ((1 << 64) - 1):016x}"


def hamming(a: int, b: int) -> int:
    """Bits that differ between two stored hashes (signed or unsigned)."""
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def image_phash(im: Image.Image) -> int:
    """pHash of frame 0 of an open Pillow image, as a signed int64.

    A JPEG not yet decoded is decoded at a reduced DCT scale (``draft``); any other image is decoded (or used as
    already decoded). Raises whatever Pillow raises for broken data (:func:`safe_phash` does not)."""
    if im.format in JPEG_FORMATS:
        im.draft("L", (DRAFT_SIDE, DRAFT_SIDE))  # a no-op on an image already decoded
    # TIFF: Pillow already applies the orientation on load. Without a tag, exif_transpose would still copy.
    if im.format not in SIZE_ALREADY_DISPLAYED and im.getexif().get(ORIENTATION_TAG, 1) in range(2, 9):
        im = ImageOps.exif_transpose(im)
    bits = imagehash.phash(im).hash.flatten()
    return to_signed(int.from_bytes(np.packbits(bits).tobytes(), "big"))


def safe_phash(im: Image.Image) -> int | None:
    """:func:`image_phash`, or ``None`` when the image cannot be hashed (the image is still ingested)."""
    try:
        return image_phash(im)
    except Exception:  # noqa: BLE001 - a hash is a hint; a plugin may raise anything on odd data
        return None


def phash_of(content: bytes | str | os.PathLike) -> int | None:
    """pHash of an image file's bytes or path (``None`` when it cannot be decoded)."""
    source = io.BytesIO(content) if isinstance(content, (bytes, bytearray, memoryview)) else Path(content)
    try:
        with Image.open(source) as im:
            return safe_phash(im)
    except Exception:  # noqa: BLE001 - see safe_phash
        return None


class FrameHasher:
    """Hashes frame 0 while :func:`~datalake_pipelines.core.ingest.images.inspect_image` has it decoded (its
    ``frame0`` callback), so a non-JPEG image is decoded once for validation and hash together. A JPEG, which
    validation does not decode, is hashed from the same open at a reduced scale (:func:`image_phash`);
    :meth:`result` hashes ``content`` only when no frame was passed."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self, im: Image.Image) -> None:
        self.value = safe_phash(im)

    def result(self, content: bytes | str | os.PathLike) -> int | None:
        return self.value if self.value is not None else phash_of(content)
