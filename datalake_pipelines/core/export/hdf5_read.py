"""Reading HDF5 export files written by :class:`.hdf5.Hdf5ExportWriter` (layout and encodings: :mod:`.hdf5`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pyarrow as pa
import pyarrow.compute as pc

from .hdf5_names import NULLS


def export_groups(f: h5py.File) -> list[str]:
    """Paths of the partition groups (those with a ``schema`` attribute), in file order."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and "schema" in obj.attrs:
            found.append("/" + name)

    f.visititems(visit)
    return found


def _read(ds: h5py.Dataset, encoding: str, a: int, b: int, column_type: str) -> Any:
    if encoding in ("image_bytes", "bytes"):
        return [v.tobytes() for v in ds[a:b]]
    if encoding == "utf8_bytes":
        return [v.tobytes().decode("utf-8") for v in ds[a:b]]
    if encoding in ("utf8", "text"):
        return list(ds.asstr()[a:b])
    if encoding == "json":
        return [json.loads(v) if v else None for v in ds.asstr()[a:b]]
    if encoding == "timestamp":
        tz = ds.attrs["tz"] or None
        stamps = pa.array(ds[a:b], pa.int64()).cast(pa.timestamp(ds.attrs["unit"], tz))
        try:
            return stamps.to_pylist()
        except (OverflowError, ValueError):  # beyond datetime's years: an Arrow array holds them
            return stamps
    return ds[a:b]


def iter_hdf5_batches(path: str | Path, batch_size: int = 10_000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(group_path, {column: values})`` batches of an HDF5 export, never reading a dataset whole.

    Values are lists (text, bytes, JSON values, datetimes, or anything with nulls restored as ``None``) or numpy
    arrays (numbers, bools, resized images ``n x H x W x C``).
    """
    with h5py.File(path, "r") as f:
        for group_path in export_groups(f):
            group = f[group_path]
            schema = json.loads(group.attrs["schema"])
            rows = int(group.attrs["row_count"])
            masks = group[NULLS] if NULLS in group else {}
            for a in range(0, rows, batch_size):
                b = min(a + batch_size, rows)
                batch: dict[str, Any] = {}
                for col in schema:
                    name, encoding = col["name"], col["encoding"]
                    stored = col.get("dataset", name)  # files before the name rule used the column name
                    values = _read(group[stored], encoding, a, b, col["type"])
                    if stored in masks:
                        mask = masks[stored][a:b]
                        if mask.any() and isinstance(values, pa.Array):
                            values = pc.if_else(pa.array(mask), pa.nulls(len(values), values.type), values)
                        elif mask.any():
                            values = [None if m else v for v, m in zip(list(values), mask)]
                    batch[name] = values
                yield group_path, batch
