"""Arrow types a HuggingFace ``datasets`` dataset can hold, and the recorded conversion of those it cannot.

``datasets`` (5.x) has a feature type for every Arrow type except maps, unions, list views and intervals
(``Features.from_arrow_schema`` raises ``ValueError: ... does not have a datasets dtype equivalent``). A map
``map<K, V>`` becomes ``list<struct<key: K, value: V>>`` (the map's own physical layout, so nothing is lost and
entry order is kept), at any depth inside structs and lists. Every conversion is returned as
``{"column", "from", "to", "rule"}`` for the ``download.json`` / ``export.json`` manifest. Any other type
``datasets`` cannot hold makes :func:`hf_plan` raise :class:`HfUnsupportedTypeError` (code
``hf_unsupported_type``) before anything is written.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..arrow.walk import rebuild_type
from ..errors import CodedError

HF_UNSUPPORTED_TYPE = "hf_unsupported_type"
MAP_RULE = "map<K, V> -> list<struct<key: K, value: V>> (entries in stored order)"


class HfUnsupportedTypeError(CodedError):
    """A column's type has no ``datasets`` equivalent and no lossless conversion."""

    code = HF_UNSUPPORTED_TYPE


def hf_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every map replaced by a list of ``{key, value}`` structs."""

    def node(t: pa.DataType) -> pa.DataType | None:
        if not isinstance(t, pa.MapType):
            return None
        value = pa.field("value", hf_type(t.item_type), nullable=t.item_field.nullable)
        entry = pa.struct([pa.field("key", hf_type(t.key_type), nullable=False), value])
        return pa.list_(pa.field("item", entry, nullable=False))

    return rebuild_type(t, node)


def hf_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` rebuilt as ``target`` (from :func:`hf_type`); maps reuse their offsets and entries."""
    if array.type == target:
        return array
    if array.offset:  # rebuilding from offsets and a validity mask needs an unsliced array
        array = array.take(pa.array(range(len(array)), pa.int64()))
    if isinstance(array.type, pa.MapType):
        entry = target.value_type
        keys, items = hf_array(array.keys, entry.field(0).type), hf_array(array.items, entry.field(1).type)
        entries = pa.StructArray.from_arrays([keys, items], fields=list(entry))
        return pa.ListArray.from_arrays(array.offsets, entries, type=target, mask=array.is_null())
    if pa.types.is_struct(array.type):
        children = [hf_array(array.field(i), target.field(i).type) for i in range(array.type.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if pa.types.is_fixed_size_list(array.type):
        values = hf_array(array.values, target.value_type)
        return pa.FixedSizeListArray.from_arrays(values, type=target, mask=array.is_null())
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        cls = pa.LargeListArray if pa.types.is_large_list(target) else pa.ListArray
        values = hf_array(array.values, target.value_type)
        return cls.from_arrays(array.offsets, values, type=target, mask=array.is_null())
    return array.cast(target)


def hf_plan(schema: pa.Schema) -> tuple[pa.Schema, list[dict[str, Any]]]:
    """``(schema datasets can hold, conversions)``; raises :class:`HfUnsupportedTypeError` naming the columns."""
    import datasets

    fields, conversions, refused = [], [], []
    for f in schema:
        target = hf_type(f.type)
        try:
            datasets.Features.from_arrow_schema(pa.schema([f.with_type(target)]))
        except (ValueError, TypeError, NotImplementedError) as exc:
            refused.append(f"{f.name!r} ({f.type}: {str(exc).splitlines()[0]})")
            continue
        if target != f.type:
            conversions.append({"column": f.name, "from": str(f.type), "to": str(target), "rule": MAP_RULE})
        fields.append(f.with_type(target))
    if refused:
        raise HfUnsupportedTypeError(
            f"format 'hf' cannot hold column(s) {', '.join(refused)}; download them as parquet or arrow, "
            "or leave them out with columns=[...]"
        )
    return pa.schema(fields, metadata=schema.metadata), conversions


def hf_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` converted to ``schema`` from :func:`hf_plan`."""
    if batch.schema.equals(schema):
        return batch
    arrays = [hf_array(batch.column(i), schema.field(i).type) for i in range(batch.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
