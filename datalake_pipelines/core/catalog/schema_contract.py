"""The schema contract of a partition: its first batch fixes each column's type; later batches may only widen it.

A later batch is accepted when each of its columns can be promoted without loss (schema evolution by widening):

- same type; ``null`` to any type and any type with a ``null`` column;
- integers to a wider integer that holds both ranges (int32 -> int64, uint16 -> int32), floats to a wider float
  (float16 -> float32 -> float64); ``string`` <-> ``large_string``, ``binary`` <-> ``large_binary`` (to large);
- ``decimal(p1, s)`` and ``decimal(p2, s)`` to ``decimal(max(p1, p2), s)``;
- a new column, or a column the batch lacks (its rows read NULL); a new struct field; list, large list and map
  values promoted by the same rules;
- a nullable field where the contract had a non-nullable one.

Anything else (int -> string, int64 -> float64, naive -> tz-aware or another timestamp unit, ...) is refused
before anything is stored, naming the column, both types and the partition. Every promotion is recorded.

The contract lives in the partition's ``_metadata.json`` under ``contract``: ``schema`` (name and type of each
column, readable), ``arrow_schema`` (the Arrow IPC schema, base64, for exact round trips, field metadata and
extension types included) and ``promotions`` (job id, column, from, to). Every part file can be cast to the
contract schema (:func:`conform`), which compaction and re-materialization do.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..arrow.cast import cast_column
from ..errors import ValidationError

INT_RANGES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}
FLOAT_ORDER = [pa.float16(), pa.float32(), pa.float64()]


class SchemaContractError(ValidationError):
    """A batch's column types break the partition's schema contract; the message names column, types, partition."""


class _Refused(Exception):
    def __init__(self, path: str, old: pa.DataType, new: pa.DataType):
        super().__init__(path)
        self.path, self.old, self.new = path, old, new


def _promote_type(old: pa.DataType, new: pa.DataType, path: str, changes: list[dict[str, str]]) -> pa.DataType:
    if old == new:
        return old
    if pa.types.is_null(old):
        return new
    if pa.types.is_null(new):
        return old
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        (lo1, hi1), (lo2, hi2) = INT_RANGES[old], INT_RANGES[new]
        if lo1 <= lo2 and hi2 <= hi1:
            return old
        if lo2 <= lo1 and hi1 <= hi2:
            return new
    if pa.types.is_floating(old) and pa.types.is_floating(new):
        return max(old, new, key=FLOAT_ORDER.index)
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {old, new} == {small, large}:
            return large
    if pa.types.is_decimal(old) and pa.types.is_decimal(new) and old.scale == new.scale:
        precision = max(old.precision, new.precision)
        return pa.decimal128(precision, old.scale) if precision <= 38 else pa.decimal256(precision, old.scale)
    if _is_varlist(old) and _is_varlist(new):
        value = _promote_field(old.value_field, new.value_field, f"{path}[]", changes)
        large = pa.types.is_large_list(old) or pa.types.is_large_list(new)
        return pa.large_list(value) if large else pa.list_(value)
    if pa.types.is_fixed_size_list(old) and pa.types.is_fixed_size_list(new) and old.list_size == new.list_size:
        return pa.list_(_promote_field(old.value_field, new.value_field, f"{path}[]", changes), old.list_size)
    if pa.types.is_map(old) and pa.types.is_map(new) and old.key_type == new.key_type:
        item = _promote_field(old.item_field, new.item_field, f"{path}{{value}}", changes)
        return pa.map_(old.key_field, item, old.keys_sorted)
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        return pa.struct(_merge_fields(list(old), list(new), f"{path}.", changes))
    raise _Refused(path, old, new)


def _is_varlist(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _promote_field(old: pa.Field, new: pa.Field, path: str, changes: list[dict[str, str]]) -> pa.Field:
    merged_type = _promote_type(old.type, new.type, path, changes)
    if merged_type != old.type:
        changes.append({"column": path, "from": str(old.type), "to": str(merged_type)})
    nullable = old.nullable or new.nullable
    if nullable and not old.nullable:
        changes.append({"column": path, "from": "not null", "to": "nullable"})
    return pa.field(old.name, merged_type, nullable, old.metadata)


def _merge_fields(
    old: list[pa.Field], new: list[pa.Field], prefix: str, changes: list[dict[str, str]]
) -> list[pa.Field]:
    by_name = {f.name: f for f in new}
    merged = []
    for f in old:
        if f.name in by_name:
            merged.append(_promote_field(f, by_name[f.name], f"{prefix}{f.name}", changes))
        else:
            if not f.nullable:
                changes.append({"column": f"{prefix}{f.name}", "from": "not null", "to": "nullable"})
            merged.append(f.with_nullable(True))
    known = {f.name for f in old}
    for f in new:
        if f.name not in known:
            changes.append({"column": f"{prefix}{f.name}", "from": "(absent)", "to": str(f.type)})
            merged.append(f.with_nullable(True))
    return merged


def merge_contract(contract: pa.Schema | None, batch: pa.Schema, partition: str) -> tuple[pa.Schema, list[dict]]:
    """The contract after accepting ``batch``, and the promotions it took (empty when nothing widened).

    Raises :class:`SchemaContractError` naming the column, the contract's type, the batch's type and the partition.
    """
    if contract is None:
        return batch, []
    changes: list[dict[str, str]] = []
    try:
        fields = _merge_fields(list(contract), list(batch), "", changes)
    except _Refused as exc:
        raise SchemaContractError(
            f"column {exc.path!r} has type {exc.new} in this batch but {exc.old} in partition {partition}, "
            "and the change cannot be made without loss; convert the column to "
            f"{exc.old} (or upload to another partition)",
        ) from None
    return pa.schema(fields, metadata=contract.metadata), changes


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order and types: missing columns as nulls; extra columns kept
    out. Only valid for a table whose schema the contract accepted (the casts are then widenings)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(cast_column(table.column(f.name), f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """True when ``a`` and ``b`` are one type, list value field names included (Parquet keeps them)."""
    return a == b and str(a) == str(b)


def part_schema(batch: pa.Schema, contract: pa.Schema) -> pa.Schema:
    """The batch's own columns with the contract's (possibly wider) types: the schema its part file is written in."""
    return pa.schema([contract.field(name) for name in batch.names], metadata=batch.metadata)


def contract_json(schema: pa.Schema, promotions: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``contract`` entry of ``_metadata.json``."""
    return {
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
        "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
        "promotions": promotions,
    }


def contract_from_json(doc: dict[str, Any] | None) -> pa.Schema | None:
    """The contract schema stored in a partition's ``_metadata.json`` document, or ``None``."""
    encoded = (doc or {}).get("contract", {}).get("arrow_schema")
    if not encoded:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))


def fold_schemas(contract: pa.Schema | None, schemas: list[tuple[Path, pa.Schema]], partition: str) -> pa.Schema | None:
    """The contract widened by the schemas of existing part files (a part written before its metadata was updated,
    or a lake older than contracts). Raises :class:`SchemaContractError` when two parts already disagree."""
    for path, schema in schemas:
        try:
            contract, _ = merge_contract(contract, schema, partition)
        except SchemaContractError as exc:
            raise SchemaContractError(
                f"stored part file {path.name} of partition {partition} already breaks its schema contract "
                f"({exc}); the partition needs repair before it takes new batches"
            ) from None
    return contract
