"""Figures with units, for metadata and reports: human-readable byte sizes and ratios as percentages.

One place for the rule so every asset (``catalog_partition``, ``duckdb_catalog``, ...) prints the same way:
a size is shown as ``"213.3 kB"`` (decimal units, as ``humanize.naturalsize`` writes them) next to the raw
byte count (kept as an int for Dagster's plots); a ratio is a percentage rounded to two decimals.
"""

from __future__ import annotations

import humanize

PERCENT_DIGITS = 2


def format_bytes(size: int | float | None) -> str:
    """``213263`` -> ``"213.3 kB"``; decimal units (kB = 1000 B) like ``du --si`` and S3's console; ``None`` -> ``""``.

    ``humanize.naturalsize`` is used rather than our own loop: it handles 0/1 byte wording and every unit up to
    ``YB``. Raises ``ValueError`` for a negative size (a byte count is never negative: it would be a bug).
    """
    if size is None:
        return ""
    if size < 0:
        raise ValueError(f"a byte count cannot be negative: {size}")
    return humanize.naturalsize(size)


def percent(part: int | float, whole: int | float, digits: int = PERCENT_DIGITS) -> float:
    """``part / whole`` as a percentage rounded to ``digits`` decimals (``12.34``); ``0.0`` when ``whole`` is 0."""
    return round(100.0 * part / whole, digits) if whole else 0.0


def format_percent(value: float, digits: int = PERCENT_DIGITS) -> str:
    """A percentage (already x100) as text with its unit: ``12.3456`` -> ``"12.35 %"``."""
    return f"{value:.{digits}f} %"
