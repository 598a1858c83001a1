"""One walk over nested Arrow types (maps, structs, lists), for every rule that rewrites a type's parts.

The lake has several such rules (float16 widened for DuckDB's Arrow scan, times as integers for JSON, maps as
key/value lists for HuggingFace ``datasets`` ...); each is a small ``node`` function over one level, and this
module rebuilds the nesting around it, so the nesting is walked the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

Node = Callable[[pa.DataType], "pa.DataType | None"]


def is_list_type(t: pa.DataType) -> bool:
    """``list``, ``large_list`` or ``fixed_size_list``: the list kinds the catalog stores."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def rebuild_type(t: pa.DataType, node: Node, plain_lists: bool = False) -> pa.DataType:
    """``t`` rebuilt top-down with ``node`` asked first at every level.

    A type ``node`` returns replaces that level whole (its children are not visited: ``node`` calls
    :func:`rebuild_type` itself to go on); ``None`` keeps the level's kind: a map, struct or list is rebuilt from
    its rebuilt children (field names, nullability and list sizes kept; ``plain_lists``: every list kind as
    ``list``, the only one pyarrow's JSON reader builds), and any other type is kept as it is."""
    replaced = node(t)
    if replaced is not None:
        return replaced
    if isinstance(t, pa.MapType):
        key = rebuild_type(t.key_type, node, plain_lists)
        return pa.map_(key, t.item_field.with_type(rebuild_type(t.item_type, node, plain_lists)))
    if pa.types.is_struct(t):
        return pa.struct(
            [t.field(i).with_type(rebuild_type(t.field(i).type, node, plain_lists)) for i in range(t.num_fields)]
        )
    if is_list_type(t):
        value = t.value_field.with_type(rebuild_type(t.value_type, node, plain_lists))
        if plain_lists:
            return pa.list_(value)
        if pa.types.is_fixed_size_list(t):
            return pa.list_(value, t.list_size)
        return pa.large_list(value) if pa.types.is_large_list(t) else pa.list_(value)
    return t
