"""Time travel: the catalog files and the time that give the catalog as it was at ``as_of``, on either backend.

The rule. Rows only enter the catalog with their ``ingested_at`` and only leave it by a deletion, which first
copies every catalog file of the partition to ``catalog_retained/<deletion-id>/`` (:mod:`.retained`). Compaction
and ``conform_parts`` rewrite part files but keep every row and its ``ingested_at`` (they drop exact duplicates
only, keeping the first: a row's earliest copy). So the catalog at time T is, per partition:

- if some deletion made after T touched the partition: the files the *earliest* such deletion retained (the
  partition just before it, which still holds every row present at T);
- else its current files;

each read with ``ingested_at <= T`` (rows ingested later are excluded exactly).

A deletion's retained files exist until GC purges them (``--retention``). Before purging, GC raises the lake's
retention horizon (``logs/retention_horizon.json``: the newest purged deletion's time); an ``as_of`` older than
that horizon could miss rows, so it is refused with :class:`AsOfTooOldError` naming the retention and the oldest
time still available. Ingests alone never limit how far back one can go.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import DatalakeError
from ..lake import keys
from ..lake.layout import PartitionRef
from ..storage.backends import ObjectInfo, Storage
from . import retained, versions

HORIZON = f"{keys.LOGS}/retention_horizon.json"
_PART = re.compile(r"provider=([^/]+)/dataset=([^/]+)/task=([^/]+)/variant=([^/]+)/([^/]+\.parquet)")
_FILTERS = ("provider", "dataset", "task", "variant")


class AsOfError(DatalakeError, ValueError):
    """An ``as_of`` that is neither a timestamp nor a recorded catalog version id, or lies in the future."""


class AsOfTooOldError(DatalakeError, ValueError):
    """``as_of`` is older than what the retention still holds: the answer could miss deleted rows."""


def given(value: Any) -> Any:
    """``as_of`` as given, or None for no ``as_of``: None, an empty or a blank string mean "now" everywhere
    (Python, CLI ``--as-of ""``, Dagster config), as Dagster's unset ``as_of`` has always meant."""
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def pick(explicit: Any, in_selection: Any) -> Any:
    """The ``as_of`` of a call that takes it both as an argument and in its selection: either one, or the same
    in both; AsOfError naming both when they differ (never one silently winning)."""
    explicit, in_selection = given(explicit), given(in_selection)
    if explicit is not None and in_selection is not None and explicit != in_selection:
        raise AsOfError(
            f"as_of given twice with different values: as_of={explicit!r} and the selection's as_of="
            f"{in_selection!r}; give one"
        )
    return explicit if explicit is not None else in_selection


def parse_timestamp(value: str | datetime) -> datetime:
    """An ISO 8601 timestamp (``2026-12-01``, ``2026-12-01T05:00:00+02:00``, ``...Z``) -> aware UTC datetime; a
    naive one is taken as UTC. AsOfError otherwise."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise AsOfError(
                f"as_of {value!r} is neither an ISO 8601 timestamp (e.g. 2026-12-01T05:00:00Z) nor a catalog "
                "version id (v...; see `datalake catalog versions`)"
            ) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def check_value(value: str | datetime) -> datetime | None:
    """What can be checked of ``as_of`` without the lake (before any work starts): a timestamp -> its UTC time,
    AsOfError when it is unparseable or in the future (the catalog of then does not exist yet); a version id
    (``v...``) -> None (the lake's versions say whether it exists)."""
    if isinstance(value, str) and value.strip().startswith("v"):
        return None
    if not isinstance(value, (str, datetime)):
        raise AsOfError(f"as_of must be an ISO 8601 timestamp or a catalog version id, got {value!r}")
    at = parse_timestamp(value)
    now = datetime.now(timezone.utc)
    if at > now:
        raise AsOfError(
            f"as_of {at.isoformat()} is in the future (now is {now.isoformat(timespec='seconds')}): the catalog "
            "of then does not exist yet; drop as_of to read the catalog as it is now"
        )
    return at


def resolve(storage: Storage, value: str | datetime) -> datetime:
    """``as_of`` (a timestamp or a version id) -> the UTC time it means, checked against the retention horizon.
    Raises AsOfError (also for a time in the future), :class:`~.versions.UnknownVersionError` or
    AsOfTooOldError."""
    at = check_value(value)
    if at is None:
        at = versions.version_time(storage, str(value).strip())
    check_retention(storage, at)
    return at


def horizon(storage: Storage) -> dict[str, Any] | None:
    """The retention horizon GC recorded (``purged_through_ts``, ``purged_through``, ``retention_seconds``), or
    None when no deletion was ever purged."""
    try:
        doc = json.loads(storage.read_bytes(HORIZON))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def raise_horizon(storage: Storage, deleted_ts: float, retention_seconds: float) -> None:
    """Record that the retained files of a deletion made at ``deleted_ts`` are about to be purged (GC calls this
    before purging, so an interrupted purge never leaves an ``as_of`` answer silently incomplete)."""
    current = horizon(storage) or {}
    through = max(float(current.get("purged_through_ts") or 0.0), deleted_ts)
    doc = {
        "purged_through_ts": through,
        "purged_through": datetime.fromtimestamp(through, timezone.utc).isoformat(timespec="microseconds"),
        "retention_seconds": retention_seconds,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_bytes(HORIZON, json.dumps(doc, indent=2).encode())


def check_retention(storage: Storage, at: datetime) -> None:
    """AsOfTooOldError when ``at`` is older than the newest deletion GC purged."""
    doc = horizon(storage)
    if doc is None or at.timestamp() >= float(doc.get("purged_through_ts") or 0.0):
        return
    retention = float(doc.get("retention_seconds") or 0.0)
    raise AsOfTooOldError(
        f"as_of {at.isoformat()} is older than the lake's retention holds: GC (retention {retention / 3600:g} h) "
        f"purged the catalog files of deletions up to {doc.get('purged_through')}, so rows deleted since could "
        f"be missing; the oldest time available is {doc.get('purged_through')}"
    )


@dataclass(frozen=True)
class SnapshotFile:
    """One Parquet file of the catalog at ``as_of``: its object and the partition it belongs to."""

    info: ObjectInfo
    ref: PartitionRef


def _parse(key: str, prefix: str) -> tuple[PartitionRef, str] | None:
    match = _PART.fullmatch(key[len(prefix) + 1 :]) if key.startswith(prefix + "/") else None
    if not match or match.group(5).startswith((".", "_")):
        return None
    return PartitionRef(*match.group(1, 2, 3, 4)), match.group(5)


def _planned_files(storage: Storage, deletion_id: str) -> dict[PartitionRef, set[str]]:
    """The retained Parquet keys a deletion's record says it copies, per partition ({} for a record missing or
    unreadable: then whatever is retained is taken as complete)."""
    try:
        doc = json.loads(storage.read_bytes(keys.deletion_record(deletion_id)))
        planned = {
            PartitionRef.parse(p["partition"]): {
                keys.retained_file(deletion_id, k) for k in p["files"] if str(k).endswith(".parquet")
            }
            for p in doc.get("partitions", [])
        }
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return planned


def snapshot(
    storage: Storage, at: datetime, filters: Sequence[str | Sequence[str] | None] = (None, None, None, None)
) -> list[SnapshotFile]:
    """The Parquet files holding the catalog at ``at`` (see the module: read them with ``ingested_at <= at``),
    for the partitions matching ``filters`` (provider, dataset, task, variant: a value or a list each), ordered
    by partition, ``data.parquet`` first. Does not check the retention (:func:`resolve` does)."""
    chosen: dict[PartitionRef, list[ObjectInfo]] = {}
    for deletion in retained.list_retained(storage):  # oldest first: the earliest deletion after ``at`` wins
        if deletion.deleted_ts <= at.timestamp():
            continue
        found: dict[PartitionRef, list[ObjectInfo]] = {}
        for obj in storage.list(keys.retained(deletion.deletion_id)):
            parsed = _parse(obj.key, keys.retained(deletion.deletion_id))
            if parsed:
                found.setdefault(parsed[0], []).append(obj)
        expected = _planned_files(storage, deletion.deletion_id)
        for ref, objects in found.items():
            if ref in expected and not expected[ref] <= {o.key for o in objects}:
                continue  # still being copied: the partition is unchanged until the copy is done
            chosen.setdefault(ref, objects)
    current: dict[PartitionRef, list[ObjectInfo]] = {}
    for obj in storage.list(keys.CATALOG):
        parsed = _parse(obj.key, keys.CATALOG)
        if parsed:
            current.setdefault(parsed[0], []).append(obj)
    for ref, objects in current.items():
        chosen.setdefault(ref, objects)
    wanted = [None if f is None else ([f] if isinstance(f, str) else list(f)) for f in filters]
    out: list[SnapshotFile] = []
    for ref in sorted(chosen, key=lambda r: r.key):
        values = (ref.provider, ref.dataset, ref.task, ref.variant)
        if all(w is None or v in w for w, v in zip(wanted, values)):
            objects = sorted(chosen[ref], key=lambda o: (not o.key.endswith("/" + keys.COMPACTED_PART), o.key))
            out.extend(SnapshotFile(o, ref) for o in objects)
    return out
