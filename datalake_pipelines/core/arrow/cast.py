"""Casts of nested Arrow arrays that pyarrow 26 gets wrong: nested types are rebuilt child by child.

pyarrow 26.0.1 casts a ``list<null>`` (also a renamed or identical one, and inside a struct, list or map) of a
*sliced* array into an invalid array: the offsets keep pointing into the unsliced child while the child is cut
("Length spanned by list offsets (2) larger than values array (length 1)"). A part file written from such an
array cannot be read back. So structs, lists, large lists, fixed-size lists and maps are rebuilt here from their
offsets and children, and only leaf arrays go through ``Array.cast`` (safe: a lossy cast raises). Dictionary arrays
are decoded with ``take`` at any depth, since pyarrow casts a dictionary only to a non-nested value type.
"""

from __future__ import annotations

import uuid

import pyarrow as pa


def cast_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` as ``target`` (same nesting shape, field names may differ); raises ``pa.ArrowInvalid`` on loss."""
    t = array.type
    if _same(t, target):
        return array
    if pa.types.is_dictionary(t) and not pa.types.is_dictionary(target):
        # Decoded by taking the dictionary's values: works for every value type (pyarrow has no dictionary ->
        # struct/list/map cast kernel); a null index gives a null value.
        return cast_array(array.dictionary.take(array.indices), target)
    if isinstance(target, pa.BaseExtensionType):
        return to_extension(array, target)
    if not pa.types.is_nested(t) or not pa.types.is_nested(target):
        return array.cast(target)
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(t) and pa.types.is_struct(target) and t.num_fields == target.num_fields:
        children = [cast_array(array.field(i), target.field(i).type) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if pa.types.is_map(t) and pa.types.is_map(target):
        keys, items = cast_array(array.keys, target.key_type), cast_array(array.items, target.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=target, mask=mask)
    if pa.types.is_fixed_size_list(t) and pa.types.is_fixed_size_list(target) and t.list_size == target.list_size:
        values = array.values.slice(array.offset * t.list_size, len(array) * t.list_size)
        return pa.FixedSizeListArray.from_arrays(cast_array(values, target.value_type), type=target, mask=mask)
    varlist = (pa.types.is_list, pa.types.is_large_list)
    if any(f(t) for f in varlist) and any(f(target) for f in varlist):
        large = pa.types.is_large_list(target)
        offsets = array.offsets.cast(pa.int64() if large else pa.int32())
        values = cast_array(array.values, target.value_type)
        make = pa.LargeListArray if large else pa.ListArray
        return make.from_arrays(offsets, values, type=target, mask=mask)
    return array.cast(target)


def to_extension(array: pa.Array, target: pa.BaseExtensionType) -> pa.Array:
    """``array`` (the extension's storage, or what a query engine returns for it) as extension type ``target``.

    The value is cast to ``target.storage_type`` (see :func:`cast_array`), then wrapped. DuckDB returns the
    canonical ``arrow.uuid`` (storage ``fixed_size_binary[16]``) as its 36-character text form, which is parsed
    back to the 16 bytes (RFC 9562); ``arrow.json`` comes back as text, its storage. Raises ``pa.ArrowInvalid``
    when a value does not fit the storage (a text that is not a UUID).
    """
    if isinstance(array.type, pa.BaseExtensionType):
        if _same(array.type, target):
            return array
        array = array.storage
    storage = target.storage_type
    text = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    if target.extension_name == "arrow.uuid" and text:
        array = _uuid_bytes(array)
    return pa.ExtensionArray.from_storage(target, cast_array(array, storage))


def _uuid_bytes(array: pa.Array) -> pa.Array:
    try:
        values = [None if v is None else uuid.UUID(v).bytes for v in array.to_pylist()]
    except ValueError as exc:
        raise pa.ArrowInvalid(f"a text value is not a UUID: {exc}") from None
    return pa.array(values, pa.binary(16))


def _same(a: pa.DataType, b: pa.DataType) -> bool:
    return a == b and str(a) == str(b)  # str: list types equal by value type may name their field differently


def cast_column(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Every chunk of ``column`` through :func:`cast_array`."""
    if _same(column.type, target):
        return column
    return pa.chunked_array([cast_array(c, target) for c in column.chunks], target)


def cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (same column names, in order) with ``schema``'s types, through :func:`cast_column`."""
    columns = [cast_column(table.column(i), f.type) for i, f in enumerate(schema)]
    return pa.Table.from_arrays(columns, schema=schema)
