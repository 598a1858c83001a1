"""How JSONL exports encode what JSON has no type for, and how the export reader decodes it.

DuckDB's ``to_json`` renders the rows. What JSON (or DuckDB's Arrow scan) cannot hold is encoded first:

- bytes (``binary``, ``large_binary``, ``fixed_size_binary``, at any depth): standard base64 text (RFC 4648
  section 4, with padding) - encoding ``base64``;
- maps: a list of ``{"key": ..., "value": ...}`` objects in stored order (a JSON object would turn every key
  into text and lose key types) - encoding ``map_entries``;
- ``float16``: written through ``float32`` (every float16 value is exact in float32);
- timestamps, dates, times and durations (at any depth): integers in the column's Arrow unit (timestamps:
  since the Unix epoch, UTC; ``date32``: days; ``date64``: ms; times: since midnight) - encoding
  ``epoch_units``. Text would not be exact: DuckDB renders timestamps beyond its range (``2**63-1`` ns, pandas'
  ``Timestamp.max``) as ``infinity``, and Arrow's own string cast cannot parse back what it renders there.

``export.json`` lists the encoded columns under ``encodings`` (``{"<column>": ["base64", ...]}``) and carries
the exported Arrow schema (``arrow_schema``: base64 of the IPC-serialized schema). The export reader parses
with an explicit schema derived from it (:func:`json_read_schema`; pyarrow 26's JSON type inference builds
invalid list arrays when a list's first element is null) and :func:`decode_batch` restores bytes, maps and
float16 and times with their exported types. Decimals are JSON numbers (DuckDB writes every digit), parsed
back as their exported decimal type exactly.
"""

from __future__ import annotations

import base64
import decimal
from typing import Any

import numpy as np
import pyarrow as pa

from ..arrow.walk import is_list_type, rebuild_type

BASE64 = "base64"
MAP_ENTRIES = "map_entries"
EPOCH_UNITS = "epoch_units"


def _is_time(t: pa.DataType) -> bool:
    return pa.types.is_temporal(t)


def _is_binary(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _has(t: pa.DataType, test) -> bool:
    if test(t):
        return True
    return any(_has(t.field(i).type, test) for i in range(t.num_fields)) if pa.types.is_nested(t) else False


def column_encodings(schema: pa.Schema) -> dict[str, list[str]]:
    """``{column: [encodings]}`` for every column holding bytes or maps at any depth."""
    out = {}
    for f in schema:
        t = _plain(f.type)
        found = [BASE64] if _has(t, _is_binary) else []
        found += [MAP_ENTRIES] if _has(t, lambda t: isinstance(t, pa.MapType)) else []
        found += [EPOCH_UNITS] if _has(t, _is_time) else []
        if found:
            out[f.name] = found
    return out


def _map_type(t: pa.DataType, leaf, plain_lists: bool = False) -> pa.DataType:
    """``t`` with ``leaf`` applied to every non-nested type and maps as lists of key/value structs
    (``plain_lists``: every list kind as ``list``, the only one pyarrow's JSON reader builds)."""

    def node(t: pa.DataType) -> pa.DataType | None:
        if isinstance(t, pa.MapType):
            key, item = _map_type(t.key_type, leaf, plain_lists), _map_type(t.item_type, leaf, plain_lists)
            return pa.list_(pa.struct([("key", key), ("value", item)]))
        return None if pa.types.is_struct(t) or is_list_type(t) else leaf(t)

    return rebuild_type(t, node, plain_lists)


def _written_leaf(t: pa.DataType) -> pa.DataType:
    if _is_binary(t):
        return pa.string()
    if _is_time(t):
        return _storage(t)
    return pa.float32() if pa.types.is_float16(t) else t


def _read_leaf(t: pa.DataType) -> pa.DataType:
    """The type a JSON value written from ``t`` is parsed as."""
    if _is_binary(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if _is_time(t):
        return _storage(t)
    return pa.float32() if pa.types.is_float16(t) else t  # decimals: pyarrow parses JSON numbers exactly


def _restored_type(t: pa.DataType) -> pa.DataType:
    """The type the reader gives back for an exported ``t``: ``t`` itself, at every depth."""
    return rebuild_type(t, lambda _: None)


def _encode_value(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if _is_binary(t):
        return base64.b64encode(value).decode("ascii")
    if isinstance(t, pa.MapType):
        return [{"key": _encode_value(k, t.key_type), "value": _encode_value(v, t.item_type)} for k, v in value]
    if pa.types.is_struct(t):
        return {f.name: _encode_value(value.get(f.name), f.type) for f in t}
    if is_list_type(t):
        return [_encode_value(v, t.value_type) for v in value]
    return value


def encode_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with bytes as base64 text, maps as key/value lists and float16 as float32, for ``to_json``;
    extension columns (``arrow.json``, ``fixed_shape_tensor``, pandas' Period/Interval) as their storage."""
    arrays, fields = [], []
    for f, column in zip(batch.schema, batch.columns):
        if isinstance(f.type, pa.BaseExtensionType):
            f, column = f.with_type(f.type.storage_type), column.storage
        target = _map_type(f.type, _written_leaf)
        if target != f.type:
            if _has(f.type, lambda t: _is_binary(t) or isinstance(t, pa.MapType)):
                stored = _storage(f.type)  # times as integers first (exact, and Python-free of datetime limits)
                column = pa.array([_encode_value(v, stored) for v in column.cast(stored).to_pylist()], target)
            else:
                column = column.cast(target)
        arrays.append(column)
        fields.append(f.with_type(target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def json_read_schema(schema: pa.Schema) -> pa.Schema:
    """The explicit schema to parse a JSONL export written from ``schema`` with (extension columns: their
    storage type; pyarrow's JSON reader cannot build extension arrays)."""
    return pa.schema([f.with_type(_map_type(_plain(f.type), _read_leaf, plain_lists=True)) for f in schema])


def _plain(t: pa.DataType) -> pa.DataType:
    return t.storage_type if isinstance(t, pa.BaseExtensionType) else t


def _decode_value(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if _is_binary(t):
        return base64.b64decode(value, validate=True)
    if isinstance(t, pa.MapType):
        return [(_decode_value(e["key"], t.key_type), _decode_value(e["value"], t.item_type)) for e in value]
    if pa.types.is_struct(t):
        return {f.name: _decode_value(value.get(f.name), f.type) for f in t}
    if is_list_type(t):
        return [_decode_value(v, t.value_type) for v in value]
    return value


def _cast_checked(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``column.cast(target)``, rebuilt from Python values when pyarrow's list -> fixed-size list cast yields an
    invalid array (seen with null slots in pyarrow 26)."""
    cast = column.cast(target)
    try:
        cast.validate(full=True)
        return cast
    except pa.ArrowInvalid:
        return pa.array(column.to_pylist(), target)


def serialize_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def deserialize_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def decode_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A JSONL batch parsed with :func:`json_read_schema` with bytes, maps, float16 and times restored to
    their exported ``schema`` types (decimals are parsed exactly)."""
    arrays, fields = [], []
    for f, column in zip(batch.schema, batch.columns):
        if f.name in schema.names:
            extension = schema.field(f.name).type
            exported = _plain(extension)
            target = _restored_type(exported)
            if target != column.type:
                if _has(exported, lambda t: _is_binary(t) or isinstance(t, pa.MapType)):
                    stored = _storage(target)
                    column = pa.array([_decode_value(v, stored) for v in column.to_pylist()], stored).cast(target)
                else:
                    column = _cast_checked(column, target)
                f = f.with_type(target)
            if extension is not exported and target == exported:  # wrap the storage back into its extension
                column, f = pa.ExtensionArray.from_storage(extension, column), f.with_type(extension)
        arrays.append(column)
        fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# Python values of any Arrow value -------------------------------------------------------------------------
def _times_as_int(t: pa.DataType) -> pa.DataType:
    def node(t: pa.DataType) -> pa.DataType | None:
        if pa.types.is_timestamp(t) or pa.types.is_date64(t):
            return pa.int64()
        return pa.int32() if pa.types.is_date32(t) else None

    return rebuild_type(t, node)


def _iso(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(t):
        text = str(np.datetime64(value, t.unit))
        return f"{text}+00:00" if t.tz else text  # Arrow stores zoned timestamps as UTC instants
    if pa.types.is_date32(t):
        return str(np.datetime64(value, "D"))
    if pa.types.is_date64(t):
        return str(np.datetime64(value, "ms").astype("datetime64[D]"))
    if isinstance(t, pa.MapType):
        return [(_iso(k, t.key_type), _iso(v, t.item_type)) for k, v in value]
    if pa.types.is_struct(t):
        return {f.name: _iso(value.get(f.name), f.type) for f in t}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_iso(v, t.value_type) for v in value]
    return value


def python_values(array: pa.Array | pa.ChunkedArray) -> list[Any]:
    """``array.to_pylist()``, except that timestamps and dates Python's ``datetime`` cannot hold (years beyond
    1..9999, which pyarrow reads fine) make the whole column's times ISO 8601 text (numpy ``datetime64``)
    instead of raising ``OverflowError``."""
    try:
        return array.to_pylist()
    except (OverflowError, ValueError):
        return [_iso(v, array.type) for v in array.cast(_times_as_int(array.type)).to_pylist()]


def python_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """``batch.to_pylist()`` with :func:`python_values` per column."""
    columns = [python_values(c) for c in batch.columns]
    return [dict(zip(batch.schema.names, row)) for row in zip(*columns)]


# typed JSON (HDF5 nested columns) -------------------------------------------------------------------------
def _storage(t: pa.DataType) -> pa.DataType:
    """``t`` with times as integers in their unit and float16 as float32 (both exact), at any depth."""

    def node(t: pa.DataType) -> pa.DataType | None:
        if pa.types.is_timestamp(t) or pa.types.is_date64(t) or pa.types.is_time64(t) or pa.types.is_duration(t):
            return pa.int64()
        if pa.types.is_date32(t) or pa.types.is_time32(t):
            return pa.int32()
        return pa.float32() if pa.types.is_float16(t) else None

    return rebuild_type(t, node)


def _to_json(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_decimal(t):
        return str(value)
    if _is_binary(t):
        return base64.b64encode(value).decode("ascii")
    if isinstance(t, pa.MapType):
        return [{"key": _to_json(k, t.key_type), "value": _to_json(v, t.item_type)} for k, v in value]
    if pa.types.is_struct(t):
        return {f.name: _to_json(value.get(f.name), f.type) for f in t}
    if is_list_type(t):
        return [_to_json(v, t.value_type) for v in value]
    return value


def to_json_values(array: pa.Array) -> list[Any]:
    """JSON-ready values of ``array`` that :func:`from_json_values` turns back into the same array: bytes as
    base64, maps as key/value lists, times as integers in their unit, decimals as text."""
    storage = _storage(array.type)
    if storage == array.type:
        return [_to_json(v, array.type) for v in array.to_pylist()]
    # decimals, bytes and maps keep their types in the storage type, so it drives the encoding
    return [_to_json(v, storage) for v in array.cast(storage).to_pylist()]


def _from_json(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_decimal(t):
        return decimal.Decimal(value)
    if _is_binary(t):
        return base64.b64decode(value, validate=True)
    if isinstance(t, pa.MapType):
        return [(_from_json(e["key"], t.key_type), _from_json(e["value"], t.item_type)) for e in value]
    if pa.types.is_struct(t):
        return {f.name: _from_json(value.get(f.name), f.type) for f in t}
    if is_list_type(t):
        return [_from_json(v, t.value_type) for v in value]
    return value


def from_json_values(values: list[Any], t: pa.DataType) -> pa.Array:
    """The array of type ``t`` that :func:`to_json_values` gave ``values`` for."""
    storage = _storage(t)
    return pa.array([_from_json(v, storage) for v in values], storage).cast(t)
