"""Column names checked the way the query engines compare them, before anything is stored.

DuckDB and Athena/Glue compare identifiers case-insensitively (DuckDB also struct field names), and DuckDB's
``hive_partitioning`` replaces a file column named like a partition key with the partition value. So a batch is
refused, with the clash named and a rename suggested, when among its catalog columns (the data columns, the
columns generated for image/file columns, the meta fields, the partition keys and the bookkeeping columns)
two names are equal after Unicode case folding (``str.casefold``), or two fields of one struct are.

Names are otherwise kept unchanged, with two exceptions refused the same way: the empty name, and names holding
control characters (U+0000-U+001F, U+007F-U+009F), which DuckDB's SQL text and CSV/JSON exports cannot carry
faithfully. Athena tables take only ``[A-Za-z0-9_]`` names; a column with any other name stays in the catalog and
in DuckDB, and is left out of the Athena table and reported (see ``core/athena.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pyarrow as pa

from ..catalog.parts import BATCH_ID, INGESTED_AT, PARTITION_COLUMNS, ROW_HASH, file_fields, image_fields
from ..errors import ValidationError

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def catalog_names(
    schema: pa.Schema, image_columns: Iterable[str], file_columns: Iterable[str], meta: Iterable[str]
) -> dict[str, str]:
    """Every name the batch's catalog rows will have, mapped to where it comes from."""
    origin: dict[str, str] = {}
    for name in PARTITION_COLUMNS:
        origin[name] = "partition key"
    for name in (BATCH_ID, INGESTED_AT, ROW_HASH):
        origin[name] = "bookkeeping column"
    for col in image_columns:
        for f in image_fields(col)[1:]:
            origin[f.name] = f"column generated for image column {col!r}"
    for col in file_columns:
        for f in file_fields(col)[1:]:
            origin[f.name] = f"column generated for file column {col!r}"
    for key in meta:
        origin.setdefault(key, "meta field")
    return origin


def check_column_names(
    schema: pa.Schema,
    image_columns: Iterable[str] = (),
    file_columns: Iterable[str] = (),
    meta: Iterable[str] = (),
    where: str = "the data",
) -> None:
    """Raise :class:`ValidationError` naming every clash (case-insensitive) or unusable name in ``schema``."""
    problems: list[str] = []
    fixed = catalog_names(schema, image_columns, file_columns, meta)
    folded_fixed = {name.casefold(): (name, what) for name, what in fixed.items()}
    seen: dict[str, str] = {}
    for name in schema.names:
        problem = _bad_name(name)
        if problem:
            problems.append(f"column {name!r} {problem}")
            continue
        key = name.casefold()
        if key in seen:
            problems.append(f"columns {seen[key]!r} and {name!r} differ only by case")
        elif key in folded_fixed:
            other, what = folded_fixed[key]
            same = "is" if other == name else f"collides case-insensitively with {other!r}, which is"
            problems.append(f"column {name!r} {same} a {what}")
        seen.setdefault(key, name)
    for f in schema:
        problems += _struct_problems(f.name, f.type)
    for key in meta:
        problem = _bad_name(key)
        if problem:
            problems.append(f"meta field {key!r} {problem}")
    if problems:
        raise ValidationError(
            f"{where}: column names the lake cannot store unchanged: {'; '.join(problems)}. Rename them "
            "(e.g. df.rename(columns={...}) or pyarrow Table.rename_columns) so that names differ beyond letter "
            "case and avoid provider/dataset/task/variant, batch_id, ingested_at, row_hash, meta fields and the "
            "<image>_sha256/_width/_height/_format/_mode/_orientation/_phash, <file>_sha256/_size names"
        )


def _bad_name(name: str) -> str | None:
    if name == "":
        return "is empty"
    if CONTROL_CHARS.search(name):
        return "holds a control character"
    return None


def _struct_problems(path: str, t: pa.DataType) -> list[str]:
    problems: list[str] = []
    if pa.types.is_struct(t):
        seen: dict[str, str] = {}
        for i in range(t.num_fields):
            f = t.field(i)
            bad = _bad_name(f.name)
            if bad:
                problems.append(f"struct field {path}.{f.name!r} {bad}")
            elif f.name.casefold() in seen:
                first = seen[f.name.casefold()]
                problems.append(f"struct fields {path}.{first!r} and {path}.{f.name!r} differ only by case")
            seen.setdefault(f.name.casefold(), f.name)
            problems += _struct_problems(f"{path}.{f.name}", f.type)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        problems += _struct_problems(f"{path}[]", t.value_type)
    elif pa.types.is_map(t):
        problems += _struct_problems(f"{path}{{value}}", t.item_type)
    return problems
