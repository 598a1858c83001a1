"""Row filters given on the command line: one value per flag, never split, or JSON for lists and numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def parse_where(items: Sequence[str] | None, json_text: str | None = None) -> dict[str, Any]:
    """``--where`` flags and ``--where-json`` -> ``{column: value or [values]}``.

    Each ``--where COLUMN=VALUE`` holds exactly one value, everything after the first ``=`` (commas and spaces
    included: ``--where "city=Seoul, Korea"``); repeating a column gives a list (``IN``). ``--where-json
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
        if not sep or not key.strip() or not value:
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
