"""The catalog's Arrow schema of a selection, and query results cast back to it.

DuckDB reads Parquet into its own type system, which has no ``float16`` or ``fixed_size_binary`` (they come
back as ``float``/``binary``), names a map's entries ``entries`` and a UTC zone ``Etc/UTC``, and widens
timestamp units. The catalog files keep the stored Arrow types, so every result is cast back to the union of
the selected files' schemas (:func:`selection_schema`), checked up front on the result's schema
(:func:`restorer`), then applied batch by batch. A cast is ``safe`` (pyarrow refuses overflow or truncation).

Partitions may disagree on a column's type (each partition has its own schema contract). DuckDB's
``read_parquet(..., union_by_name=true)`` then casts both sides to a common type (often ``VARCHAR``) or raises
``ConversionException`` while reading. :func:`selection_schema` refuses such a selection first
(:class:`TypeConflictError`, naming the column, the types and the partitions). Lossless promotions are
allowed: the same kind with a wider width or unit (``int32``/``int64``, ``timestamp[ms]``/``timestamp[us]``),
``null`` with anything, struct fields added; integers with floats or decimals are a conflict (not lossless).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog.parts import PARTITION_COLUMNS, CatalogError
from ..errors import CodedError
from .cast import cast_array
from .walk import rebuild_type

TYPE_CONFLICT = "type_conflict"
TYPE_NOT_RESTORABLE = "type_not_restorable"

_SCHEMA_CACHE: dict[tuple, pa.Schema] = {}  # (path, inode, size, mtime) -> schema; a rewritten file misses
_CACHE_LIMIT = 20_000


class TypeConflictError(CodedError):
    """Selected partitions hold one column with types that cannot be unified without loss."""

    code = TYPE_CONFLICT


class TypeNotRestorableError(CodedError):
    """A query result column cannot be cast back to its catalog type (refused before anything is written)."""

    code = TYPE_NOT_RESTORABLE


def partition_of(path: str | Path) -> str:
    """``provider/dataset/task/variant`` of a catalog file path or URI (its ``key=value`` folders)."""
    values = dict(part.split("=", 1) for part in str(path).split("/") if "=" in part)
    return "/".join(values.get(c, "?") for c in PARTITION_COLUMNS)


def local_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a catalog Parquet file's footer (cached by path, inode, size and mtime)."""
    try:
        st = os.stat(path)
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        schema = _SCHEMA_CACHE.get(key)
        if schema is None:
            schema = pq.read_schema(path)
            if len(_SCHEMA_CACHE) >= _CACHE_LIMIT:
                _SCHEMA_CACHE.clear()
            _SCHEMA_CACHE[key] = schema
        return schema
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None


def _kind(t: pa.DataType) -> str:
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_signed_integer(t):
        return "int"
    if pa.types.is_unsigned_integer(t):
        return "uint"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_timestamp(t):
        return f"timestamp:{'tz' if t.tz else 'naive'}"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    return str(t) if not pa.types.is_nested(t) else type(t).__name__


def _unify(name: str, types: dict[pa.DataType, list[str]]) -> pa.DataType:
    """One type for ``name`` over the partitions' types, or :class:`TypeConflictError`."""
    concrete = [t for t in types if not pa.types.is_null(t)]
    if len(concrete) <= 1:
        return concrete[0] if concrete else pa.null()
    kinds = {_kind(t) for t in concrete}
    if kinds <= {"int", "uint"} and len(kinds) == 2:
        kinds = {"mixed-sign"}
    try:
        if len(kinds) != 1 or "mixed-sign" in kinds:
            raise pa.ArrowTypeError("different kinds")
        return pa.unify_schemas([pa.schema([(name, t)]) for t in concrete], promote_options="permissive").field(0).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        listed = "; ".join(f"{t} in {', '.join(sorted(set(parts)))}" for t, parts in types.items())
        raise TypeConflictError(
            f"column {name!r} has conflicting types across the selected partitions: {listed}. "
            "Select partitions that agree (provider/dataset/task/variant filters) or leave the column out "
            "(columns=[...])"
        ) from None


def selection_schema(
    files: Sequence[str | Path],
    columns: Iterable[str] | None,
    read_schema: Callable[[Sequence], list[pa.Schema]],
) -> pa.Schema:
    """The catalog's Arrow schema of ``columns`` (``None``: all) over ``files`` (``read_schema(files)`` gives
    their footers).

    Raises :class:`TypeConflictError` when the partitions disagree on a column's type beyond a lossless
    promotion. Fields are nullable (a column absent from a file reads as null) and keep their metadata.
    """
    wanted = None if columns is None else set(columns)
    seen: dict[str, dict[pa.DataType, list[str]]] = {}
    fields: dict[str, pa.Field] = {}
    for path, schema in zip(files, read_schema(files)):
        for f in schema:
            if (wanted is None or f.name in wanted) and f.name not in PARTITION_COLUMNS:
                seen.setdefault(f.name, {}).setdefault(f.type, []).append(partition_of(path))
                fields.setdefault(f.name, f)
    out = []
    for name, types in seen.items():
        out.append(pa.field(name, _unify(name, types), nullable=True, metadata=fields[name].metadata))
    return pa.schema(out)


def restorer(
    result: pa.Schema, catalog: pa.Schema | None
) -> tuple[Callable[[pa.RecordBatch], pa.RecordBatch], pa.Schema]:
    """``(cast, schema)``: a function casting result batches (schema ``result``) back to the ``catalog`` types
    of their columns, and the schema it gives.

    Checked now on the schemas: a column whose type cannot be cast back raises :class:`TypeNotRestorableError`
    naming it, before any row is read. Columns outside ``catalog`` (partition keys, ``matched_snippet``)
    are kept as they are.
    """
    if catalog is None:
        return (lambda batch: batch), result
    target = []
    changed = False
    for f in result:
        idx = catalog.get_field_index(f.name)
        want = catalog.field(idx) if idx >= 0 and not pa.types.is_null(catalog.field(idx).type) else f
        if want.type != f.type or str(want.type) != str(f.type):  # map entry names compare equal
            changed = True
            try:
                pa.array([], f.type).cast(want.type)
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise TypeNotRestorableError(
                    f"column {f.name!r} is stored as {want.type} but the query engine "
                    f"returns {f.type}, which cannot be cast back: {exc}"
                ) from None
        target.append(pa.field(f.name, want.type, nullable=True, metadata=want.metadata))
    schema = pa.schema(target, metadata=result.metadata)
    if not changed:
        return (lambda batch: batch), result

    manual = [i for i, f in enumerate(schema) if _has_fixed_list(f.type) and f.type != result.field(i).type]
    plain = pa.schema([result.field(i) if i in manual else f for i, f in enumerate(schema)], metadata=schema.metadata)

    def cast(batch: pa.RecordBatch) -> pa.RecordBatch:
        # column by column: RecordBatch.cast casts unchanged nested columns too (pyarrow 26 bug, see arrow_cast)
        arrays = [
            restore_array(c, f.type) if i in manual else cast_array(c, plain.field(i).type)
            for i, (c, f) in enumerate(zip(batch.columns, schema))
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    return cast, schema


def _has_fixed_list(t: pa.DataType) -> bool:
    if pa.types.is_fixed_size_list(t):
        return True
    return pa.types.is_nested(t) and any(_has_fixed_list(t.field(i).type) for i in range(t.num_fields))


def restore_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` as ``target`` where ``target`` holds fixed-size lists, which DuckDB returns as plain lists.

    pyarrow 26's cast from a list with null slots to a fixed-size list of maps builds an invalid array or
    crashes the process, so fixed-size lists are rebuilt here: each slot takes ``list_size`` child values (a
    null slot, null children), and a non-null list of another length raises :class:`TypeNotRestorableError`.
    """
    if array.type == target and str(array.type) == str(target):
        return array
    if array.offset:  # rebuilding from offsets and a validity mask needs an unsliced array
        array = array.take(pa.array(np.arange(len(array)), pa.int64()))
    nulls = array.is_null() if array.null_count else None
    if pa.types.is_fixed_size_list(target) and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        size = target.list_size
        offsets = array.offsets.to_numpy()
        valid = ~array.is_null().to_numpy(zero_copy_only=False)
        lengths = offsets[1:] - offsets[:-1]
        if (lengths[valid] != size).any():
            raise TypeNotRestorableError(f"a list of length other than {size} cannot be restored as {target}")
        index = (offsets[:-1, None] + np.arange(size)).ravel()
        taken = array.values.take(pa.array(index, pa.int64(), mask=~np.repeat(valid, size)))
        values = restore_array(taken, target.value_type)
        return pa.FixedSizeListArray.from_arrays(values, type=target, mask=nulls)
    if pa.types.is_struct(target) and pa.types.is_struct(array.type):
        children = [restore_array(array.field(f.name), f.type) for f in target]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=nulls)
    if pa.types.is_list(target) and pa.types.is_list(array.type):
        values = restore_array(array.values, target.value_type)
        return pa.ListArray.from_arrays(array.offsets, values, type=target, mask=nulls)
    if pa.types.is_large_list(target) and pa.types.is_list(array.type):
        values = restore_array(array.values, target.value_type)
        return pa.LargeListArray.from_arrays(array.offsets.cast(pa.int64()), values, type=target, mask=nulls)
    if isinstance(target, pa.MapType) and isinstance(array.type, pa.MapType):
        keys, items = restore_array(array.keys, target.key_type), restore_array(array.items, target.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=target, mask=nulls)
    return cast_array(array, target)


def restore_reader(reader: pa.RecordBatchReader, catalog: pa.Schema | None) -> pa.RecordBatchReader:
    """``reader`` with every batch cast back to the catalog types (see :func:`restorer`)."""
    cast, schema = restorer(reader.schema, catalog)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield cast(batch)

    return pa.RecordBatchReader.from_batches(schema, batches())


def restore_table(table: pa.Table, catalog: pa.Schema | None) -> pa.Table:
    """``table`` cast back to the catalog types (see :func:`restorer`)."""
    cast, schema = restorer(table.schema, catalog)
    return pa.Table.from_batches([cast(b) for b in table.to_batches()], schema=schema)


def duckdb_readable(t: pa.DataType) -> pa.DataType:
    """``t`` with every ``float16`` widened to ``float32`` (exact): DuckDB's Arrow scan refuses float16
    ("Unsupported Internal Arrow Type e"), while its Parquet reader widens it the same way."""
    return rebuild_type(t, lambda x: pa.float32() if pa.types.is_float16(x) else None)
