"""Row identity: ``row_hash`` = SHA-256 of a row's content plus its occurrence number among identical rows.

A batch is a multiset of rows: two identical rows of one upload are two catalog rows. Each row's *content digest*
is the SHA-256 of a canonical byte form of its values; the ``row_hash`` is
``sha256(content_digest || occurrence)`` where ``occurrence`` (0, 1, 2, ... as an 8-byte little-endian integer)
counts the earlier rows of the same batch with the same content. Uploading the same file again therefore gives
the same row hashes (every row is skipped as already present), while repeats inside one upload stay distinct.

The canonical byte form is built with Arrow compute over whole columns, never through Python objects, so every
value pyarrow can read is hashed (Python's ``datetime`` cannot hold years past 9999). Columns are taken in name
order, each non-null value framed with its column name as ``len(name) || name || 0x01 || len (8 bytes LE) ||
bytes`` and a null value left out (a null and an absent column are the same content), so the form is unambiguous,
independent of column order, chunking, row-group boundaries and the row's position. Widths are canonical:
signed integers as int64, unsigned as uint64, floats as float64, strings and binaries as their bytes, so a
lossless type promotion (int32 -> int64) does not change a row's identity. Temporal values hash by their
integer count in the type's unit; structs like rows (non-null fields framed with their names, in name order,
so a struct field added as null keeps the identity); lists, maps and fixed-size lists element by element.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ValidationError

LB = pa.large_binary()
_EMPTY = pa.scalar(b"", LB)
_VALID = pa.scalar(b"\x01", LB)
_NULL = pa.scalar(b"\x00", LB)


def _fixed_width_bytes(arr: pa.Array) -> pa.Array:
    """Per-value bytes of a fixed-width array (its data buffer viewed as fixed_size_binary), as large_binary."""
    width = arr.type.bit_width // 8
    view = pa.Array.from_buffers(pa.binary(width), len(arr), arr.buffers()[:2], offset=arr.offset)
    return view.cast(LB)


def _frame(enc: pa.Array) -> pa.Array:
    """``0x00`` for null, else ``0x01 || length (int64 LE) || bytes``: concatenations stay unambiguous."""
    lengths = pc.fill_null(pc.binary_length(enc).cast(pa.int64()), 0)
    framed = pc.binary_join_element_wise(_VALID, _fixed_width_bytes(lengths), enc, _EMPTY)
    return pc.fill_null(framed, _NULL)


def _join_lists(offsets: pa.Array, framed_values: pa.Array, mask: pa.Array | None) -> pa.Array:
    lists = pa.LargeListArray.from_arrays(offsets.cast(pa.int64()), framed_values, mask=mask)
    return pc.binary_join(lists, _EMPTY)


def encode_values(arr: pa.Array) -> pa.Array:
    """Canonical per-row bytes of one column (``large_binary``; null where the value is null).

    Raises :class:`ValidationError` for a type the catalog cannot store (unions: Parquet has no union type).
    """
    t = arr.type
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(t):
        return encode_values(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return encode_values(arr.storage)
    if pa.types.is_run_end_encoded(t):
        return encode_values(pc.run_end_decode(arr))
    if pa.types.is_null(t):
        return pa.nulls(len(arr), LB)
    if pa.types.is_boolean(t):
        return _fixed_width_bytes(arr.cast(pa.uint8()))
    if pa.types.is_signed_integer(t):
        return _fixed_width_bytes(arr.cast(pa.int64()))
    if pa.types.is_unsigned_integer(t):
        return _fixed_width_bytes(arr.cast(pa.uint64()))
    if pa.types.is_floating(t):
        return _fixed_width_bytes(arr.cast(pa.float64()))
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time64(t) or pa.types.is_date64(t):
        return _fixed_width_bytes(arr.cast(pa.int64()))
    if pa.types.is_time32(t) or pa.types.is_date32(t):
        return _fixed_width_bytes(arr.cast(pa.int32()))
    if pa.types.is_decimal(t) or pa.types.is_interval(t):
        return _fixed_width_bytes(arr)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
    ):
        return arr.cast(LB)
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return pc.if_else(arr.is_valid(), _EMPTY, pa.scalar(None, LB))
        names = [t.field(i).name for i in range(t.num_fields)]
        joined = _join_named(dict(zip(names, arr.flatten())), len(arr))
        return pc.if_else(arr.is_valid(), joined, pa.scalar(None, LB))
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        target = pa.list_(t.value_field) if pa.types.is_list_view(t) else pa.large_list(t.value_field)
        return encode_values(arr.cast(target))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        mask = arr.is_null() if arr.null_count else None
        return _join_lists(arr.offsets, _frame(encode_values(arr.values)), mask)
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = arr.values.slice(arr.offset * size, len(arr) * size)
        offsets = pa.array(np.arange(0, (len(arr) + 1) * size, size, dtype=np.int64) if size else [0] * (len(arr) + 1))
        mask = arr.is_null() if arr.null_count else None
        return _join_lists(offsets.cast(pa.int64()), _frame(encode_values(values)), mask)
    raise ValidationError(f"type {t} cannot be stored in the catalog (Parquet has no equivalent)")


def _join_named(columns: dict[str, pa.Array], n: int) -> pa.Array:
    """Per row, the non-null values of ``columns`` in name order, each as ``len(name) || name || 0x01 || len ||
    bytes`` (``large_binary``, never null; empty when every value is null)."""
    framed = []
    for name in sorted(columns):
        encoded = name.encode("utf-8")
        label = pa.scalar(len(encoded).to_bytes(8, "little") + encoded + b"\x01", LB)
        values = encode_values(columns[name])
        lengths = _fixed_width_bytes(pc.fill_null(pc.binary_length(values).cast(pa.int64()), 0))
        framed.append(pc.fill_null(pc.binary_join_element_wise(label, lengths, values, _EMPTY), _EMPTY))
    if not framed:
        return pa.array([b""] * n, LB)
    rows = pc.binary_join_element_wise(*framed, _EMPTY) if len(framed) > 1 else framed[0]
    return rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows


def content_digests(table: pa.Table) -> list[bytes]:
    """SHA-256 digest (32 bytes) of each row's content: the non-null values of ``table``'s columns, in name order.

    Each non-null value is framed with its column's name (``len (8 bytes LE) || name || 0x01 || len || bytes``);
    a null value adds nothing. So a row reads the same whether a column is absent or null in it (a partition that
    gained an all-null column reads its older rows with NULL there: same rows, same identity), while values in
    different columns never collide. Nulls inside nested values stay framed (``0x00``).

    The caller decides what content is: processing passes the user's columns with images replaced by the
    SHA-256 of their file, plus meta fields, and without ``batch_id``/``ingested_at``/``row_hash``.
    """
    n = table.num_rows
    rows = _join_named({name: table.column(name).combine_chunks() for name in table.column_names}, n)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64, count=n + 1, offset=rows.offset * 8)
    data = memoryview(rows.buffers()[2]) if rows.buffers()[2] is not None else memoryview(b"")
    return [hashlib.sha256(data[start:end]).digest() for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


class RowIdentity:
    """Assigns row hashes batch-wide: call :meth:`row_hashes` on each chunk of one batch, in order.

    The occurrence counter spans the whole batch, so the identity does not depend on how the batch is chunked.
    """

    def __init__(self) -> None:
        self._occurrences: dict[bytes, int] = {}

    def row_hashes(self, content: pa.Table) -> list[str]:
        """Hex ``row_hash`` of each row of ``content`` (one string per row, in row order)."""
        return [self.next_hash(d) for d in content_digests(content)]

    def next_hash(self, digest: bytes) -> str:
        occurrence = self._occurrences.get(digest, 0)
        self._occurrences[digest] = occurrence + 1
        return row_hash(digest, occurrence)


def row_hash(digest: bytes, occurrence: int = 0) -> str:
    """``sha256(content_digest || occurrence as 8-byte little-endian)`` in hex."""
    return hashlib.sha256(digest + occurrence.to_bytes(8, "little")).hexdigest()


def row_hashes(content: pa.Table) -> list[str]:
    """Row hashes of one whole batch given as one table (occurrences counted within it)."""
    return RowIdentity().row_hashes(content)
