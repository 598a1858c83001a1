"""Row filters given on the command line: one value per flag, never split, or JSON for lists and numbers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any


def parse_where(items: Sequence[str] | None, json_text: str | None = None) -> dict[str, Any]:
    """``--where`` flags and ``--where-json`` -> ``{column: value or [values]}``.

    Each ``--where COLUMN=VALUE`` holds exactly one value, everything after the first ``=`` (commas and spaces
    included: ``--where "city=Seoul, Korea"``; ``--where city=`` is the empty string); repeating a column gives
    a list (``IN``). ``--where-json
    '{"city": ["Seoul, Korea", "Busan"], "score": 3}'`` gives lists and numbers at once. Values are cast to
    their column's type by the query; one that does not cast is an error naming the column.
    """
    where: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if key not in where:
            where[key] = value
        else:
            current = where[key] if isinstance(where[key], list) else [where[key]]
            where[key] = current + (value if isinstance(value, list) else [value])

    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():  # an empty value is the empty string
            raise ValueError(f"--where expects COLUMN=VALUE, got {item!r}")
        add(key.strip(), value)
    if json_text:
        try:
            doc = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--where-json is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("--where-json must be an object {column: value or [values]}")
        for key, value in doc.items():
            add(key, value)
    return where


def parse_columns(items: Sequence[str] | None, available: Callable[[], Sequence[str]]) -> list[str]:
    """``--columns`` flags -> column names, one column per flag (repeatable).

    A flag holding a comma is still read as a comma-separated list (the old form), unless its whole text is
    the name of a column of the selection: an existing column named verbatim wins, so a column whose name
    holds a comma can always be chosen (``--columns "a,b"``). ``available`` gives the selection's columns
    and is only called when some flag holds a comma.
    """
    names: list[str] = []
    existing: set[str] | None = None
    for item in items or []:
        if "," in item:
            if existing is None:
                existing = set(available())
            if item not in existing:
                names.extend(part.strip() for part in item.split(",") if part.strip())
                continue
        names.append(item)
    return list(dict.fromkeys(names))
