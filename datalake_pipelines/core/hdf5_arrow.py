"""Typed Arrow columns from an HDF5 export: the exported schema (file attribute ``arrow_schema``) and the
per-group encodings let a reader rebuild each column with its exported type (see :mod:`.hdf5` for the layout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa

IMAGE_ENCODINGS = ("image_bytes", "image_array")


def arrow_schema(path: str | Path) -> pa.Schema | None:
    """The Arrow schema the export was written from (``None`` for files written before it was recorded)."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("arrow_schema")
    return None if raw is None else pa.ipc.read_schema(pa.py_buffer(raw.tobytes()))


def _json_to_arrow(value: Any, t: pa.DataType) -> Any:
    """A JSON-decoded value shaped for ``pa.array(..., t)`` (map entries as ``(key, value)`` tuples)."""
    if value is None:
        return None
    if isinstance(t, pa.MapType):
        return [(_json_to_arrow(k, t.key_type), _json_to_arrow(v, t.item_type)) for k, v in value]
    if pa.types.is_struct(t):
        return {f.name: _json_to_arrow(value.get(f.name), f.type) for f in t}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_json_to_arrow(v, t.value_type) for v in value]
    return value


def typed_array(values: Any, t: pa.DataType, encoding: str) -> pa.Array:
    """Values of one column as read by :func:`iter_hdf5_batches`, as an array of the exported type ``t``
    (``text``-encoded columns: cast from text where pyarrow can parse it, else left as text)."""
    if encoding == "text":
        text = pa.array(values, pa.string())
        try:
            return text.cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return text
    if isinstance(values, pa.Array):
        return values.cast(t)
    try:
        if encoding == "json":
            return pa.array([_json_to_arrow(v, t) for v in values], t)
        if isinstance(values, np.ndarray) and not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            values = values.tolist()
        return pa.array(values, t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # e.g. times beyond datetime kept as ISO text
        return pa.array(values.tolist() if isinstance(values, np.ndarray) else values)


def hdf5_encodings(path: str | Path, group_path: str) -> dict[str, str]:
    """``{column: encoding}`` of one partition group."""
    with h5py.File(path, "r") as f:
        return {c["name"]: c["encoding"] for c in json.loads(f[group_path].attrs["schema"])}
