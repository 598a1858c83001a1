"""Opening images with Pillow: format, size and mode, or a clear reason why the file is unusable.

Policy (deliberate, see README):

* **One pixel limit.** ``max_pixels`` defaults to ``$DATALAKE_MAX_IMAGE_PIXELS`` or 89,478,485 px (Pillow's
  own warning threshold, ``PIL.Image.MAX_IMAGE_PIXELS``). The pixel count of every frame is read from the
  header and anything above the limit is rejected as a decompression bomb before a single pixel is decoded.
  Pillow's own guard (``DecompressionBombError`` above 2 x ``Image.MAX_IMAGE_PIXELS``) is raised to at least
  every limit in use, never lowered, so it can never refuse what the configured limit allows; raising a
  module global only ever upwards is safe across threads. Whatever Pillow still refuses is reported with
  the configured limit named.
* **Every frame.** Non-JPEG images are fully decoded, every frame of a multi-frame file (GIF, APNG, WebP,
  multi-page TIFF, ICO sizes, PSD layers, ...: ``n_frames``): corrupt or truncated data in any frame raises and
  the file is rejected. JPEGs get a structural check instead of a decode (``verify()`` misses truncation): the
  marker segments must lead to a start-of-scan and an end-of-image marker must follow it, for every frame of
  an MPO. That catches truncation, which is what a decode would catch too (libjpeg decodes corrupt entropy data
  with warnings, not errors) at a fraction of the cost; ``full_decode=True`` decodes JPEGs as well.
* **Any failure is a per-file reason.** Whatever a Pillow plugin raises on a file becomes
  :class:`ImageRejected`; decoding works on one frame at a time, so memory is bounded by the pixel limit.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageFile

from ...settings import MAX_PIXELS_ENV
from ...settings import load as load_settings
from ..errors import ValidationError

# Stored file extension per Pillow format; bytes are never changed, only the name is normalised.
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tif", "PNG": "png", "WEBP": "webp", "GIF": "gif"}

ImageFile.LOAD_TRUNCATED_IMAGES = False
_guard_lock = threading.Lock()
# Our own header check enforces the limit, so Pillow's warning below its refusal is noise. A permanent, targeted
# filter instead of warnings.catch_warnings(), which is not thread-safe (concurrent exits restore stale filters).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def max_pixels_from_env() -> int:
    """``$DATALAKE_MAX_IMAGE_PIXELS`` (a positive whole number of pixels) or the default 89,478,485.

    Raises :class:`~datalake_pipelines.core.errors.ValidationError` for any other value.
    """
    return load_settings().max_image_pixels


def allow_pixels_in_pillow(max_pixels: int) -> None:
    """Make sure Pillow's own bomb guard never refuses an image of up to ``max_pixels`` pixels.

    Pillow raises ``DecompressionBombError`` above ``2 * Image.MAX_IMAGE_PIXELS`` and warns above it; both
    are module globals read at call time. The global is only ever raised here (to ``max_pixels``), never
    lowered, so concurrent callers with different limits cannot undercut one another; our own header check
    enforces each caller's limit. A guard disabled by the application (``None``) stays disabled.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= max_pixels:
        return
    with _guard_lock:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


try:  # any image opened by this process (exports too) may be as large as the configured limit allows
    allow_pixels_in_pillow(max_pixels_from_env())
except ValidationError:
    pass  # reported where the limit is used (ProcessOptions)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    # the EXIF orientation, when read from the same open (a JPEG's header): saves exif_orientation's second open
    orientation: int | None = None
    orientation_read: bool = False

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
    data: bytes | str | os.PathLike,
    max_pixels: int | None = None,
    full_decode: bool = False,
    frame0: Callable[[Image.Image], None] | None = None,
) -> ImageInfo:
    """Open, size-check and decode every frame of one image; return frame 0's header facts.

    ``data`` is the file's bytes or its path; ``max_pixels`` defaults to :func:`max_pixels_from_env`.
    ``frame0``, if given, is called with the image once frame 0 is decoded, so a caller can use the pixels
    without a second decode (the perceptual hash); a JPEG, not decoded here, is passed still undecoded (the
    hash decodes it at a reduced scale) without a second open.
    Raises :class:`ImageRejected` (never anything else for bad data) with a per-file reason.
    """
    max_pixels = max_pixels_from_env() if max_pixels is None else int(max_pixels)
    allow_pixels_in_pillow(max_pixels)
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with Image.open(source) as im:
            width, height = im.size
            info = ImageInfo(im.format or "UNKNOWN", int(width), int(height), im.mode)
            _check_size(im, max_pixels, "")
            if im.format in ("JPEG", "MPO"):
                blob = data if isinstance(data, (bytes, bytearray, memoryview)) else Path(data).read_bytes()
                problem = jpeg_structure_problem(bytes(blob))
                if problem:
                    raise ImageRejected(problem)
                if not full_decode:  # header facts and the pHash's reduced decode from this one open
                    info = replace(info, orientation=_orientation_of(im), orientation_read=True)
                    if frame0 is not None:
                        frame0(im)
                    return info
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
                return info
            im.load()
            if frame0 is not None:
                frame0(im)
            _load_other_frames(im, max_pixels)
            return info
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels, "") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("unknown or broken image format: Pillow cannot identify the file") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ImageRejected(f"corrupt or truncated image data: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything on hostile data; it is still one file
        raise ImageRejected(f"Pillow cannot load the image: {type(exc).__name__}: {exc}") from None


def _check_size(im: Image.Image, max_pixels: int, frame: str) -> None:
    width, height = im.size
    pixels = width * height
    if pixels > max_pixels:
        raise ImageRejected(
            f"decompression bomb: {frame}{width}x{height} = {pixels:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels ({MAX_PIXELS_ENV} / max_pixels)"
        )
    if width <= 0 or height <= 0:
        raise ImageRejected(f"image has an empty size {frame}{width}x{height}")


def _bomb(exc: Exception, max_pixels: int, frame: str) -> ImageRejected:
    """Pillow's own refusal, worded with the configured limit (its message names twice its own global)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit of ..."
    size = f"{int(found.group(1)):,} pixels" if found else "the size in its header"
    return ImageRejected(
        f"decompression bomb: {frame}{size} exceeds the limit of {max_pixels:,} pixels ({MAX_PIXELS_ENV} / max_pixels)"
    )


def _load_other_frames(im: Image.Image, max_pixels: int) -> None:
    """Seek to and decode frames 1..n-1 (``load()`` decodes only the current frame); size-check each first."""
    frames = getattr(im, "n_frames", 1)  # counting GIF frames parses their headers, and may raise too
    for index in range(1, frames):
        try:
            im.seek(index)  # a GIF frame may grow the canvas: Pillow checks that size while seeking
        except Image.DecompressionBombError as exc:
            raise _bomb(exc, max_pixels, f"frame {index + 1}: ") from None
        except EOFError:
            raise ImageRejected(f"corrupt or truncated image data: frame {index + 1} of {frames} is missing") from None
        _check_size(im, max_pixels, f"frame {index + 1}: ")
        try:
            im.load()
        except ImageRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - reported per file with the frame that failed
            raise ImageRejected(
                f"corrupt or truncated image data in frame {index + 1} of {frames}: {type(exc).__name__}: {exc}"
            ) from None


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
# Formats whose Pillow plugin already reports the displayed size at open (and transposes on load): Pillow's
# TiffImagePlugin._setup swaps ``size`` for orientations 5-8 and ``load()`` applies ``exif_transpose``.
# Swapping again would disagree with ``ImageOps.exif_transpose``, HF ``datasets`` and the HDF5 export.
SIZE_ALREADY_DISPLAYED = frozenset({"TIFF"})


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
                return _orientation_of(im)
    except Exception:  # noqa: BLE001 - any unreadable header means "no orientation"
        return None


def _orientation_of(im: Image.Image) -> int | None:
    """:func:`exif_orientation` of an open image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - any unreadable EXIF block means "no orientation"
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def displayed_size(width: int, height: int, orientation: int | None, fmt: str | None = None) -> tuple[int, int]:
    """``(width, height)`` as displayed (what ``ImageOps.exif_transpose`` returns), from Pillow's size at open.

    Swapped for orientations 5-8 (transposed), else unchanged; never swapped for a format in
    :data:`SIZE_ALREADY_DISPLAYED`, whose Pillow plugin reports the displayed size already.
    """
    if fmt in SIZE_ALREADY_DISPLAYED:
        return width, height
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)
