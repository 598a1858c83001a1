"""How JSONL exports encode what JSON has no type for, and how the export reader decodes it.

JSON has no bytes: every binary value (``binary``, ``large_binary``, ``fixed_size_binary``, also inside
structs, lists and maps) is written as standard base64 text (RFC 4648 section 4, with padding). The export's
``export.json`` lists those columns under ``encodings`` (``{"<column>": "base64"}``) and carries the exported
Arrow schema (``arrow_schema``: base64 of the IPC-serialized schema), so :func:`decode_batch` turns the text
back into bytes of the exported type. DuckDB's ``to_json`` renders the rows; it cannot read ``float16``, so
half floats are written as the same number through ``float32`` (every float16 value is exact in float32).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa

BASE64 = "base64"


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


def base64_columns(schema: pa.Schema) -> dict[str, str]:
    """``{column: "base64"}`` for every column holding bytes at any depth."""
    return {f.name: BASE64 for f in schema if _has(f.type, _is_binary)}


def _json_type(t: pa.DataType) -> pa.DataType:
    if _is_binary(t):
        return pa.string()
    if pa.types.is_float16(t):
        return pa.float32()
    if isinstance(t, pa.MapType):
        return pa.map_(_json_type(t.key_type), t.item_field.with_type(_json_type(t.item_type)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_json_type(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = t.value_field.with_type(_json_type(t.value_type))
        if pa.types.is_fixed_size_list(t):
            return pa.list_(value, t.list_size)
        return pa.large_list(value) if pa.types.is_large_list(t) else pa.list_(value)
    return t


def _encode_value(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if _is_binary(t):
        return base64.b64encode(value).decode("ascii")
    if isinstance(t, pa.MapType):
        return [(_encode_value(k, t.key_type), _encode_value(v, t.item_type)) for k, v in value]
    if pa.types.is_struct(t):
        return {f.name: _encode_value(value.get(f.name), f.type) for f in t}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_encode_value(v, t.value_type) for v in value]
    return value


def encode_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with bytes as base64 text and float16 as float32, ready for DuckDB's ``to_json``."""
    arrays, fields = [], []
    for f, column in zip(batch.schema, batch.columns):
        target = _json_type(f.type)
        if target != f.type:
            if _has(f.type, _is_binary):
                column = pa.array([_encode_value(v, f.type) for v in column.to_pylist()], target)
            else:
                column = column.cast(target)
        arrays.append(column)
        fields.append(f.with_type(target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _decode_value(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if _is_binary(t):
        return base64.b64decode(value, validate=True)
    if isinstance(t, pa.MapType):
        pairs = value.items() if isinstance(value, dict) else value
        return [(_decode_value(k, t.key_type), _decode_value(v, t.item_type)) for k, v in pairs]
    if pa.types.is_struct(t):
        return {f.name: _decode_value(value.get(f.name), f.type) for f in t}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_decode_value(v, t.value_type) for v in value]
    return value


def serialize_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def deserialize_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def decode_batch(batch: pa.RecordBatch, encodings: dict[str, str], schema: pa.Schema) -> pa.RecordBatch:
    """A JSONL batch with its ``base64`` columns turned back into bytes of their exported ``schema`` type."""
    arrays, fields = [], []
    for f, column in zip(batch.schema, batch.columns):
        if encodings.get(f.name) == BASE64 and f.name in schema.names:
            target = schema.field(f.name).type
            column = pa.array([_decode_value(v, target) for v in column.to_pylist()], target)
            f = f.with_type(target)
        arrays.append(column)
        fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# Python values of any Arrow value -------------------------------------------------------------------------
def _times_as_int(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        return pa.int64()
    if pa.types.is_date32(t):
        return pa.int32()
    if isinstance(t, pa.MapType):
        return pa.map_(_times_as_int(t.key_type), t.item_field.with_type(_times_as_int(t.item_type)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_times_as_int(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = t.value_field.with_type(_times_as_int(t.value_type))
        if pa.types.is_fixed_size_list(t):
            return pa.list_(value, t.list_size)
        return pa.large_list(value) if pa.types.is_large_list(t) else pa.list_(value)
    return t


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
