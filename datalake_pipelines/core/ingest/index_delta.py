"""The answer of a hash-index journal reader (``index_journal.py``, ``pg_journal.py``); see ``index_changes.py``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IndexChanges:
    """``cursor``: JSON-able, where the next read starts (it names the index it belongs to). ``full``: ``rows`` is
    the whole index (replace the copy). Otherwise ``removed`` (sha256 keys updated or deleted: drop them from the
    copy first) and ``rows`` (batches of rows in ``hash_index.COLUMNS`` order: the current rows of every key
    changed since the cursor that still exists)."""

    cursor: dict[str, Any]
    full: bool
    rows: Iterable[list[tuple]]
    removed: list[str] = field(default_factory=list)
