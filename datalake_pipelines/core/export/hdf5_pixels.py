"""An image asset as a fixed-shape pixel array, for HDF5 exports with ``hdf5_images="resized"``.

8-bit images become uint8 in the mode of the channel count (L, RGB, RGBA); 16-bit, 32-bit integer and float
images keep their sample values (never scaled or clamped) as uint16, int32 or float32.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatalakeError
from ..ingest.images import MAX_PIXELS_ENV

IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Pillow modes deeper than 8 bits per sample and the dtype that holds their values exactly.
HIGH_DEPTH_DTYPES: dict[str, type[np.integer[Any]] | type[np.floating[Any]]] = {
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I;16N": np.uint16,
    "I": np.int32,
    "F": np.float32,
}


def image_pixels(data: bytes | None, shape: tuple[int, ...], name: str = "") -> np.ndarray:
    """The image file ``data`` as displayed (EXIF orientation applied), resized to ``shape`` = ``(H, W, C)``;
    zeros (uint8) for ``None`` (a null).

    8-bit modes become uint8 in the ``C`` mode (L, RGB, RGBA). 16-bit, 32-bit integer and float images
    keep their sample values (no scaling, no clamping) as uint16, int32 or float32; their single band is
    repeated over ``C`` channels, with a full-scale alpha (the dtype's maximum, 1.0 for float) for C = 4.
    Raises :class:`DatalakeError` naming the asset ``name`` when Pillow's pixel limit refuses it.
    """
    h, w, c = shape
    if data is None:
        return np.zeros((h, w, c), dtype=np.uint8)
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DatalakeError(
            f"asset {name} is larger than Pillow may decode here ({exc}); set {MAX_PIXELS_ENV} to the limit "
            "it was ingested under"
        ) from None
    with img:
        depth = HIGH_DEPTH_DTYPES.get(img.mode)
        if depth is None:
            side = max(w, h)  # the orientation may swap the axes after the draft
            img.draft(IMAGE_MODES[c], (side, side))
        shown = ImageOps.exif_transpose(img)
    if depth is None:
        return np.asarray(shown.convert(IMAGE_MODES[c]).resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, c)
    # Pillow resizes 32-bit "I" and "F" images; "I;16" widens to "I" losslessly first.
    band = shown.convert("F" if depth == np.float32 else "I").resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(band).astype(depth)[:, :, None]
    if c == 1:
        return pixels
    full = np.iinfo(depth).max if issubclass(depth, np.integer) else 1.0
    alpha = [np.full_like(pixels, full)] if c == 4 else []
    return np.concatenate([pixels] * 3 + alpha, axis=2)
