"""Opening images with Pillow: format, size and mode, or a clear reason why the file is unusable.

Policy (deliberate, see README): the pixel count is read from the header and anything above
``max_pixels`` (default 89,478,485 px, Pillow's own warning threshold) is rejected as a decompression
bomb before a single pixel is decoded. Non-JPEG images are then fully decoded: corrupt or truncated data
raises and the file is rejected. JPEGs get a structural check instead of a decode (``verify()`` misses
truncation): the marker segments must lead to a start-of-scan and an end-of-image marker must follow it.
That catches truncation, which is what a decode would catch too (libjpeg decodes corrupt entropy data
with warnings, not errors) at a fraction of the cost; ``full_decode=True`` decodes JPEGs as well.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile

DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "DATALAKE_MAX_IMAGE_PIXELS"

# Stored file extension per Pillow format; bytes are never changed, only the name is normalised.
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tif", "PNG": "png", "WEBP": "webp", "GIF": "gif"}

ImageFile.LOAD_TRUNCATED_IMAGES = False
# We enforce our own limit from the header; Pillow's own check stays as a second line of defence.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, DEFAULT_MAX_PIXELS)


def max_pixels_from_env() -> int:
    return int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS.get(self.format, self.format.lower())


class ImageRejected(ValueError):
    """The file is not a usable image; the message says why."""


def jpeg_structure_problem(data: bytes, start: int = 0) -> str | None:
    """Why a JPEG's marker structure is incomplete (no scan, or no end-of-image after it), else None.

    Every frame is checked: an MPO (or any file with a further ``FFD8FF`` after the first image's end)
    must have each of its images complete. Other trailing bytes (camera trailers) are allowed.
    """
    pos, size = start + 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)  # tolerate padding/junk between segments, as libjpeg does
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:  # start of scan: entropy data never holds FFD9, so the first one ends the image
            end = data.find(b"\xff\xd9", pos)
            if end < 0:
                return "image file is truncated: the JPEG has no end-of-image marker after its scan"
            following = data.find(b"\xff\xd8\xff", end + 2)  # a further frame (MPO) must be complete too
            return None if following < 0 else jpeg_structure_problem(data, following)
        if marker == 0xD9:
            return "corrupt JPEG: end-of-image before any scan"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return "image file is truncated: the JPEG has no start-of-scan marker"


def inspect_image(
    data: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, full_decode: bool = False
) -> ImageInfo:
    """Open, size-check and fully decode one image; return its header facts or raise :class:`ImageRejected`."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bombs are checked below; odd headers are legal
            with Image.open(source) as im:
                width, height = im.size
                info = ImageInfo(im.format or "UNKNOWN", int(width), int(height), im.mode)
                pixels = width * height
                if pixels > max_pixels:
                    raise ImageRejected(
                        f"decompression bomb: {width}x{height} = {pixels:,} pixels exceeds the limit of "
                        f"{max_pixels:,} pixels"
                    )
                if width <= 0 or height <= 0:
                    raise ImageRejected(f"image has an empty size {width}x{height}")
                if im.format in ("JPEG", "MPO"):
                    blob = data if isinstance(data, (bytes, bytearray)) else Path(data).read_bytes()
                    problem = jpeg_structure_problem(bytes(blob))
                    if problem:
                        raise ImageRejected(problem)
                    if not full_decode:
                        return info
                    im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
                return info
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("unknown or broken image format: Pillow cannot identify the file") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ImageRejected(f"corrupt or truncated image data: {type(exc).__name__}: {exc}") from None


def optimize_image(data: bytes, info: ImageInfo) -> bytes | None:
    """Re-encode losslessly-optimised bytes in the same format, or ``None`` if that saves nothing."""
    if info.format not in ("JPEG", "PNG"):
        return None
    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        if info.format == "JPEG":
            im.save(out, "JPEG", quality="keep", optimize=True, exif=im.info.get("exif", b""))
        else:
            im.save(out, "PNG", optimize=True)
    optimized = out.getvalue()
    return optimized if len(optimized) < len(data) else None


# geometry -----------------------------------------------------------------------------------------------
# The catalog records the DISPLAYED size: what browsers, viewers, ``ImageOps.exif_transpose`` and HF
# ``datasets`` (which applies EXIF orientation when it decodes an ``Image``) show. The stored bytes keep
# their own orientation; ``<col>_orientation`` says how to get from one to the other.
ORIENTATION_TAG = 274  # EXIF/TIFF "Orientation" (TIFF 6.0 tag 274; EXIF 2.32 section 4.6.5): values 1-8
TRANSPOSED_ORIENTATIONS = frozenset((5, 6, 7, 8))  # 90/270 degree rotations: width and height swap


def exif_orientation(data: bytes | str | os.PathLike) -> int | None:
    """The EXIF Orientation (1-8) of an image, or ``None`` when it has none, an out-of-range value or no EXIF.

    Reads the header only (no pixel decoding). Never raises for a bad file: a broken EXIF block is "no
    orientation", as it is for Pillow's ``ImageOps.exif_transpose``.
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as im:
                value = im.getexif().get(ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - any unreadable header or EXIF block means "no orientation"
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def displayed_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """``(width, height)`` as displayed: swapped for orientations 5-8 (transposed), else unchanged."""
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)
