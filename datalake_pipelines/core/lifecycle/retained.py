"""Retained catalog files: what a deletion replaced, kept until GC's retention passes (so time travel can read them).

A deletion never destroys a catalog file. Before a partition is rewritten or removed, every catalog file of it
(its Parquet files and ``_metadata.json``) is copied to ``catalog_retained/<deletion-id>/provider=.../<name>``,
next to ``catalog_retained/<deletion-id>/deletion.json`` (who, what, when, counts), which is written first.
GC counts the assets those files reference as referenced, and purges a deletion's files once it is older than
the retention (``--retention``, default 7 days), its ``deletion.json`` last so an interrupted purge is redone.
Deletion ids start with the UTC time (``YYYYmmddTHHMMSSffffff-<8 hex>``), so they sort by time.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..lake import keys
from ..storage.backends import Storage

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0


def new_deletion_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def write_record(storage: Storage, deletion_id: str, doc: dict[str, Any]) -> None:
    storage.write_bytes(keys.deletion_record(deletion_id), json.dumps(doc, indent=2, default=str).encode())


@dataclass
class Retained:
    """One deletion's retained files: its id, when it happened (Unix seconds), its object keys and bytes."""

    deletion_id: str
    deleted_ts: float
    keys: list[str] = field(default_factory=list)
    bytes: int = 0


def list_retained(storage: Storage) -> list[Retained]:
    """Every deletion under ``catalog_retained/`` (one listing), oldest first. Its time is ``deleted_at_ts`` of
    its record, else (a record missing or unreadable) the newest modification time of its objects."""
    found: dict[str, Retained] = {}
    newest: dict[str, float] = {}
    for obj in storage.list(keys.RETAINED):
        deletion_id = obj.key[len(keys.RETAINED) + 1 :].split("/", 1)[0]
        entry = found.setdefault(deletion_id, Retained(deletion_id, 0.0))
        entry.keys.append(obj.key)
        entry.bytes += obj.size
        newest[deletion_id] = max(newest.get(deletion_id, 0.0), obj.modified.timestamp())
    for entry in found.values():
        try:
            doc = json.loads(storage.read_bytes(keys.deletion_record(entry.deletion_id)))
            entry.deleted_ts = float(doc["deleted_at_ts"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            entry.deleted_ts = newest[entry.deletion_id]
    return sorted(found.values(), key=lambda r: (r.deleted_ts, r.deletion_id))


def expired(storage: Storage, retention_seconds: float, now: float) -> list[Retained]:
    """The deletions older than ``retention_seconds`` at ``now`` (Unix seconds)."""
    return [r for r in list_retained(storage) if now - r.deleted_ts >= retention_seconds]


def purge(storage: Storage, retained: Retained) -> None:
    """Delete one deletion's retained files, its record last (an interrupted purge is redone by the next GC)."""
    record = keys.deletion_record(retained.deletion_id)
    storage.delete([k for k in retained.keys if k != record])
    storage.delete([record])
    remove_empty_dirs(storage, keys.retained(retained.deletion_id))


def remove_empty_dirs(storage: Storage, prefix: str) -> None:
    """On a local lake, remove the folders under ``prefix`` (itself included) that deleting files left empty; S3
    has no folders."""
    if storage.kind != "local":
        return
    root = Path(storage.uri) / prefix
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):  # not empty
            os.rmdir(dirpath)
