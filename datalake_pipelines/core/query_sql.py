"""SQL pieces of catalog queries: quoted identifiers, ``WHERE`` conditions with bound values, ``LIMIT``.

User values are never spliced into SQL: they are bound parameters. A value for a non-text column is cast to
the column's DuckDB type first (``TRY_CAST``, in the engine that runs the query), so a value that is not of
the column's type raises :class:`InvalidFilterValueError` naming the column, not a ``ConversionException``
in the middle of a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from .errors import CodedError

TEXT_TYPES = ("VARCHAR", "JSON")
INVALID_FILTER_VALUE = "invalid_filter_value"
UNFILTERABLE = ("STRUCT", "MAP", "[]", "UNION")


class InvalidFilterValueError(CodedError):
    """A ``where`` value cannot be cast to its column's type."""

    code = INVALID_FILTER_VALUE


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_columns(columns: Sequence[str], schema: dict[str, str]) -> None:
    unknown = [c for c in columns if c not in schema]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))}; available columns: {', '.join(schema)}")


def cast_value(con: duckdb.DuckDBPyConnection, column: str, sql_type: str, value: Any) -> Any:
    """``value`` as a value of ``sql_type`` (text columns: unchanged), or :class:`InvalidFilterValueError`."""
    if sql_type in TEXT_TYPES or value is None:
        return value
    if any(marker in sql_type for marker in UNFILTERABLE):
        raise InvalidFilterValueError(f"column {column!r} has type {sql_type}; it cannot be filtered by value")
    try:
        cast = con.execute(f"SELECT TRY_CAST($v AS {sql_type})", {"v": value}).fetchall()[0][0]
    except duckdb.Error as exc:
        cast, detail = None, f" ({str(exc).splitlines()[0]})"
    else:
        detail = ""
    if cast is None:
        raise InvalidFilterValueError(f"column {column!r} has type {sql_type}; {value!r} is not a value of it{detail}")
    return cast


def where_sql(
    where: dict[str, Any] | None, schema: dict[str, str], params: dict[str, Any], con: duckdb.DuckDBPyConnection
) -> str:
    """``AND``-ed equality / ``IN`` conditions with every value cast to its column's type and bound."""
    if not where:
        return ""
    check_columns(list(where), schema)
    parts = []
    for i, (column, value) in enumerate(where.items()):
        ident = quote_identifier(column)
        if value is None:
            parts.append(f"{ident} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = [cast_value(con, column, schema[column], v) for v in value]
            names = [f"w{i}_{j}" for j in range(len(values))]
            params.update(zip(names, values))
            parts.append(f"{ident} IN ({', '.join('$' + n for n in names)})" if names else "false")
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


def literal_in_json(term: str) -> bool:
    """Whether every JSON value whose extracted text contains ``term`` has ``term`` literally in its raw JSON
    text (unless that text holds a backslash escape, checked separately).

    JSON always escapes quotes, backslashes and control characters (RFC 8259 section 7); DuckDB re-serializes
    extracted numbers and nested values (``1E2`` -> ``100.0``, whitespace between tokens dropped), so a term
    with digits, structural characters, or only number characters could match the extracted text alone.
    """
    if any(c in '"\\{}[]:,' or ord(c) < 0x20 or c.isdigit() for c in term):
        return False
    return any(c not in ".-+e " for c in term)
