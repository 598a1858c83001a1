"""Typed Arrow columns from an HDF5 export: the exported schema (file attribute ``arrow_schema``) and the
per-group encodings let a reader rebuild each column with its exported type (see :mod:`.hdf5` for the layout).
"""

from __future__ import annotations

import json
from datetime import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa

from .jsonl_codec import from_json_values

IMAGE_ENCODINGS = ("image_bytes", "image_array")


def arrow_schema(path: str | Path) -> pa.Schema | None:
    """The Arrow schema the export was written from (``None`` for files written before it was recorded)."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("arrow_schema")
    return None if raw is None else pa.ipc.read_schema(pa.py_buffer(raw.tobytes()))


def typed_array(values: Any, t: pa.DataType, encoding: str) -> pa.Array:
    """Values of one column as read by :func:`iter_hdf5_batches`, as an array of the exported type ``t``
    (``text``-encoded columns: cast from text where pyarrow can parse it, else left as text). Extension
    columns were written as their storage type and are wrapped back into the extension type."""
    if isinstance(t, pa.BaseExtensionType):
        storage = typed_array(values, t.storage_type, encoding)
        return pa.ExtensionArray.from_storage(t, storage) if storage.type == t.storage_type else storage
    if encoding == "text":
        text = pa.array(values, pa.string())
        try:
            if pa.types.is_time(t):  # pyarrow has no string -> time cast
                return pa.array([None if v is None else time.fromisoformat(v) for v in values], t)
            return text.cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
            return text
    if isinstance(values, pa.Array):
        return values.cast(t)
    try:
        if encoding == "json":
            return from_json_values(values, t)
        if isinstance(values, np.ndarray) and not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            values = values.tolist()
        return pa.array(values, t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, KeyError, TypeError):
        # files written before typed JSON, or values no longer matching the recorded schema: as read
        return pa.array(values.tolist() if isinstance(values, np.ndarray) else values)


def hdf5_encodings(path: str | Path, group_path: str) -> dict[str, str]:
    """``{column: encoding}`` of one partition group."""
    with h5py.File(path, "r") as f:
        return {c["name"]: c["encoding"] for c in json.loads(f[group_path].attrs["schema"])}
