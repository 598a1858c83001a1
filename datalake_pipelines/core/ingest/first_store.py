"""Recording new content in the hash index when another writer may record the same content at the same moment.

Two hosts (or two chunks of one batch) that miss the same content in the index both publish it and both insert
its entry; the insert is idempotent (``ON CONFLICT DO NOTHING``, SQLite's ``INSERT OR IGNORE``), so one entry
wins. The loser must then catalogue the winner's asset, not its own: a row must point where the index points, or
the loser's asset is an orphan that GC deletes under a catalogued row. :func:`settle_new` does that swap before
the rows are written, and removes the loser's own copy when it published one under another path (another
provider or dataset: the path holds both). The index names a path only once its bytes exist, so the winner's
asset is there.
"""

from __future__ import annotations

from dataclasses import replace

from ..lake.layout import LakeLayout
from .asset_store import StoredFile
from .hash_index import HashIndex, IndexEntry


def settle_new(layout: LakeLayout, index: HashIndex, outcomes: list[StoredFile | None]) -> int:
    """Insert the entries of the new files among ``outcomes``; a file whose entry lost to another writer's gets
    the winning entry, and counts as deduplicated. Returns how many entries this call inserted."""
    new = [o for o in outcomes if o is not None and o.new and o.entry is not None]
    entries = [o.entry for o in new if o.entry is not None]
    added = index.add_many(entries)
    hashes = sorted({e.sha256 for e in entries})
    if added == len(hashes):  # every entry is ours: the usual case, no second query
        return added
    winners = index.get_many(hashes)
    removed: set[str] = set()
    for outcome in new:
        mine = outcome.entry
        won = winners.get(mine.sha256) if mine is not None else None
        if mine is None or won is None or won.path == mine.path:
            continue  # ours won, or the same path: the one asset either way
        if outcome.bytes_written and mine.path not in removed:
            layout.asset_path(mine.path).unlink(missing_ok=True)  # never in the index: nobody else points at it
            removed.add(mine.path)
        outcome.entry = _winner(won, mine)
        outcome.new, outcome.bytes_written = False, 0
    return added


def _winner(won: IndexEntry, mine: IndexEntry) -> IndexEntry:
    """The winning entry, with the pHash this writer computed when the winner's has none yet."""
    return won if won.phash is not None or mine.phash is None else replace(won, phash=mine.phash)


def settle_one(layout: LakeLayout, index: HashIndex, entry: IndexEntry, written: bool) -> IndexEntry:
    """:func:`settle_new` for one file (``data_file``): the entry that catalogues it (``entry`` or the winner)."""
    outcome = StoredFile(sha256=entry.sha256, entry=entry, new=True, bytes_written=int(written))
    settle_new(layout, index, [outcome])
    assert outcome.entry is not None
    return outcome.entry
