"""SQL pieces of catalog queries: quoted identifiers, ``WHERE`` conditions with bound values, ``LIMIT``.

User values are never spliced into SQL: they are bound parameters. A value for a non-text column is cast to
the column's DuckDB type first (``TRY_CAST``, in the engine that runs the query), so a value that is not of
the column's type raises :class:`InvalidFilterValueError` naming the column, not a ``ConversionException``
in the middle of a scan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb

from ..errors import CodedError

TEXT_TYPES = ("VARCHAR", "JSON")
INVALID_FILTER_VALUE = "invalid_filter_value"
UNFILTERABLE = ("STRUCT", "MAP", "[]", "UNION")
NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "UHUGEINT", "FLOAT", "DOUBLE",
)  # fmt: skip
# A temporal filter value is compared with its cast at the finest precision of the type's family, so a value
# with more digits than the column holds (``...00.1234567`` on a microsecond column) is refused, not truncated.
WIDE_TYPES = {
    "DATE": "TIMESTAMP_NS",
    "TIMESTAMP_S": "TIMESTAMP_NS",
    "TIMESTAMP_MS": "TIMESTAMP_NS",
    "TIMESTAMP": "TIMESTAMP_NS",
    "TIME": "TIME",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP WITH TIME ZONE",
}


class InvalidFilterValueError(CodedError):
    """A ``where`` value cannot be cast to its column's type."""

    code = INVALID_FILTER_VALUE


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_columns(columns: Sequence[str], schema: dict[str, str]) -> None:
    unknown = [c for c in columns if c not in schema]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))}; available columns: {', '.join(schema)}")


def _exact_number(value: Any) -> Decimal | None:
    """The exact number a filter value names (text parsed as a decimal literal), or None if it names none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the shortest decimal that identifies the float (repr), as a user wrote it
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if "_" not in value else None  # Decimal() accepts '1_000'; SQL does not
    return None


def _float_text(value: float, sql_type: str) -> Decimal:
    """The shortest decimal that identifies ``value`` as a float of ``sql_type`` (FLOAT is 32-bit)."""
    import numpy as np

    return Decimal(repr(float(value)) if sql_type == "DOUBLE" else str(np.float32(value)))


def cast_value(con: duckdb.DuckDBPyConnection, column: str, sql_type: str, value: Any) -> Any:
    """``value`` as a value of ``sql_type``, exactly, or :class:`InvalidFilterValueError`.

    A value is accepted only if casting it to the column's type and back gives the same value: ``3.5`` or
    ``"3.5"`` never matches an integer ``4`` (DuckDB's cast would round). Text columns take ``str`` only;
    ``BOOLEAN`` takes a Python ``bool`` or the text ``true``/``false`` (any case), and no other column takes a
    ``bool`` (no bool<->int). Numbers given as text are decimal literals; a float column compares the shortest
    decimal that identifies the float of its width (``0.1`` names the FLOAT ``0.1f``). Other types (dates,
    timestamps, ...) must cast back to the same value at nanosecond precision where DuckDB can hold it.
    """
    if value is None:
        return None

    def refuse(why: str = "") -> InvalidFilterValueError:
        return InvalidFilterValueError(
            f"column {column!r} has type {sql_type}; {value!r} ({type(value).__name__}) is not exactly a value of "
            f"it{why}"
        )

    if any(marker in sql_type for marker in UNFILTERABLE):
        raise InvalidFilterValueError(f"column {column!r} has type {sql_type}; it cannot be filtered by value")
    if sql_type in TEXT_TYPES:
        if not isinstance(value, str):
            raise refuse(" (a text column takes text values only)")
        return value
    if sql_type == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise refuse(" (a boolean column takes true/false only)")
    if isinstance(value, bool):
        raise refuse(" (a bool is not a number)")
    try:
        cast = con.execute(f"SELECT TRY_CAST($v AS {sql_type})", {"v": value}).fetchall()[0][0]
    except duckdb.Error as exc:
        raise refuse(f" ({str(exc).splitlines()[0]})") from None
    if cast is None:
        raise refuse()
    numeric = sql_type in NUMERIC_TYPES or sql_type.startswith("DECIMAL")
    if numeric:
        wanted = _exact_number(value)
        if wanted is None:
            raise refuse()
        if sql_type in ("FLOAT", "DOUBLE"):
            if wanted.is_nan() and math.isnan(cast):
                return cast
            got = Decimal(cast) if math.isinf(cast) else _float_text(cast, sql_type)
        else:
            got = Decimal(cast)
        if got != wanted:
            raise refuse(f" (it would be {cast!r})")
        return cast
    # other types: cast back at the widest precision DuckDB has for the type's family and compare there
    wide = WIDE_TYPES.get(sql_type)
    if wide is not None:
        same = con.execute(
            f"SELECT TRY_CAST($v AS {wide}) IS NULL OR TRY_CAST($v AS {wide}) = TRY_CAST(TRY_CAST($v AS {sql_type}) "
            f"AS {wide})",
            {"v": value},
        ).fetchall()[0][0]
        if not same:
            raise refuse(f" (it would be {cast!r})")
    return cast


def where_sql(
    where: dict[str, Any] | None, schema: dict[str, str], params: dict[str, Any], con: duckdb.DuckDBPyConnection
) -> str:
    """``AND``-ed equality / ``IN`` conditions with every value cast to its column's type and bound."""
    if where is not None and not isinstance(where, dict):
        raise ValueError(f"where must be a dict {{column: value or [values]}}, got {type(where).__name__} {where!r}")
    if not where:
        return ""
    check_columns(list(where), schema)
    parts = []
    for i, (column, value) in enumerate(where.items()):
        ident = quote_identifier(column)
        if value is None:
            parts.append(f"{ident} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = [cast_value(con, column, schema[column], v) for v in value if v is not None]
            names = [f"w{i}_{j}" for j in range(len(values))]
            params.update(zip(names, values))
            alternatives = [f"{ident} IN ({', '.join('$' + n for n in names)})"] if names else []
            if any(v is None for v in value):  # None in a list matches nulls, as a bare None does
                alternatives.append(f"{ident} IS NULL")
            parts.append(f"({' OR '.join(alternatives)})" if alternatives else "false")
        else:
            params[f"w{i}"] = cast_value(con, column, schema[column], value)
            parts.append(f"{ident} = $w{i}")
    return " AND ".join(parts)


def limit_sql(limit: int | None) -> str:
    if limit is None:
        return ""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    return f" LIMIT {limit}"
