"""Text search over catalog rows as one DuckDB query: the SQL that :meth:`.query.DuckDBClient.plan_search` runs.

Two modes: ``contains`` (case-insensitive) and ``regex`` (an RE2 pattern), over a text column or over the values
at a JSON path in it. Each row that matches gets a ``matched_snippet`` of :data:`SNIPPET_CONTEXT` characters
either side of its first match. The search text and the JSON path are bound parameters, never spliced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from .query_sql import TEXT_TYPES, check_columns, limit_sql, quote_identifier, where_sql

SNIPPET_CONTEXT = 40
SEARCH_MODES = ("contains", "regex")


def check_search(text: str, json_path: str | None, mode: str) -> None:
    """Refuse (``ValueError``) an unknown ``mode``, an empty or non-string ``text`` and a ``json_path`` that
    does not start with ``$``."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; use one of {SEARCH_MODES}")
    if not isinstance(text, str) or not text:
        raise ValueError("search text must be a non-empty string")
    if json_path is not None and not (isinstance(json_path, str) and json_path.startswith("$")):
        raise ValueError(f"invalid JSON path {json_path!r}: it must start with '$', e.g. $.words[*].text")


def search_sql(
    con: duckdb.DuckDBPyConnection,
    column: str,
    text: str,
    json_path: str | None,
    mode: str,
    schema: dict[str, str],
    selected: Sequence[str],
    source: str,
    params: dict[str, Any],
    where: dict[str, Any] | None = None,
    limit: int | None = None,
) -> str:
    """The query returning the ``selected`` columns plus ``matched_snippet`` of the rows of ``source`` whose
    ``column`` (DuckDB type in ``schema``: text or JSON) matches ``text``; adds its parameters to ``params``.

    ``ValueError`` for a column that is missing or not text, or an invalid regular expression."""
    check_columns([column], schema)
    if schema[column] not in TEXT_TYPES:
        raise ValueError(f"column {column!r} has type {schema[column]}; text search needs a text/JSON column")
    matches: Callable[[str], str]
    if mode == "regex":
        check_regex(con, text)
        params["pattern"] = text

        def matches(x: str) -> str:
            return f"regexp_matches({x}, $pattern)"

        locate = "strpos(__match, regexp_extract(__match, $pattern))", "length(regexp_extract(__match, $pattern))"
    else:
        # Both sides are folded by DuckDB's lower() (the term once, here; the column per row): Python's
        # str.lower differs (it turns 'İ' into 'i' plus a combining dot, DuckDB into 'i'), and then a term
        # never matches its own text. DuckDB's lower maps code point to code point, so a position found
        # in the folded text is the position in the original text the snippet is cut from.
        params["needle"] = con.execute("SELECT lower($t)", {"t": text}).fetchall()[0][0]

        def matches(x: str) -> str:
            return f"contains(lower({x}), $needle)"

        locate = "strpos(lower(__match), $needle)", "length($needle)"
    hay = quote_identifier(column)
    if json_path:
        params["json_path"] = json_path
        values = f"try(json_extract_string({hay}, $json_path))"
        if "*" not in json_path:
            values = f"[{values}]"
        match, prefilter = f"list_filter({values}, lambda v: {matches('v')})[1]", f"{hay} IS NOT NULL"
        if mode == "contains" and literal_in_json(params["needle"]):
            # A cheap scan filter before the per-row JSON extraction: a value holding the term holds it
            # literally in the raw JSON text, unless that text escapes something (any backslash).
            prefilter += f" AND (contains(lower({hay}), $needle) OR contains({hay}, '\\'))"
    else:  # the match itself is the scan's filter, so non-matching rows are dropped in the scan
        match, prefilter = hay, matches(hay)
    condition = where_sql(where, schema, params, con)
    start = f"greatest(__pos - {SNIPPET_CONTEXT}, 1)"
    return f"""
        SELECT * EXCLUDE (__match, __pos, __len),
               substr(__match, {start}, __pos - {start} + __len + {SNIPPET_CONTEXT}) AS matched_snippet
        FROM (
            SELECT *, {locate[0]} AS __pos, {locate[1]} AS __len FROM (
                SELECT {", ".join(map(quote_identifier, selected))}, {match} AS __match
                FROM {source}
                WHERE {prefilter}{" AND " + condition if condition else ""}
            ) WHERE __match IS NOT NULL
        ){limit_sql(limit)}"""


def check_regex(con: duckdb.DuckDBPyConnection, pattern: str) -> None:
    """``ValueError`` naming ``pattern`` when DuckDB's RE2 cannot compile it."""
    try:
        con.execute("SELECT regexp_matches('', $p)", {"p": pattern}).fetchall()
    except duckdb.Error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {str(exc).splitlines()[0]}") from None


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
