"""What the staging queue holds: one entry per batch not yet done, with its state and the reason it is there.

States (``QueueEntry.state``):

- ``pending``: complete, claimed at the next claiming round;
- ``waiting``: a hand drop whose files changed less than ``quiet_seconds`` ago (``seconds_left`` until it is quiet);
- ``incomplete``: no usable ``_metadata.json`` (yet): on a local lake refused after ``grace_seconds`` without
  change, or once quiet when the manifest is readable but invalid; on S3 a prefix whose manifest is not uploaded;
- ``queued`` / ``running``: claimed, its run not started yet / started;
- ``failed``: its run failed it (``staging/failed/<job>/``, originals intact, ``error.json``);
- ``refused``: refused before any run (invalid manifest, unknown provider, a folder never made usable);
- ``quarantined``: rows rejected from a done batch, or files a hand drop did not use, kept in ``staging/failed/``.

:meth:`BaseLake.queue_snapshot <.protocol.BaseLake.queue_snapshot>` builds a :class:`QueueSnapshot` the same way
on both backends; the staging sensor reports it as an observation of the ``staging_queue`` asset and uses
:meth:`QueueSnapshot.summary` as its skip reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

STATES = ("pending", "waiting", "incomplete", "queued", "running", "failed", "refused", "quarantined")
REFUSED_MARK = "refused"  # error.json key (True) written when a batch is refused before any run
QUARANTINE_SUFFIXES = ("-rejected", "-unreferenced")
REASON_CHARS = 100


@dataclass(frozen=True)
class QueueEntry:
    """One batch: ``since`` is a UTC ISO 8601 time (staged, claimed or failed), ``seconds_left`` the seconds until
    it stops waiting (None when not waiting), ``path`` where it is (folder or ``s3://`` URI)."""

    job_id: str
    state: str
    partition: str | None = None
    reason: str = ""
    seconds_left: float | None = None
    run_id: str | None = None
    since: str = ""
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueueSnapshot:
    """Every batch of the queue at ``taken_at`` (Unix seconds); ``more_failed`` counts batches in
    ``staging/failed`` that were not read (beyond the snapshot's limit)."""

    entries: list[QueueEntry] = field(default_factory=list)
    more_failed: int = 0
    taken_at: float = 0.0

    def of(self, *states: str) -> list[QueueEntry]:
        """Entries in ``states``, newest ``since`` first."""
        return sorted((e for e in self.entries if e.state in states), key=lambda e: e.since, reverse=True)

    def counts(self) -> dict[str, int]:
        """Entries per state (every state present, 0 included); unread failed batches count as ``failed``."""
        counts = {state: 0 for state in STATES}
        for entry in self.entries:
            counts[entry.state] = counts.get(entry.state, 0) + 1
        counts["failed"] += self.more_failed
        return counts

    def fingerprint(self) -> str:
        """Changes when a batch arrives, leaves or changes state, run or reason (not when time passes)."""
        items = sorted((e.job_id, e.state, e.partition or "", e.run_id or "", e.reason) for e in self.entries)
        return hashlib.sha1(json.dumps([items, self.more_failed]).encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line saying what the queue waits for, e.g. ``2 batches waiting for quiet (8 s left); 1 refused:
        unknown provider 'acme'``; ``staging/pending is empty`` when nothing is held."""
        counts, parts = self.counts(), []
        if counts["pending"]:
            parts.append(f"{_batches(counts['pending'])} ready (claimed at the next tick)")
        if waiting := self.of("waiting"):
            left = min(e.seconds_left or 0.0 for e in waiting)
            parts.append(f"{_batches(len(waiting))} waiting for quiet ({left:.0f} s left)")
        if incomplete := self.of("incomplete"):
            first = incomplete[0]
            when = f", refused in {first.seconds_left:.0f} s" if first.seconds_left is not None else ""
            parts.append(f"{_batches(len(incomplete))} without a usable _metadata.json ({first.reason}{when})")
        if claimed := counts["queued"] + counts["running"]:
            parts.append(f"{_batches(claimed)} claimed ({counts['queued']} queued, {counts['running']} running)")
        for state in ("refused", "failed"):
            if counts[state]:
                latest = self.of(state)
                reason = f": {latest[0].reason}" if latest else ""
                parts.append(f"{counts[state]} {state}{reason}")
        return "; ".join(parts) or "staging/pending is empty"


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def short_reason(text: str) -> str:
    """The first clause of an error (up to ``;``, ``. `` or a line break), at most :data:`REASON_CHARS`."""
    first = re.split(r";|\. |\n", str(text).strip(), maxsplit=1)[0].strip()
    return first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 3] + "..."


def failed_entry(name: str, doc: dict[str, Any], path: str) -> QueueEntry:
    """The entry of folder ``staging/failed/<name>`` from its ``error.json`` ``doc`` ({} when unreadable)."""
    reason = short_reason(doc.get("error") or "(no error.json)")
    if name.endswith(QUARANTINE_SUFFIXES):
        state = "quarantined"
    elif doc.get(REFUSED_MARK) or _refused_before_run(doc):
        state = "refused"
    else:
        state = "failed"
    partition = doc.get("partition") if isinstance(doc.get("partition"), str) else None
    return QueueEntry(name, state, partition, reason, None, doc.get("run_id"), str(doc.get("failed_at") or ""), path)


def _refused_before_run(doc: dict[str, Any]) -> bool:
    """An ``error.json`` written before the refusal mark existed: triage wrote only the job id, error and time."""
    return bool(doc) and set(doc) <= {"job_id", "error", "failed_at"} and "run aborted" not in str(doc.get("error"))


def seconds_left(wait: float, elapsed: float) -> float:
    """``wait - elapsed``, never below 0 nor above ``wait``."""
    return max(0.0, min(wait, wait - elapsed))
