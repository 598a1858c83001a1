"""Hypothesis strategies for random Arrow tables, for the round-trip property test of the catalog.

``arrow_tables()`` draws a ``pa.Table`` whose columns cover the Arrow types a user can hand the lake: every
integer width (signed and unsigned), float16/32/64 with NaN, infinities and -0.0, decimal128 and decimal256 of
any precision and scale, bool, strings with any Unicode (NUL, emoji, combining marks, ``İ``), large and view
strings, binary in all its layouts, dates, times, timestamps in every unit with and without a time zone
(values outside Python ``datetime``'s range included), durations, null-typed columns, and nested lists,
large lists, fixed-size lists, structs and maps, plus dictionary-encoded columns. Nulls appear at every level,
sometimes filling a whole column. Rows are drawn from a few distinct rows with repetition, so exact repeats are
common (the lake must keep them: rows are a multiset).

Values are built at the Arrow level (integers viewed as temporal types), never through Python ``datetime``,
so a value pyarrow can hold but Python cannot still reaches the lake.
"""

from __future__ import annotations

import decimal
import math
import unicodedata

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

MAX_DISTINCT_ROWS = 4
MAX_ROWS = 8
MAX_LIST = 3

# Column names the lake refuses on purpose, so a table using them tests a refusal, not a round trip:
# - the partition keys (hive partitioning replaces a file column of that name with the partition value);
# - the bookkeeping columns the catalog adds to every row;
# - the suffixes of the columns the catalog generates next to an image or file column.
# Clashes are checked case-insensitively, as DuckDB and Athena compare identifiers (issue 11, item 4).
RESERVED_NAMES = frozenset({"provider", "dataset", "task", "variant", "batch_id", "ingested_at", "row_hash"})
RESERVED_SUFFIXES = ("_sha256", "_width", "_height", "_format", "_mode", "_size")
# A binary column whose name contains one of these is taken for an image column by the stager's detection
# (``staging.IMAGE_NAME_HINTS``); the test passes ``image_columns=[]``, but keeps names clear of it anyway.
IMAGE_NAME_HINTS = ("image", "img", "picture", "photo")

# Strings that have broken text handling somewhere: NUL, case folding that changes length (İ, ß), combining
# marks vs precomposed characters, emoji with modifiers and joiners, right-to-left text, line separators.
SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "İstanbul",
    "ß",
    "é",
    "e\u0301",
    "👍🏽",
    "👨‍👩‍👧",
    "שלום",
    "\u2028",
    "\r\n",
    "\\x00",
    "null",
    "NaN",
)
SPECIAL_FLOATS = (0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -1.5, 5e-324, 1.7976931348623157e308)
TIMEZONES = (None, "UTC", "Asia/Seoul", "America/New_York", "+05:30", "-08:00")
TIME_UNITS = ("s", "ms", "us", "ns")
INT64 = (-(2**63), 2**63 - 1)
# Python datetime holds years 1..9999: in seconds since the epoch that is this range.
PY_DATETIME_SECONDS = (-62135596800, 253402300799)
UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

WIDE = decimal.Context(prec=80)  # the default context rounds to 28 digits; decimal256 holds 76

INT_TYPES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): INT64,
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}


def name_is_allowed(name: str, taken: list[str]) -> bool:
    """True when the lake has no documented reason to refuse ``name`` beside the names in ``taken``."""
    folded = name.casefold()
    if not name.strip() or folded in RESERVED_NAMES or folded.endswith(RESERVED_SUFFIXES):
        return False
    if any(hint in folded for hint in IMAGE_NAME_HINTS):
        return False
    # DuckDB and Athena compare identifiers case-insensitively; NFC keeps "é" and "e\u0301" from colliding.
    key = unicodedata.normalize("NFC", folded)
    return all(unicodedata.normalize("NFC", t.casefold()) != key for t in taken)


# Names: mostly identifier-like, sometimes with spaces, punctuation, quotes and non-ASCII letters. Control
# characters and surrogates are left out: no engine can hold them unchanged, so item 4 refuses them.
NAME_ALPHABET = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"), exclude_characters="\x00"
)
names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
    st.text(NAME_ALPHABET, min_size=1, max_size=6),
    st.sampled_from(["Text", "text_", "a b", 'q"uote', "dot.name", "slash/name", "über", "İd", "列", "1st", "-x"]),
)


@st.composite
def field_names(draw, count: int, taken: list[str] | None = None) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = draw(names)
        if name_is_allowed(name, out + list(taken or [])):
            out.append(name)
    return out


# Types ------------------------------------------------------------------------------------------------------


def _decimals():
    small = st.integers(1, 38).flatmap(lambda p: st.integers(0, p).map(lambda s: pa.decimal128(p, s)))
    # pyarrow makes a decimal256 of any Decimal with more than 38 digits; a user may also hand a narrow one (the
    # lake stages decimal256 of <= 38 digits as decimal128 and refuses wider ones, which DuckDB reads as DOUBLE)
    large = st.integers(1, 76).flatmap(lambda p: st.integers(0, p).map(lambda s: pa.decimal256(p, s)))
    return st.one_of(small, small, small, large)


def _timestamps():
    return st.builds(pa.timestamp, st.sampled_from(TIME_UNITS), st.sampled_from(TIMEZONES))


_primitive_types = st.one_of(
    st.sampled_from(list(INT_TYPES)),
    st.sampled_from([pa.float16(), pa.float32(), pa.float64()]),
    _decimals(),
    st.just(pa.bool_()),
    st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]),
    st.sampled_from([pa.binary(), pa.large_binary(), pa.binary_view()]),
    st.integers(1, 6).map(pa.binary),  # fixed_size_binary(n)
    st.sampled_from([pa.date32(), pa.date64()]),
    st.sampled_from([pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns")]),
    _timestamps(),
    st.sampled_from(TIME_UNITS).map(pa.duration),
    st.just(pa.null()),
)
# Map keys must be non-null and hashable by every engine: strings and integers are what users have.
_map_key_types = st.sampled_from([pa.string(), pa.large_string(), pa.int32(), pa.int64()])
_dictionary_value_types = st.sampled_from([pa.string(), pa.large_string(), pa.binary(), pa.int16(), pa.int64()])
_dictionary_index_types = st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8()])


@st.composite
def _struct_type(draw, children) -> pa.DataType:
    kids = draw(st.lists(children, min_size=1, max_size=3))
    return pa.struct([pa.field(n, t) for n, t in zip(draw(field_names(len(kids))), kids)])


def _extend(children):
    return st.one_of(
        children.map(pa.list_),
        children.map(pa.large_list),
        st.tuples(children, st.integers(1, 3)).map(lambda a: pa.list_(a[0], a[1])),
        _struct_type(children),
        st.tuples(_map_key_types, children).map(lambda a: pa.map_(*a)),
    )


def _dictionary_types():
    return st.builds(pa.dictionary, _dictionary_index_types, _dictionary_value_types)


_nested_types = st.recursive(_primitive_types, _extend, max_leaves=4)
# one_of picks its branches about evenly: repeating the main branch keeps dictionaries to about one column in 6
arrow_types = st.one_of(
    _primitive_types,
    _nested_types,
    _nested_types,
    _nested_types,
    _dictionary_types(),
    _dictionary_types().map(pa.list_),
)


# Values -----------------------------------------------------------------------------------------------------


@st.composite
def _validity(draw, n: int) -> list[bool]:
    """Which of ``n`` slots hold a value: all, none (a whole-null column), or a random mix."""
    mode = draw(st.sampled_from(["all", "all", "mix", "none"]))
    if mode == "all" or n == 0:
        return [True] * n
    if mode == "none":
        return [False] * n
    return draw(st.lists(st.booleans(), min_size=n, max_size=n))


def _with_nulls(draw, n: int, values: st.SearchStrategy) -> list:
    return [draw(values) if ok else None for ok in draw(_validity(n))]


def _float(draw, width: int) -> float:
    x = draw(st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(width=width)))
    return math.nan if math.isnan(x) else x  # one canonical NaN: its sign and payload are not data


def _temporal_ints(unit: str) -> st.SearchStrategy:
    per_second = UNIT_PER_SECOND[unit]
    low, high = PY_DATETIME_SECONDS
    return st.one_of(
        st.integers(-10 * per_second, 10 * per_second),
        st.integers(low * per_second, high * per_second) if unit != "ns" else st.integers(*INT64),
        st.integers(*INT64),  # beyond datetime's years 1..9999 for s/ms/us
        st.sampled_from([low * per_second - 1, high * per_second + 1] if unit != "ns" else [INT64[0], INT64[1]]),
    )


def _time_ints(t: pa.DataType) -> st.SearchStrategy:
    return st.integers(0, 86_400 * UNIT_PER_SECOND[t.unit] - 1)


def _mask(valid: list[bool]) -> pa.Array | None:
    return None if all(valid) else pa.array([not v for v in valid], pa.bool_())


@st.composite
def arrays(draw, t: pa.DataType, n: int) -> pa.Array:
    """An Arrow array of type ``t`` and length ``n``; nulls may appear at any level."""
    if pa.types.is_null(t):
        return pa.nulls(n)
    if pa.types.is_dictionary(t):
        plain = draw(arrays(t.value_type, n))
        return plain.dictionary_encode().cast(t)
    if pa.types.is_integer(t):
        return pa.array(_with_nulls(draw, n, st.integers(*INT_TYPES[t])), t)
    if pa.types.is_floating(t):
        width = t.bit_width
        valid = draw(_validity(n))
        with np.errstate(over="ignore"):  # a special too large for float16/32 becomes inf there, which is wanted
            values = np.array([_float(draw, width) if ok else 0.0 for ok in valid], dtype=f"float{width}")
        return pa.array(values, t, mask=np.array([not v for v in valid], dtype=bool))
    if pa.types.is_decimal(t):
        bound = 10**t.precision - 1
        unscaled = _with_nulls(draw, n, st.integers(-bound, bound))
        return pa.array([None if u is None else decimal.Decimal(u).scaleb(-t.scale, WIDE) for u in unscaled], t)
    if pa.types.is_boolean(t):
        return pa.array(_with_nulls(draw, n, st.booleans()), t)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        text = st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(st.characters(codec="utf-8"), max_size=8))
        return pa.array(_with_nulls(draw, n, text), pa.string()).cast(t)
    if pa.types.is_fixed_size_binary(t):
        return pa.array(_with_nulls(draw, n, st.binary(min_size=t.byte_width, max_size=t.byte_width)), t)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        blob = st.one_of(st.binary(max_size=8), st.sampled_from([b"", b"\x00", b"\xff\xfe", b"\\x00"]))
        return pa.array(_with_nulls(draw, n, blob), pa.binary()).cast(t)
    if pa.types.is_date32(t):
        return pa.array(_with_nulls(draw, n, st.integers(-(2**31), 2**31 - 1)), pa.int32()).view(t)
    if pa.types.is_date64(t):
        days = _with_nulls(draw, n, st.integers(-(10**8), 10**8))
        return pa.array([None if d is None else d * 86_400_000 for d in days], pa.int64()).view(t)
    if pa.types.is_time32(t) or pa.types.is_time64(t):
        storage = pa.int32() if pa.types.is_time32(t) else pa.int64()
        return pa.array(_with_nulls(draw, n, _time_ints(t)), storage).view(t)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return pa.array(_with_nulls(draw, n, _temporal_ints(t.unit)), pa.int64()).view(t)
    valid = draw(_validity(n))
    if pa.types.is_fixed_size_list(t):
        values = draw(arrays(t.value_type, n * t.list_size))
        return pa.FixedSizeListArray.from_arrays(values, type=t, mask=_mask(valid))
    if pa.types.is_struct(t):
        children = [draw(arrays(t.field(i).type, n)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=_mask(valid))
    lengths = [draw(st.integers(0, MAX_LIST)) if ok else 0 for ok in valid]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    total = int(offsets[-1])
    if pa.types.is_map(t):
        keys = draw(_distinct_keys(t.key_type, lengths))
        items = draw(arrays(t.item_type, total))
        return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items, type=t, mask=_mask(valid))
    values = draw(arrays(t.value_type, total))
    if pa.types.is_large_list(t):
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values, type=t, mask=_mask(valid))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=t, mask=_mask(valid))


@st.composite
def _distinct_keys(draw, t: pa.DataType, lengths: list[int]) -> pa.Array:
    """Map keys: non-null and distinct within each map, as the Arrow and Parquet map specs require."""
    element = (
        st.text(st.characters(codec="utf-8"), max_size=4)
        if pa.types.is_string(t) or pa.types.is_large_string(t)
        else st.integers(-(2**31), 2**31 - 1)
    )
    keys: list = []
    for length in lengths:
        keys += draw(st.lists(element, min_size=length, max_size=length, unique=True))
    return pa.array(keys, t)


@st.composite
def arrow_tables(draw, max_columns: int = 4) -> pa.Table:
    """A table of 1..``max_columns`` columns and 1..``MAX_ROWS`` rows, drawn from a few distinct rows."""
    types = draw(st.lists(arrow_types, min_size=1, max_size=max_columns))
    column_names = draw(field_names(len(types)))
    distinct = draw(st.integers(1, MAX_DISTINCT_ROWS))
    # Never empty: hypothesis draws the minimal value very often, and an empty table tests only its refusal
    # (the property test adds empty tables as explicit examples).
    rows = draw(st.integers(1, MAX_ROWS))
    picks = draw(st.lists(st.integers(0, distinct - 1), min_size=rows, max_size=rows))
    columns = {}
    for name, t in zip(column_names, types):
        base = draw(arrays(t, distinct))
        # pyarrow's take has no kernel for view types: repeat rows by concatenating one-row slices.
        columns[name] = pa.concat_arrays([base.slice(i, 1) for i in picks] or [base.slice(0, 0)])
    return pa.table(columns)
