"""The catalog change log: which partitions a writer took, in order, so a refresh reads those instead of walking all.

Every writer of a catalog partition (an ingest's commit, a compaction, a delete) holds the partition lock
(:func:`partition_writer`); once it has the lock, and before it changes a file, it adds an entry naming the
partition to ``logs/changes/``. A ``catalog.duckdb`` refresh (``catalog/refresh.py``) reads the entries after the
last one it read and looks again at those partitions only: at a lake of 10,000 partitions, a refresh after one
ingest costs what one partition costs, not a walk of 10,000 folders (round trips each on a NAS).

Why our own: this is the lake's own bookkeeping, and it has to live in the lake (a NAS shared by several hosts,
no database assumed: the SQLite hash index is refused on a network file system). The format:

- ``logs/changes/ID``: a uuid made with the log; a refresh remembers it, so a log deleted and started again is
  never read as the continuation of the old one.
- ``logs/changes/<seq // 10000>/<seq>.json`` (zero-padded): ``{"partitions": [key], "at", "host", "pid"}``.
  Numbers have no gaps and follow creation order: an entry is written whole to a temporary file, then
  hard-linked at the first free number after ``HEAD`` (``link`` fails when the name exists, atomically, on NFS
  too). Every number below the newest exists, so a writer's first free number is always the newest plus one.
- ``logs/changes/HEAD``: a hint, the newest number a writer linked; it only moves forward (a stale hint costs a
  few more probes). A writer that finds it lost lists the newest folder instead; a reader whose cursor is past it
  (writers went back below the cursor) cannot follow the log.
- A reader that cannot follow the log (another ``ID``, an entry missing or damaged, the entry at its cursor gone
  or another one: a log wiped or restored) links an *anchor* entry naming no partition, walks every partition,
  and keeps the anchor as its cursor.

Entries are pruned a folder of 10,000 at a time, once a refresh has read past the whole folder and its newest
entry is two days old (:func:`prune_changes`); any other reader whose cursor falls into them finds a number
missing below ``HEAD`` and walks every partition once.

A writer killed after its entry and before its last change leaves the entry: the refresh treats a partition whose
lock is still held as *in progress* and looks at it again on each refresh until the lock is free (a killed
process's lock is freed by the kernel), so its final state is read whatever happened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..storage.files import utc_now_iso
from . import keys
from .layout import LakeLayout, PartitionRef
from .locks import exclusive_lock

PER_FOLDER = 10_000
KEEP_SECONDS = 2 * 86_400  # a refresh whose cursor fell into pruned entries walks once: costs time, never a change


def _root(layout: LakeLayout) -> Path:
    return layout.base / keys.CHANGES


def _entry(root: Path, seq: int) -> Path:
    return root / f"{seq // PER_FOLDER:08d}" / f"{seq:012d}.json"


def _link_new(tmp: Path, target: Path) -> bool:
    """Hard-link ``tmp`` at ``target``; False when ``target`` exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    return True


def _temp(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.write_text(text, encoding="utf-8")
    return tmp


def log_identity(layout: LakeLayout) -> str:
    """The log's uuid, made (once, whoever is first) when the log has none."""
    root = _root(layout)
    with contextlib.suppress(FileNotFoundError):
        if found := (root / "ID").read_text(encoding="utf-8").strip():
            return found
    tmp = _temp(root, uuid.uuid4().hex)
    try:
        _link_new(tmp, root / "ID")  # the loser of a race reads the winner's, written whole before its link
    finally:
        tmp.unlink(missing_ok=True)
    return (root / "ID").read_text(encoding="utf-8").strip()


def _head(root: Path) -> int | None:
    """The hint; None when it is missing or unreadable."""
    try:
        return max(0, int((root / "HEAD").read_text(encoding="ascii")))
    except (OSError, ValueError):
        return None


def _newest_listed(root: Path) -> int:
    """The newest entry's number by listing (the newest folder, then its files): what a writer starts from when
    the hint is lost, since with old folders pruned, probing from 1 would land below entries readers have read."""
    with contextlib.suppress(FileNotFoundError):
        for folder in sorted((p for p in root.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True):
            numbers = [int(f.name[:-5]) for f in folder.iterdir() if f.name.endswith(".json") and f.name[:-5].isdigit()]
            if numbers:
                return max(numbers)
    return 0


def record_write(layout: LakeLayout, refs: Iterable[PartitionRef]) -> int:
    """Add an entry naming ``refs`` (the caller holds their locks and has changed nothing yet); return its number."""
    return _append(layout, {"partitions": sorted({r.key for r in refs})})[0]


def _append(layout: LakeLayout, doc: dict) -> tuple[int, str]:
    """Link ``doc`` (plus when, where, a token) at the first free number; return (number, token)."""
    root = _root(layout)
    log_identity(layout)
    token = uuid.uuid4().hex
    doc = {**doc, "at": utc_now_iso(), "host": socket.gethostname(), "pid": os.getpid(), "token": token}
    tmp = _temp(root, json.dumps(doc))
    try:
        head = _head(root)
        seq = (head if head is not None else _newest_listed(root)) + 1
        while not _link_new(tmp, _entry(root, seq)):
            seq += 1
    finally:
        tmp.unlink(missing_ok=True)
    if seq > (_head(root) or 0):  # the hint only moves forward (two writers may still cross, rarely: harmless)
        os.replace(_temp(root, str(seq)), root / "HEAD")
    return seq, token


@contextlib.contextmanager
def partition_writer(layout: LakeLayout, ref: PartitionRef, timeout: float = 600.0) -> Iterator[None]:
    """Hold ``ref``'s partition lock (:class:`~.locks.LockTimeout` after ``timeout`` s) and record the write in
    the change log, for the block: what every writer of a catalog partition takes."""
    with exclusive_lock(layout.partition_lock(ref), timeout=timeout):
        record_write(layout, [ref])
        yield


def writer_active(layout: LakeLayout, key: str) -> bool:
    """Whether a writer holds the lock of partition ``key`` now (tested with a shared lock taken and given back at
    once; a killed writer's lock is free)."""
    try:
        fd = os.open(layout.partition_lock(PartitionRef.parse(key)), os.O_RDONLY)
    except (FileNotFoundError, ValueError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing gives the shared lock back
    return False


@dataclass
class ChangesRead:
    """What :func:`read_changes` found: ``identity``, ``seq`` and ``token`` are the cursor to keep; ``partitions``
    the keys named by the entries read; ``complete`` is False when the entries after the cursor cannot be known
    (another log, a log gone back, entries missing or damaged: the caller must walk every partition)."""

    identity: str
    seq: int
    token: str | None = None
    partitions: set[str] = field(default_factory=set)
    complete: bool = True


class DamagedEntry(ValueError):
    """An entry that is not what a writer writes (garbled, or a partition key that is none)."""


def _read_entry(root: Path, seq: int) -> tuple[list[str], str | None]:
    """(partition keys, token) of entry ``seq``; FileNotFoundError when it is not written yet, DamagedEntry."""
    try:
        doc = json.loads(_entry(root, seq).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DamagedEntry(f"entry {seq}: {exc}") from None
    keys_ = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(keys_, list) or not (keys_ or doc.get("anchor") is True):
        raise DamagedEntry(f"entry {seq} names no partition")
    for key in keys_:
        try:
            PartitionRef.parse(key if isinstance(key, str) else "")
        except ValueError:
            raise DamagedEntry(f"entry {seq} names {key!r}, not a partition") from None
    token = doc.get("token")
    return keys_, token if isinstance(token, str) else None


def _restart(layout: LakeLayout, identity: str) -> ChangesRead:
    """``complete=False``: the reader cannot follow the log and walks every partition. Its cursor is a new anchor
    entry (no partition) linked before the walk: every write after it is read next time, and a damaged or
    missing entry before it is never read again."""
    seq, token = _append(layout, {"partitions": [], "anchor": True})
    return ChangesRead(identity, seq, token, complete=False)


def read_changes(layout: LakeLayout, identity: str | None, after: int | None, token: str | None = None) -> ChangesRead:
    """The entries after number ``after`` of the log ``identity`` (the cursor of the previous read, whose entry
    held ``token``; None: none), read until the first number not written yet (one file read per entry: the cost
    follows the changes). The entry at ``after`` is read again: gone or another one, the log went back (wiped
    but its ``ID`` kept, or restored from a backup) and the read is incomplete."""
    root = _root(layout)
    current = log_identity(layout)
    head = _head(root) or 0
    if identity != current or after is None or after < 0:
        return _restart(layout, current)
    if after > 0 and token is not None:
        try:
            if _read_entry(root, after)[1] != token:
                return _restart(layout, current)
        except (FileNotFoundError, DamagedEntry):
            return _restart(layout, current)
    read = ChangesRead(current, after, token)
    seq = after + 1
    while True:
        try:
            names, read.token = _read_entry(root, seq)
        except FileNotFoundError:
            break
        except DamagedEntry:  # what it named is unknown
            return _restart(layout, current)
        read.partitions.update(names)
        read.seq = seq
        seq += 1
    if read.seq < head:  # entries the hint says exist are missing (removed by hand): unknown changes
        return _restart(layout, current)
    if head < after:  # writers went back below the cursor (the hint lowered or lost by hand): they are not read
        return _restart(layout, current)
    return read


def prune_changes(layout: LakeLayout, read_up_to: int, keep_seconds: float = KEEP_SECONDS) -> int:
    """Remove the folders of entries whose numbers are all below ``read_up_to`` (what a refresh has read; its own
    entry stays, the refresh reads it again to check the log did not go back) and
    that nothing was added to for ``keep_seconds``; return how many folders went. One listing of the folders of
    the log (a hundred at a million entries)."""
    root = _root(layout)
    now, removed = time.time(), 0
    with contextlib.suppress(FileNotFoundError):
        for folder in root.iterdir():
            if folder.name.startswith(".tmp-"):  # left by a writer killed between writing and linking
                with contextlib.suppress(FileNotFoundError):
                    if now - folder.stat().st_mtime >= keep_seconds:
                        folder.unlink()
                continue
            if not (folder.is_dir() and folder.name.isdigit()) or (int(folder.name) + 1) * PER_FOLDER - 1 >= read_up_to:
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - folder.stat().st_mtime >= keep_seconds:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
    return removed
