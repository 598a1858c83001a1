"""Opening images with Pillow: format, size and mode, or a clear reason why the file is unusable.

Policy (deliberate, see README): the pixel count is read from the header and anything above
``max_pixels`` (default 89,478,485 px, Pillow's own warning threshold) is rejected as a decompression
bomb before a single pixel is decoded. Every accepted image is then fully decoded (JPEG at 1/8 scale via
``draft``) because ``verify()`` misses truncated JPEGs; truncated data raises and the file is rejected.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

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


def inspect_image(data: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
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
