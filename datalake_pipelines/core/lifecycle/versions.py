"""Catalog versions: one record per materialization of a partition (ingest, rebuild, delete), on either backend.

Each version is one immutable object ``logs/versions/<version-id>.json``: ``{"version_id", "partition",
"action", "time" (ISO 8601 UTC), "time_ts" (Unix seconds), "rows", "files": [{"key", "size"}], "detail"}``, written
right after the partition's files are published. One object per version (not a list in ``_metadata.json``) means
no read-modify-write race between writers and no history lost when a deletion drops the partition's folder; it is
never trimmed (records are a few hundred bytes).

A version id is ``v<YYYYmmddTHHMMSSffffff>Z-<8 hex>``: it sorts by time and carries its time, so
``as_of=<version id>`` means "the catalog at that version's time" (:func:`version_time`).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow.parquet as pq

from ..errors import DatalakeError
from ..lake import keys
from ..lake.layout import PartitionRef
from ..storage.backends import Storage

VERSIONS = f"{keys.LOGS}/versions"
VERSION_ID = re.compile(r"v(\d{8}T\d{12})Z-[0-9a-f]{8}")


class UnknownVersionError(DatalakeError, ValueError):
    """An ``as_of`` or ``--partition`` names a catalog version the lake never recorded."""


def new_version_id(now: datetime) -> str:
    return f"v{now.astimezone(timezone.utc):%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def version_key(version_id: str) -> str:
    return f"{VERSIONS}/{version_id}.json"


def _rows(storage: Storage, keys_: list[str]) -> int:
    fs, root = storage.arrow()
    total = 0
    for key in keys_:
        with fs.open_input_file(f"{root}/{key}") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def record_version(
    storage: Storage, ref: PartitionRef, action: str, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record the partition as it is now (its published Parquet files, their rows) as a new version; return the
    record. ``action`` is ``ingest``, ``rebuild``, ``delete`` or ``drop`` (the partition went: no files)."""
    now = datetime.now(timezone.utc)
    prefix = keys.partition(ref) + "/"
    files = sorted(
        (
            o
            for o in storage.list(keys.partition(ref))
            if o.key.endswith(".parquet") and "/" not in o.key[len(prefix) :]
        ),
        key=lambda o: o.key,
    )
    files = [o for o in files if not o.key.rsplit("/", 1)[-1].startswith((".", "_"))]
    version_id = new_version_id(now)
    doc: dict[str, Any] = {
        "version_id": version_id,
        "partition": ref.key,
        "action": action,
        "time": now.isoformat(timespec="microseconds"),
        "time_ts": now.timestamp(),
        "rows": _rows(storage, [o.key for o in files]),
        "files": [{"key": o.key, "size": o.size} for o in files],
        "detail": detail or {},
    }
    storage.write_bytes(version_key(version_id), json.dumps(doc, indent=2, default=str).encode())
    return doc


def list_versions(storage: Storage, partition: str | None = None) -> list[dict[str, Any]]:
    """Every recorded version (of ``partition`` ``P/D/T/V`` when given), oldest first; unreadable records are
    skipped."""
    out = []
    for obj in storage.list(VERSIONS):
        if not obj.key.endswith(".json"):
            continue
        try:
            doc = json.loads(storage.read_bytes(obj.key))
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(doc, dict) and (partition is None or doc.get("partition") == partition):
            out.append(doc)
    return sorted(out, key=lambda d: str(d.get("version_id")))


def version_time(storage: Storage, version_id: str) -> datetime:
    """The time of version ``version_id`` (UTC). UnknownVersionError when the lake has no such record."""
    match = VERSION_ID.fullmatch(str(version_id))
    if not match or not storage.exists(version_key(version_id)):
        raise UnknownVersionError(f"unknown catalog version {version_id!r}; list them with `datalake catalog versions`")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
