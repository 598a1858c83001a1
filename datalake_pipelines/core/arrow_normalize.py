"""Arrow type normalization at the staging boundary: one representation per logical type, nothing lost.

Applied to every upload (DataFrame, Arrow table, Parquet file) before it is staged, and again by processing to a
batch's ``data.parquet`` (hand drops never pass through staging):

- dictionary-encoded columns become their value type (the encoding is a storage choice, not data);
- ``string_view``/``binary_view`` become ``large_string``/``large_binary``, ``list_view`` becomes ``list``
  and run-end encoded columns their value type (the Parquet writer and DuckDB take these);
- nested types are normalized inside (a dictionary inside a struct or a list too);
- field names, nullability, field metadata and extension types are kept (Parquet stores the Arrow schema, so
  the catalog writer carries them); union types are refused because Parquet cannot store them.

A DataFrame keeps its named index levels as columns (as ``pyarrow.Table.from_pandas`` does by default); a
default ``RangeIndex`` or an unnamed index is row numbering, not data, and is not stored.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ValidationError


def normalize_type(t: pa.DataType) -> pa.DataType:
    """The catalog's representation of type ``t`` (``t`` itself when it needs no change)."""
    if isinstance(t, pa.BaseExtensionType):
        return t
    if pa.types.is_dictionary(t):
        return normalize_type(t.value_type)
    if pa.types.is_run_end_encoded(t):
        return normalize_type(t.value_type)
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_union(t):
        raise ValidationError(f"type {t} cannot be stored: Parquet has no union type")
    if pa.types.is_list_view(t):
        return pa.list_(_normalize_field(t.value_field))
    if pa.types.is_large_list_view(t):
        return pa.large_list(_normalize_field(t.value_field))
    if pa.types.is_list(t):
        return pa.list_(_normalize_field(t.value_field))
    if pa.types.is_large_list(t):
        return pa.large_list(_normalize_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_normalize_field(t.value_field), t.list_size)
    if pa.types.is_map(t):
        return pa.map_(_normalize_field(t.key_field), _normalize_field(t.item_field), t.keys_sorted)
    if pa.types.is_struct(t):
        return pa.struct([_normalize_field(t.field(i)) for i in range(t.num_fields)])
    return t


def _normalize_field(f: pa.Field) -> pa.Field:
    return f.with_type(normalize_type(f.type))


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field's type normalized; names, nullability and metadata kept."""
    fields = []
    for f in schema:
        try:
            fields.append(_normalize_field(f))
        except ValidationError as exc:
            raise ValidationError(f"column {f.name!r}: {exc}; convert it (e.g. to a struct) before uploading") from None
    return pa.schema(fields, metadata=schema.metadata)


def normalize_table(table: pa.Table) -> pa.Table:
    """``table`` cast to :func:`normalize_schema`; values unchanged. Raises :class:`ValidationError`."""
    target = normalize_schema(table.schema)
    if target.equals(table.schema, check_metadata=True):
        return table
    try:
        columns = [_normalize_column(table.column(i), f.type) for i, f in enumerate(target)]
        return pa.Table.from_arrays(columns, schema=target)
    except (pa.ArrowException, TypeError) as exc:
        raise ValidationError(f"cannot normalize column types {_types(table.schema)}: {exc}") from None


def _normalize_column(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if column.type == target:
        return column
    if pa.types.is_run_end_encoded(column.type):  # no cast kernel decodes run-end encoding
        column = pa.chunked_array([pc.run_end_decode(c) for c in column.chunks], column.type.value_type)
    if pa.types.is_list_view(column.type) or pa.types.is_large_list_view(column.type):
        # pyarrow 26's list_view -> list cast returns an invalid array (offsets buffer one entry short)
        column = pa.chunked_array([_list_view_to_list(c) for c in column.chunks], target)
    return column.cast(target)


def _list_view_to_list(arr: pa.Array) -> pa.Array:
    large = pa.types.is_large_list_view(arr.type)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64())
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
    values = pc.list_flatten(arr)
    mask = arr.is_null() if arr.null_count else None
    if large:
        return pa.LargeListArray.from_arrays(offsets, values, mask=mask)
    return pa.ListArray.from_arrays(offsets.cast(pa.int32()), values, mask=mask)


def normalize_batch(batch: pa.RecordBatch, target: pa.Schema) -> pa.Table:
    table = pa.Table.from_batches([batch])
    return table if table.schema.equals(target, check_metadata=True) else table.cast(target)


def table_from_pandas(df: pd.DataFrame) -> pa.Table:
    """A DataFrame as Arrow: named index levels become leading columns; a RangeIndex or unnamed index is dropped.

    Raises :class:`ValidationError` when an index level has the name of a column.
    """
    named = [name for name in df.index.names if name is not None]
    if named:
        clash = sorted(str(n) for n in named if n in df.columns)
        if clash:
            raise ValidationError(
                f"the DataFrame's index level(s) {clash} have the name of a column; rename the index "
                "(df.rename_axis(...)) or the column"
            )
        df = df.reset_index(level=named)
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValidationError(f"the DataFrame cannot be converted to Arrow: {exc}") from None


def _types(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
