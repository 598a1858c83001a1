"""HDF5 export files: one group per catalog partition, one resizable dataset per column.

Layout of a file written by :class:`Hdf5ExportWriter`::

    /<provider>/<dataset>/<task>/<variant>/      group; attrs: provider, dataset, task, variant, row_count,
        <column>                                  schema (JSON), meta (JSON), meta.<key>, partition_meta (JSON)
        _nulls/<column>                           bool mask, only for columns that hold nulls

Every dataset is 1-D (images resized: N x H x W x C), ``maxshape=(None, ...)``, chunked, appended batch by
batch. A chunk holds at most 1024 rows and about 1 MiB (h5py advises 10 KiB to 1 MiB), and at most the rows
its partition has when the writer is told (``partition_rows``): HDF5 allocates whole chunks, so a 3-row export
would otherwise take a 1 MiB chunk per image dataset and 1024 rows per column.

Encodings (the ``encoding`` of each column in ``schema``): ``image_bytes`` (vlen uint8, the stored file
bytes), ``image_array`` (decoded, EXIF orientation applied, resized; uint8, or uint16/int32/float32 for
16-bit/32-bit/float images, values never scaled or clamped; a column widens to the deepest image it holds),
``utf8`` (vlen UTF-8 text), ``utf8_bytes`` (text as vlen uint8 UTF-8 bytes: a partition's text column switches
to it, rows already written included, at the first value holding a NUL character, which HDF5's C-string vlen
type cannot hold), ``bytes`` (vlen uint8),
``number``/``bool`` (their numpy dtype), ``timestamp`` (int64 in the arrow unit; attrs ``unit``/``tz``),
``json`` (nested values as JSON text: bytes as base64, maps as ``[{"key", "value"}]`` lists, times as integers
in their unit, decimals as text; see :func:`.jsonl_codec.to_json_values`), ``text`` (anything else as text).

Nulls: a null is written as the type's empty value (``""``, no bytes, ``0``, ``False``, zero pixels) and flagged
``True`` in ``_nulls/<column>``, a mask created at the first null (earlier rows backfilled ``False``). Columns
that are null in every row of a partition (present only through other partitions' schemas) are dropped from
that group and listed in its ``null_columns`` attribute. :func:`iter_hdf5_batches` restores nulls as ``None``.

Pitfall handled: h5py's ``__setitem__`` cannot write a batch of equal-length vlen arrays (``Can't broadcast
(n, L) -> (n,)``, even from an object array), so vlen bytes go through the low-level ``DatasetID.write``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ingest.images import allow_pixels_in_pillow, max_pixels_from_env
from .hdf5_names import NULLS, Hdf5UnsupportedColumnError, dataset_name
from .hdf5_pixels import image_pixels
from .hdf5_read import export_groups, iter_hdf5_batches  # noqa: F401  (the reader, importable from here too)
from .jsonl_codec import to_json_values

PARTITION_COLUMNS = ("provider", "dataset", "task", "variant")
VLEN_BYTES = h5py.vlen_dtype(np.uint8)
UTF8 = h5py.string_dtype("utf-8")
IMAGE_CHUNK = 512  # images read and written per h5py call
CHUNK_BYTES = 1 << 20
CHUNK_ROWS = 1024  # what h5py's auto-chunking picked for these 1-D datasets


def chunk_rows(row_bytes: int, rows: int | None = None) -> int:
    """Rows per chunk for rows of ``row_bytes`` bytes: at most :data:`CHUNK_ROWS` and what fits in
    :data:`CHUNK_BYTES`, at most ``rows`` (the most rows the dataset will hold, when known), at least 1."""
    fit = min(CHUNK_ROWS, CHUNK_BYTES // max(1, row_bytes))
    return max(1, min(fit, rows) if rows else fit)


def _encoding(field: pa.Field, image_columns: set[str], image_mode: str) -> str:
    t = field.type
    if isinstance(t, pa.BaseExtensionType):  # fixed_shape_tensor, arrow.json, ...: written as their storage
        t = t.storage_type
    if field.name in image_columns:
        return "image_array" if image_mode == "resized" else "image_bytes"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "utf8"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_nested(t):
        return "json"
    return "text"


def write_vlen_bytes(ds: h5py.Dataset, start: int, values: list[bytes]) -> None:
    """Write ``values`` into ``ds[start:start+len(values)]`` of a vlen uint8 dataset (any lengths)."""
    n = len(values)
    if not n:
        return
    arr = np.empty(n, dtype=object)
    for i, value in enumerate(values):
        arr[i] = np.frombuffer(value, dtype=np.uint8)
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,), (n,))
    ds.id.write(h5py.h5s.create_simple((n,)), file_space, arr, h5py.h5t.py_create(ds.dtype))


class _Group:
    """One partition's group: its datasets, null masks and row count."""

    def __init__(self, writer: Hdf5ExportWriter, key: tuple[str, ...]):
        self.writer = writer
        self.key = key
        self.group = writer.file.require_group("/" + "/".join(key))
        self.rows = 0
        self.datasets: dict[str, h5py.Dataset] = {}
        self.masks: dict[str, h5py.Dataset] = {}
        self.non_null: set[str] = set()
        self.encodings: dict[str, str] = {}  # per-group overrides of the writer's encodings ("utf8_bytes")
        self.expected_rows = writer.partition_rows.get(key)  # an upper bound of this group's rows, if known

    def encoding(self, name: str) -> str:
        return self.encodings.get(name) or self.writer.encodings[name]

    def _strings_as_bytes(self, name: str, start: int) -> str:
        """Switch column ``name`` of this group to ``utf8_bytes`` (vlen UTF-8 bytes), rewriting its first
        ``start`` rows: HDF5 vlen strings are C strings, so h5py refuses one holding a NUL character."""
        self.encodings[name] = "utf8_bytes"
        old = self.datasets.pop(name, None)
        if old is None:
            return "utf8_bytes"
        tmp_name = f"{dataset_name(name)}.__utf8"
        self.group.move(dataset_name(name), tmp_name)
        old = self.group[tmp_name]
        new = self._dataset(name, "utf8_bytes", pa.array([], pa.string()))
        new.resize((start,))
        for a in range(0, start, 10_000):
            b = min(a + 10_000, start)
            write_vlen_bytes(new, a, [v.encode("utf-8") for v in old.asstr()[a:b]])
        del self.group[tmp_name]
        return "utf8_bytes"

    def _dataset(self, name: str, encoding: str, column: pa.Array) -> h5py.Dataset:
        if name in self.datasets:
            return self.datasets[name]
        w = self.writer
        fixed: dict[str, Any] = {}
        shape: tuple[int, ...]
        dtype: Any  # a numpy scalar type, an h5py special dtype or a pandas dtype
        if encoding == "image_array":
            h, wd, c = w.image_shape
            shape, dtype = (0, h, wd, c), np.uint8
        elif encoding in ("image_bytes", "bytes", "utf8_bytes"):
            shape, dtype = (0,), VLEN_BYTES
        elif encoding in ("utf8", "json", "text"):
            shape, dtype = (0,), UTF8
        elif encoding == "timestamp":
            shape, dtype = (0,), np.int64
        elif encoding == "bool":
            shape, dtype = (0,), np.bool_
        else:
            shape, dtype = (0,), column.type.to_pandas_dtype()
        if encoding in ("image_array", "timestamp", "bool", "number") and w.compression:
            fixed["compression"] = w.compression
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        chunks = (chunk_rows(row_bytes, self.expected_rows), *shape[1:])
        ds = self.group.create_dataset(
            dataset_name(name), shape=shape, maxshape=(None, *shape[1:]), dtype=dtype, chunks=chunks, **fixed
        )
        ds.attrs["encoding"] = encoding
        ds.attrs["column"] = name
        if encoding == "timestamp":
            ds.attrs["unit"] = column.type.unit
            ds.attrs["tz"] = column.type.tz or ""
        self.datasets[name] = ds
        return ds

    def _mark_nulls(self, name: str, start: int, column: pa.Array) -> None:
        nulls = column.null_count
        if nulls < len(column):
            self.non_null.add(name)
        if name not in self.masks and not nulls:
            return
        if name not in self.masks:
            mask = self.group.require_group(NULLS).create_dataset(
                dataset_name(name),
                shape=(start,),
                maxshape=(None,),
                dtype=np.bool_,
                chunks=(chunk_rows(1, self.expected_rows),),
                fillvalue=False,
            )
            self.masks[name] = mask
        mask = self.masks[name]
        mask.resize((start + len(column),))
        mask[start:] = column.is_null().to_numpy(zero_copy_only=False)

    def append(self, table: pa.Table) -> None:
        start, n = self.rows, table.num_rows
        for field in table.schema:
            if field.name in PARTITION_COLUMNS:
                continue
            column = table.column(field.name).combine_chunks()
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if isinstance(column.type, pa.BaseExtensionType):
                column = column.storage
            encoding = self.encoding(field.name)
            if encoding == "utf8" and pc.any(pc.match_substring(column, "\x00")).as_py():
                encoding = self._strings_as_bytes(field.name, start)
            ds = self._dataset(field.name, encoding, column)
            ds.resize((start + n, *ds.shape[1:]))
            self._write(ds, encoding, start, column)
            self._mark_nulls(field.name, start, column)
        self.rows += n

    def _write(self, ds: h5py.Dataset, encoding: str, start: int, column: pa.Array) -> None:
        end = start + len(column)
        if encoding in ("image_bytes", "image_array"):  # a few hundred images at a time bound memory
            paths = column.to_pylist()
            for a in range(0, len(paths), IMAGE_CHUNK):
                chunk = paths[a : a + IMAGE_CHUNK]
                if encoding == "image_bytes":
                    write_vlen_bytes(ds, start + a, [self.writer.image_bytes(p) for p in chunk])
                else:
                    pixels = np.stack([self.writer.image_array(p) for p in chunk])
                    if pixels.dtype != ds.dtype:  # a deeper image than the dataset holds: widen, never clamp
                        ds = self._widen(ds, ds.attrs["column"], np.promote_types(ds.dtype, pixels.dtype))
                    ds[start + a : start + a + len(chunk)] = pixels
        elif encoding == "bytes":
            write_vlen_bytes(ds, start, [b or b"" for b in column.to_pylist()])
        elif encoding == "utf8_bytes":
            write_vlen_bytes(ds, start, [v.encode("utf-8") for v in pc.fill_null(column, "").to_pylist()])
        elif encoding == "utf8":
            ds[start:end] = np.array(pc.fill_null(column, "").to_pylist(), dtype=object)
        elif encoding == "json":
            values = to_json_values(column)  # exact: bytes base64, maps as entries, times as integers
            texts = ["" if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            ds[start:end] = np.array(texts, dtype=object)
        elif encoding == "text":
            ds[start:end] = np.array(pc.fill_null(column.cast(pa.string()), "").to_pylist(), dtype=object)
        elif encoding == "timestamp":
            ds[start:end] = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
        elif encoding == "bool":
            ds[start:end] = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
        else:
            ds[start:end] = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)

    def _widen(self, ds: h5py.Dataset, column: str, dtype: np.dtype) -> h5py.Dataset:
        """Replace an image dataset by a copy in a wider dtype (uint8 -> uint16 -> int32 -> float...)."""
        name = ds.name.rsplit("/", 1)[-1]
        wide = self.group.create_dataset(
            f"{name}.__widened",
            shape=ds.shape,
            maxshape=ds.maxshape,
            dtype=dtype,
            chunks=ds.chunks,
            compression=ds.compression,
        )
        for a in range(0, ds.shape[0], IMAGE_CHUNK):
            wide[a : a + IMAGE_CHUNK] = ds[a : a + IMAGE_CHUNK].astype(dtype)
        for key, value in ds.attrs.items():
            wide.attrs[key] = value
        del self.group[name]
        self.group.move(f"{name}.__widened", name)
        self.datasets[column] = self.group[name]
        return self.datasets[column]

    def finish(self, schema: pa.Schema, meta: dict[str, Any]) -> None:
        dropped = [name for name in self.datasets if name not in self.non_null and self.rows]
        for name in dropped:
            del self.group[dataset_name(name)]
            if name in self.masks:
                del self.group[NULLS][dataset_name(name)]
        attrs = self.group.attrs
        for level, value in zip(PARTITION_COLUMNS, self.key):
            attrs[level] = value
        attrs["row_count"] = self.rows
        columns = [
            {"name": f.name, "dataset": dataset_name(f.name), "type": str(f.type), "encoding": self.encoding(f.name)}
            for f in schema
            if f.name in self.datasets and f.name not in dropped
        ]
        attrs["schema"] = json.dumps(columns)
        attrs["null_columns"] = json.dumps(dropped)
        user_meta = meta.get("meta") or {}
        attrs["meta"] = json.dumps(user_meta, ensure_ascii=False, default=str)
        for key, value in user_meta.items():
            if isinstance(value, (str, int, float, bool)):
                attrs[f"meta.{key}"] = value
        summary = {k: v for k, v in meta.items() if k not in ("batches", "schema")}
        summary["batch_count"] = len(meta.get("batches") or [])
        attrs["partition_meta"] = json.dumps(summary, ensure_ascii=False, default=str)


def _check_columns(schema: pa.Schema, encodings: dict[str, str]) -> None:
    """Refuse, before any row is written, a column the file cannot hold: a name no dataset can have, or a
    ``text``-encoded type pyarrow cannot render as text."""
    for f in schema:
        if f.name in PARTITION_COLUMNS:
            continue
        dataset_name(f.name)
        t = f.type.storage_type if isinstance(f.type, pa.BaseExtensionType) else f.type
        if encodings[f.name] == "text":
            try:
                pa.array([], t).cast(pa.string())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
                raise Hdf5UnsupportedColumnError(
                    f"column {f.name!r} has type {f.type}, which the HDF5 export cannot write (no text form); "
                    "leave it out of the export or export as parquet/arrow"
                ) from None


class Hdf5ExportWriter:
    """Write record batches (with the partition columns) into one HDF5 file grouped by partition."""

    def __init__(
        self,
        path: str | Path,
        read_asset: Callable[[str], bytes],
        partition_meta: Callable[[tuple[str, ...]], dict[str, Any]] = lambda key: {},
        image_columns: list[str] | tuple[str, ...] = (),
        image_mode: str = "bytes",
        image_shape: tuple[int, int, int] = (224, 224, 3),
        compression: str | None = None,
        partition_rows: Mapping[tuple[str, ...], int] | None = None,
    ):
        """``partition_rows``: the most rows each partition (provider, dataset, task, variant) will get, when the
        caller knows it; chunks are then no larger than the partition (see the module's docstring)."""
        self.path = Path(path)
        self.partition_rows = dict(partition_rows or {})
        self.read_asset = read_asset
        self.partition_meta = partition_meta
        self.image_columns = set(image_columns)
        self.image_mode = image_mode
        self.image_shape = tuple(image_shape)
        self.compression = compression
        # Assets were accepted under the lake's pixel limit; Pillow's own guard must not refuse them here.
        allow_pixels_in_pillow(max_pixels_from_env())
        # HDF5 1.8 file format or later: attributes over 64 KiB (the schema of thousands of columns) go to dense
        # attribute storage instead of failing with "object header message is too large" (HDF5 1.8+ reads it).
        self.file = h5py.File(self.path, "w", libver=("v108", "latest"))
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.schema: pa.Schema | None = None
        self.encodings: dict[str, str] = {}

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if self.schema is None:
            missing = [c for c in PARTITION_COLUMNS if c not in table.column_names]
            if missing:
                raise ValueError(f"HDF5 export needs the partition columns; missing {missing}")
            self.encodings = {f.name: _encoding(f, self.image_columns, self.image_mode) for f in table.schema}
            _check_columns(table.schema, self.encodings)
            self.schema = table.schema
        if not table.num_rows:
            return
        keys = pc.binary_join_element_wise(*(table.column(c) for c in PARTITION_COLUMNS), "/")
        unique = pc.unique(keys).to_pylist()
        for key in unique:
            part = table if len(unique) == 1 else table.filter(pc.equal(keys, key))
            group_key = tuple(key.split("/"))
            if group_key not in self.groups:
                self.groups[group_key] = _Group(self, group_key)
            self.groups[group_key].append(part)

    def image_bytes(self, relpath: str | None) -> bytes:
        return b"" if relpath is None else self.read_asset(relpath)

    def image_array(self, relpath: str | None) -> np.ndarray:
        """The asset at ``relpath`` (None: a null) as ``image_shape`` pixels (:func:`.hdf5_pixels.image_pixels`)."""
        return image_pixels(None if relpath is None else self.read_asset(relpath), self.image_shape, relpath or "")

    def close(self) -> None:
        """Write the group attributes and close the file."""
        self.file.attrs["format"] = "datalake-export-hdf5/1"
        self.file.attrs["partition_columns"] = json.dumps(PARTITION_COLUMNS)
        if self.schema is not None:  # the exported Arrow types, for readers that rebuild typed columns
            self.file.attrs["arrow_schema"] = np.void(self.schema.serialize().to_pybytes())
        for key, group in self.groups.items():
            group.finish(self.schema, self.partition_meta(key))
        self.file.close()

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.path.unlink(missing_ok=True)
