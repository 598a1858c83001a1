"""Arrow type normalization at the staging boundary: one representation per logical type, nothing lost.

Applied to every upload (DataFrame, Arrow table, Parquet file) before it is staged, and again by processing to a
batch's ``data.parquet`` (hand drops never pass through staging):

- dictionary-encoded columns become their value type (the encoding is a storage choice, not data);
- ``string_view``/``binary_view`` become ``large_string``/``large_binary``, ``list_view`` becomes ``list``
  and run-end encoded columns their value type (the Parquet writer and DuckDB take these);
- nested types are normalized inside (a dictionary inside a struct or a list too);
- what Parquet has no type for becomes its lossless equivalent: ``timestamp[s]`` -> ``timestamp[ms]`` (same
  zone), ``time32[s]`` -> ``time32[ms]``, ``date64`` -> ``date32`` (a date64 value off a day boundary is refused:
  it would lose its milliseconds), ``decimal32``/``decimal64`` and ``decimal256`` of precision <= 38 ->
  ``decimal128`` (Parquet stores them all as decimals and pyarrow reads them back as these);
- field names, nullability, field metadata and extension types are kept (Parquet stores the Arrow schema, so
  the catalog writer carries them).

Refused with a :class:`ValidationError` naming the column (before anything is stored): types the lake cannot keep
exactly -- unions, intervals (Parquet has neither), structs without fields (Parquet cannot write them),
``decimal256`` over 38 digits (DuckDB reads it as DOUBLE and loses digits), structs with two fields of one name
-- and ``timestamp[s|ms]`` values beyond what int64 microseconds hold (DuckDB reads those units as microseconds
and raises ``ConversionException``; about 292,000 years either side of 1970).

A DataFrame keeps every named index level as a column, whatever its kind (a named ``RangeIndex`` too); an unnamed
index of any kind (the default ``RangeIndex``, a filtered frame's leftover labels) is row numbering, not data, and is
not stored.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ValidationError
from .cast import cast_column


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
    if pa.types.is_interval(t):
        raise ValidationError(f"type {t} cannot be stored: Parquet has no interval type")
    if pa.types.is_timestamp(t) and t.unit == "s":  # Parquet's smallest timestamp unit is ms
        return pa.timestamp("ms", t.tz)
    if pa.types.is_time32(t) and t.unit == "s":
        return pa.time32("ms")
    if pa.types.is_date64(t):  # Parquet has one date type, in days
        return pa.date32()
    if pa.types.is_decimal(t) and not pa.types.is_decimal128(t):
        if t.precision > 38:
            raise ValidationError(
                f"type {t} cannot be kept exactly: DuckDB reads decimals of more than 38 digits as DOUBLE; "
                "store it as text or reduce its precision to 38"
            )
        return pa.decimal128(t.precision, t.scale)
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
        if not t.num_fields:
            raise ValidationError("a struct with no fields cannot be stored: Parquet cannot write it")
        names = [t.field(i).name for i in range(t.num_fields)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValidationError(f"struct fields {twice} appear twice: DuckDB cannot hold a struct key twice")
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
            raise ValidationError(f"column {f.name!r}: {exc}; convert it before uploading") from None
    return pa.schema(fields, metadata=schema.metadata)


def normalize_table(table: pa.Table, target: pa.Schema | None = None) -> pa.Table:
    """``table`` cast to :func:`normalize_schema` (or ``target``, a normalized schema); values unchanged.

    Raises :class:`ValidationError` naming the column when a type is refused, a value cannot be cast without
    loss (a ``date64`` off a day boundary, a ``timestamp[s]`` beyond int64 milliseconds) or a timestamp is
    beyond DuckDB's range for its unit (see the module docstring).
    """
    target = target if target is not None else normalize_schema(table.schema)
    columns = []
    for i, f in enumerate(target):
        column = table.column(i)
        try:
            column = _normalize_column(column, f.type)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            why = " (a date64 value off a day boundary would lose its milliseconds)" if "date64" in str(exc) else ""
            raise ValidationError(
                f"column {f.name!r}: type {table.schema.field(i).type} cannot be stored as {f.type}{why}: {exc}"
            ) from None
        _check_timestamp_range(f.name, column)
        columns.append(column)
    if target.equals(table.schema, check_metadata=True):
        return table
    return pa.Table.from_arrays(columns, schema=target)


# DuckDB reads Parquet timestamps in s/ms as int64 microseconds (ns stays ns, us is us): beyond this it fails.
_MS_LIMIT = (2**63 - 1) // 1_000


def _check_timestamp_range(name: str, column: pa.ChunkedArray) -> None:
    if not _has_ms_timestamp(column.type):
        return
    for chunk in column.chunks:
        for leaf in _leaves(chunk):
            if pa.types.is_timestamp(leaf.type) and leaf.type.unit == "ms" and leaf.null_count < len(leaf):
                low, high = pc.min_max(leaf.cast(pa.int64())).values()
                if max(-low.as_py(), high.as_py()) > _MS_LIMIT:
                    raise ValidationError(
                        f"column {name!r}: a {leaf.type} value is beyond what DuckDB reads exactly (int64 "
                        "microseconds since 1970, about 292,000 years either side); store it as int64 or in ns"
                    )


def _has_ms_timestamp(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t):
        return t.unit == "ms"
    return pa.types.is_nested(t) and any(_has_ms_timestamp(t.field(i).type) for i in range(t.num_fields))


def _leaves(array: pa.Array):
    """Every leaf array under ``array``: struct fields, list values, map keys and items."""
    t = array.type
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            yield from _leaves(array.field(i))
    elif pa.types.is_map(t):
        yield from _leaves(array.keys)
        yield from _leaves(array.items)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        yield from _leaves(array.flatten())
    else:
        yield array


def _normalize_column(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if column.type == target:
        return column
    if pa.types.is_run_end_encoded(column.type):  # no cast kernel decodes run-end encoding
        column = pa.chunked_array([pc.run_end_decode(c) for c in column.chunks], column.type.value_type)
    if pa.types.is_list_view(column.type) or pa.types.is_large_list_view(column.type):
        # pyarrow 26's list_view -> list cast returns an invalid array (offsets buffer one entry short)
        column = pa.chunked_array([_list_view_to_list(c) for c in column.chunks], target)
    return cast_column(column, target)  # nested types child by child (see arrow_cast)


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
    """One batch of a hand-dropped ``data.parquet`` as :func:`normalize_table` makes it (same checks)."""
    return normalize_table(pa.Table.from_batches([batch]), target)


def table_from_pandas(df: pd.DataFrame) -> pa.Table:
    """A DataFrame as Arrow: named index levels (of any kind) become leading columns; an unnamed index is dropped.

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
