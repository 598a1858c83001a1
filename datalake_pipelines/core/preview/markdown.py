"""Markdown that user data cannot turn into markup: the escape of the contact sheet's captions, and the small
table of a ``catalog_partition`` materialization's first rows (metadata ``preview``).

The Dagster UI renders metadata Markdown (images included: ``![t](http://...)`` in a caption would load a
remote image on every page view), so every cell is escaped, flattened to one line and truncated, and the table
keeps at most :data:`MAX_COLUMNS` columns (a 2,000-column partition made a 1 MB entry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_COLUMNS = 12
CELL_CHARS = 60


def md_escape(text: str) -> str:
    """Text safe in a Markdown table cell: no pipes, no markup (links, images, emphasis, code), no raw HTML."""
    for ch in "\\|*_`[]<>#!":
        text = text.replace(ch, "\\" + ch)
    return text


def md_cell(value: Any, limit: int = CELL_CHARS) -> str:
    """``value`` as one escaped line of at most ``limit`` characters of text (``...`` when cut)."""
    text = "" if value is None else " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return md_escape(text)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], max_columns: int = MAX_COLUMNS) -> str:
    """A Markdown table of ``rows`` over the first ``max_columns`` of ``columns`` (a last line says how many more
    there are); cells are :func:`md_cell`."""
    shown = list(columns)[:max_columns]
    lines = ["| " + " | ".join(md_cell(c) for c in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(md_cell(r.get(c)) for c in shown) + " |" for r in rows]
    if len(columns) > len(shown):
        lines.append(f"\n{len(columns) - len(shown)} more columns not shown (see dagster/column_schema)")
    return "\n".join(lines)
