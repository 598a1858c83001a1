"""Read an export back in record batches, whatever its format, without loading it whole.

The consumer loop of the export reference, for every ``file_type``::

    from datalake_pipelines.core.export.reader import iter_export_batches

    for batch in iter_export_batches("/exports/export-<task_id>", batch_size=1000):   # a pyarrow.RecordBatch
        for row in batch.to_pylist():
            ...  # do what you want

``path`` may be an export folder (its ``export.json`` names the format and data file) or a data file or folder
directly: ``*.parquet`` or a folder of Parquet files, ``*.jsonl``, ``*.arrow`` (Arrow IPC file), a HuggingFace
``save_to_disk`` folder, or ``*.h5``/``*.hdf5``. Batches hold at most ``batch_size`` rows; memory stays bounded
by one batch (Arrow and HF files are memory-mapped). Per format:

- Parquet, Arrow: the exported columns and types exactly.
- JSONL: with its ``export.json``, parsed with the schema it records, bytes (base64), maps (key/value lists)
  float16 and decimals restored to their exported types; timestamps, dates and times stay text.
  A bare ``.jsonl`` file: types as JSON gives them, inferred per batch.
- HF: image columns are ``{"bytes", "path"}`` structs (``datasets.Image`` storage).
- HDF5: one partition group at a time, with the partition columns added back, columns rebuilt with their
  exported Arrow types (recorded in the file's ``arrow_schema`` attribute); image columns hold the file bytes
  (``binary``) or, for resized exports, a fixed-shape tensor column ``H x W x C``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .hdf5 import PARTITION_COLUMNS, iter_hdf5_batches
from .hdf5_arrow import IMAGE_ENCODINGS, arrow_schema, hdf5_encodings, typed_array
from .jsonl_codec import decode_batch, deserialize_schema, json_read_schema

MANIFEST = "export.json"
HF_STATE = "state.json"


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, size):
            yield batch.slice(start, size)


def _parquet(path: Path, size: int) -> Iterator[pa.RecordBatch]:
    if path.is_dir():
        yield from _rebatch(pads.dataset(path, format="parquet").to_batches(batch_size=size), size)
        return
    with pq.ParquetFile(path) as pf:
        yield from pf.iter_batches(batch_size=size)


def _arrow_file(path: Path, size: int, stream: bool = False) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source) if stream else pa.ipc.open_file(source)
        if stream:
            yield from _rebatch(iter(reader), size)
        else:
            yield from _rebatch((reader.get_batch(i) for i in range(reader.num_record_batches)), size)


def _hf(folder: Path, size: int) -> Iterator[pa.RecordBatch]:
    state = json.loads((folder / HF_STATE).read_text())
    for shard in state.get("_data_files", []):
        yield from _arrow_file(folder / shard["filename"], size, stream=True)


def _jsonl(path: Path, size: int, manifest: dict | None = None) -> Iterator[pa.RecordBatch]:
    raw = (manifest or {}).get("arrow_schema")
    schema = deserialize_schema(raw) if raw else None
    options = None
    if schema is not None:
        options = pajson.ParseOptions(explicit_schema=json_read_schema(schema), unexpected_field_behavior="infer")
    with open(path, "rb") as fh:
        while True:
            lines = [line for line in (fh.readline() for _ in range(size)) if line]
            if not lines:
                return
            table = pajson.read_json(io.BytesIO(b"".join(lines)), parse_options=options)
            for batch in table.combine_chunks().to_batches():
                yield decode_batch(batch, schema) if schema is not None else batch


def _hdf5(path: Path, size: int) -> Iterator[pa.RecordBatch]:
    schema = arrow_schema(path)
    for group_path, columns in iter_hdf5_batches(path, size):
        key = group_path.strip("/").split("/")
        rows = len(next(iter(columns.values()))) if columns else 0
        arrays = {level: pa.array([value] * rows, pa.string()) for level, value in zip(PARTITION_COLUMNS, key)}
        encodings = hdf5_encodings(path, group_path)
        for name, values in columns.items():
            if isinstance(values, np.ndarray) and values.ndim > 1:
                arrays[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
            elif schema is not None and name in schema.names and encodings.get(name) not in IMAGE_ENCODINGS:
                arrays[name] = typed_array(values, schema.field(name).type, encodings.get(name, ""))
            elif isinstance(values, pa.Array):
                arrays[name] = values
            else:
                arrays[name] = pa.array(values.tolist() if isinstance(values, np.ndarray) else values)
        for f in schema or ():  # columns null in every row of this partition are not stored in its group
            if f.name not in arrays:
                arrays[f.name] = pa.nulls(rows, f.type)
        order = [*PARTITION_COLUMNS, *(schema.names if schema is not None else ())]
        ordered = {k: arrays.pop(k) for k in order if k in arrays}
        yield pa.RecordBatch.from_pydict({**ordered, **arrays})


def _data_path(path: Path) -> tuple[str, Path, dict | None]:
    """``(kind, path, manifest or None)`` of what to read at ``path``."""
    if path.is_dir():
        manifest = path / MANIFEST
        if manifest.is_file():
            doc = json.loads(manifest.read_text())
            kind = doc["file_type"]
            return kind, path if kind == "hf" else path / doc["data"], doc
        if (path / HF_STATE).is_file():
            return "hf", path, None
        return "parquet", path, None
    suffix = path.suffix.lower()
    kinds = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".arrow": "arrow", ".feather": "arrow"}
    kinds |= {".h5": "hdf5", ".hdf5": "hdf5"}
    if suffix not in kinds:
        raise ValueError(f"cannot tell the export format of {path}; use an export folder or a known suffix")
    sibling = path.parent / MANIFEST  # a data file inside an export folder: its manifest still applies
    doc = json.loads(sibling.read_text()) if sibling.is_file() else None
    return kinds[suffix], path, doc


def iter_export_batches(path: str | Path, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Yield the rows of an export (any format) as ``pyarrow.RecordBatch`` objects of at most ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no export at {path}")
    kind, data, manifest = _data_path(path)
    if kind == "jsonl":
        yield from _jsonl(data, batch_size, manifest)
        return
    readers = {"parquet": _parquet, "arrow": _arrow_file, "hf": _hf, "hdf5": _hdf5}
    yield from readers[kind](data, batch_size)
