"""The first rows of a partition as a small table for people: useful columns first, long values cut.

Catalog rows hold the user's columns, then per stored file its path and facts (``<col>_sha256``, ``_width``,
``_height``, ``_format``, ``_mode``, ``_orientation``, ``_phash`` or ``_size``), then the meta fields and
bookkeeping (``batch_id``, ``ingested_at``, ``row_hash``). In schema order a reader sees 64-character hashes
before the text, so :func:`preview_columns` orders them: the user's own columns and meta fields (ids, labels,
text), the file paths, the file facts, the bookkeeping, and the hashes last.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..catalog.parts import BATCH_ID, INGESTED_AT, ROW_HASH, file_fields, image_fields
from ..neardup.phash import to_hex

MAX_COLUMNS = 24  # a 2,000-column partition must not make a megabyte of metadata
MAX_CHARS = 200  # per cell
JS_SAFE_INT = 2**53 - 1

HASH_SUFFIXES = ("sha256", "phash")
_PROBE = "x"
FACT_SUFFIXES = tuple(
    dict.fromkeys(
        f.name[len(_PROBE) + 1 :]
        for f in image_fields(_PROBE) + file_fields(_PROBE)
        if f.name != _PROBE and f.name[len(_PROBE) + 1 :] not in HASH_SUFFIXES
    )
)
Cell = str | int | float | bool | None


def file_columns(names: Sequence[str]) -> list[str]:
    """The columns holding a stored file's path: ``<col>`` where ``<col>_sha256`` is a column too."""
    present = set(names)
    return [n for n in names if f"{n}_sha256" in present]


def _rank(name: str, files: set[str]) -> int:
    if name in files:
        return 1
    base, _, suffix = name.rpartition("_")
    if name == ROW_HASH or (base in files and suffix in HASH_SUFFIXES):
        return 4
    if base in files and suffix in FACT_SUFFIXES:
        return 2
    if name in (BATCH_ID, INGESTED_AT):
        return 3
    return 0


def preview_columns(names: Sequence[str], limit: int = MAX_COLUMNS) -> list[str]:
    """``names`` reordered for reading (see the module docstring; schema order within each group), the first
    ``limit`` of them."""
    files = set(file_columns(names))
    ordered = sorted(names, key=lambda n: _rank(n, files))  # sorted() is stable: schema order within a group
    return ordered[:limit]


def cell(value: Any, limit: int = MAX_CHARS) -> Cell:
    """A value as a table cell: numbers and booleans as they are (integers past 2**53 as text), times in ISO 8601,
    anything else as text (nested values as JSON, bytes in hex, NaN and infinities as words) cut to ``limit``
    characters with ``...``."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_SAFE_INT:
        return str(value)  # the UI reads numbers as JavaScript doubles: a 64-bit pHash would lose digits
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:  # text, NaN/inf (not JSON), Decimal, UUID ...
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview_records(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Cell]]:
    """``rows`` restricted to ``columns`` (in that order), every value a :func:`cell`; a ``<col>_phash`` as 16 hex
    digits, as the near-duplicate reports show it (the catalog stores the 64 bits as a signed int64)."""
    phash = {c for c in columns if c.endswith("_phash")}
    return [{c: _phash_cell(r.get(c)) if c in phash else cell(r.get(c)) for c in columns} for r in rows]


def _phash_cell(value: Any) -> Cell:
    return to_hex(value) if isinstance(value, int) and not isinstance(value, bool) else cell(value)
