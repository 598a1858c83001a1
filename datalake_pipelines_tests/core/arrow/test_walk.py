"""``rebuild_type``: the one walk over nested Arrow types, checked on generated types."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings

from datalake_pipelines.core.arrow.restore import duckdb_readable
from datalake_pipelines.core.arrow.walk import rebuild_type
from datalake_pipelines.core.export.hf_types import hf_type

from ...support.arrow_strategies import arrow_types


def leaves(t: pa.DataType) -> list[pa.DataType]:
    """Every non-nested type inside ``t``, depth first (map keys before values, struct fields in order)."""
    if isinstance(t, pa.MapType):
        return leaves(t.key_type) + leaves(t.item_type)
    if pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [leaf for i in range(t.num_fields) for leaf in leaves(t.field(i).type)]
    return [t]


@settings(max_examples=300, deadline=None)
@given(arrow_types)
def test_keeping_every_node_gives_back_the_same_type(t):
    assert rebuild_type(t, lambda _: None) == t


@settings(max_examples=300, deadline=None)
@given(arrow_types)
def test_a_leaf_rule_reaches_every_leaf_and_nothing_else(t):
    widened = duckdb_readable(t)
    want = [pa.float32() if pa.types.is_float16(x) else x for x in leaves(t)]
    assert leaves(widened) == want
    # the nesting itself is untouched: with no float16 inside, the type is the same
    assert (widened == t) == (not any(pa.types.is_float16(x) for x in leaves(t)))


@settings(max_examples=300, deadline=None)
@given(arrow_types)
def test_hf_types_hold_no_map_at_any_depth_and_keep_the_leaves(t):
    converted = hf_type(t)

    def has_map(x: pa.DataType) -> bool:
        return isinstance(x, pa.MapType) or any(has_map(x.field(i).type) for i in range(x.num_fields))

    assert not has_map(converted)
    assert leaves(converted) == leaves(t)


def test_plain_lists_makes_every_list_kind_a_list():
    t = pa.struct([("a", pa.large_list(pa.int8())), ("b", pa.list_(pa.list_(pa.string(), 2)))])
    want = pa.struct([("a", pa.list_(pa.int8())), ("b", pa.list_(pa.list_(pa.string())))])
    assert rebuild_type(t, lambda _: None, plain_lists=True) == want
