"""``datalake delete``: remove a batch, a partition, a dataset or a provider from the catalog, on either backend.

A deletion is planned first (:func:`plan_delete`: the partitions, rows and files it touches, and the bytes of
assets only the deleted rows reference, which GC frees once the retention passes), and a dry run stops there.
The real run then, for every partition at once (refused with :class:`~..lake.locks.PartitionBusy` while a run
holds any of them: ``Lake.hold_partition``):

0. writes ``logs/lifecycle/<deletion-id>.json`` with ``state: started`` and the marker
   ``logs/deletions_open/<deletion-id>``, before any catalog change: a delete killed midway is finished by the
   next delete or GC (:func:`finish_open`), so its rows, its warehouse and its record never stay half done;
1. writes ``catalog_retained/<deletion-id>/deletion.json`` (who, what, when) and copies every catalog file of the
   partition there (:mod:`.retained`: nothing is destroyed, so time travel can read the catalog as it was);
2. drops the partition when every row goes (``Lake.drop_partition``), else compacts it without the batch's rows
   (``compact_partition(drop_batches=...)`` in ``Lake.partition_view``, published by ``Lake.publish_partition``:
   the partition stays one queryable ``data.parquet``) and removes the batch from its ``_metadata.json``;
3. refreshes ``catalog.duckdb``, writes ``logs/lifecycle/<deletion-id>.json`` with ``state: done`` and removes
   the marker.

Assets are not touched: GC removes them once nothing references them (:mod:`.gc`). Athena tables read the part
files themselves, so Athena sees the deletion at once; a removed partition stays registered in Glue, empty.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..catalog.parts import compact_partition, partition_files, read_partition_metadata
from ..lake import keys
from ..lake.batches import BatchReader
from ..lake.layout import PartitionRef, check_name
from ..lake.locks import exclusive_lock
from ..storage.files import write_json_atomic
from . import refs, retained, versions


@dataclass(frozen=True)
class DeleteSelection:
    """What to delete: exactly one of a batch id, a partition ``P/D/T/V``, a dataset ``P/D`` or a provider ``P``."""

    batch: str | None = None
    partition: str | None = None
    dataset: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        given = [k for k, v in asdict(self).items() if v]
        if len(given) != 1:
            raise ValueError("choose exactly one of batch, partition, dataset (P/D) or provider (P) to delete")
        if self.partition:
            PartitionRef.parse(self.partition)
        if self.dataset:
            parts = self.dataset.split("/")
            if len(parts) != 2:
                raise ValueError(f"dataset {self.dataset!r} must look like provider/dataset")
            check_name("provider", parts[0])
            check_name("dataset", parts[1])
        if self.provider:
            check_name("provider", self.provider)

    def describe(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    def drop_batches(self) -> frozenset[str] | None:
        """The deleted ``batch_id`` values, or None when whole partitions go."""
        return frozenset([self.batch]) if self.batch else None

    def matches(self, ref: PartitionRef) -> bool:
        if self.partition:
            return ref.key == self.partition
        if self.dataset:
            return f"{ref.provider}/{ref.dataset}" == self.dataset
        return ref.provider == self.provider


@dataclass
class PartitionPlan:
    partition: str
    rows: int  # rows deleted
    rows_before: int
    files: list[str]  # catalog keys of the partition (Parquet and _metadata.json), all retained
    removed: bool  # no row is left: the partition goes


@dataclass
class DeletePlan:
    selection: dict[str, str]
    partitions: list[PartitionPlan] = field(default_factory=list)
    rows: int = 0
    assets_freed: int = 0  # assets only the deleted rows reference (GC frees them after the retention)
    bytes_freed: int = 0
    waiting: list[dict[str, Any]] = field(default_factory=list)  # batches of the selection not processed yet

    def to_json(self) -> dict[str, Any]:
        return {
            "selection": self.selection,
            "partitions": [asdict(p) for p in self.partitions],
            "rows": self.rows,
            "partitions_removed": sum(p.removed for p in self.partitions),
            "assets_freed": self.assets_freed,
            "bytes_freed": self.bytes_freed,
            "waiting_batches": self.waiting,
        }


RETAINED_COMPLETE = "_retained_complete"


def _partitions_of(lake, selection: DeleteSelection) -> list[PartitionRef]:
    refs_ = [r for r in lake.partitions() if selection.batch or selection.matches(r)]
    if selection.batch:  # the partitions whose _metadata.json lists the batch
        refs_ = [r for r in refs_ if selection.batch in _batches(lake, r)]
    if not refs_:
        note = _deleted_note(lake, selection.batch) if selection.batch else None
        if note:
            raise ValueError(
                f"batch {selection.batch} was already deleted by deletion {note.get('deletion_id')} "
                f"({note.get('who')}) at {note.get('deleted_at')}"
            )
        raise ValueError(f"nothing to delete: no partition holds {_what(selection)} in {lake.base}")
    return refs_


def _deleted_note(lake, batch: str) -> dict[str, Any] | None:
    try:
        record = json.loads(lake.storage.read_bytes(keys.job_record(batch)))
    except (OSError, ValueError):
        return None
    note = record.get("deleted") if isinstance(record, dict) else None
    return note if isinstance(note, dict) else None


def _batches(lake, ref: PartitionRef) -> set[str]:
    try:
        doc = json.loads(lake.storage.read_bytes(keys.partition_metadata(ref)))
    except (FileNotFoundError, ValueError):
        return set()
    return {str(b.get("job_id")) for b in doc.get("batches", []) if isinstance(b, dict)}


def _what(selection: DeleteSelection) -> str:
    return " ".join(f"{k} {v}" for k, v in selection.describe().items())


def plan_delete(lake, selection: DeleteSelection) -> DeletePlan:
    """What deleting ``selection`` removes, read-only. ``bytes_freed`` counts each asset (by path) that the deleted
    rows reference and nothing else does: no kept row of any partition, no ``create_data_file`` entry (a retained
    file of an earlier deletion expires first, so it keeps nothing beyond this deletion's retention). ValueError
    when nothing matches."""
    plan = DeletePlan(selection.describe())
    drop = selection.drop_batches()
    touched: set[str] = set()
    deleted: set[str] = set()
    kept: set[str] = set()
    for ref in _partitions_of(lake, selection):
        objects = [
            o.key for o in lake.storage.list(keys.partition(ref)) if not o.key.rsplit("/", 1)[-1].startswith(".")
        ]
        parts = [o.key for o in refs.parquet_objects(lake.storage, keys.partition(ref))]
        touched.update(parts)
        rows = rows_deleted = 0
        for key in parts:
            split = (
                refs.all_dropped(lake.storage, key) if drop is None else refs.part_references(lake.storage, key, drop)
            )
            rows, rows_deleted = rows + split.rows, rows_deleted + split.rows_deleted
            deleted |= split.deleted
            kept |= split.kept
        plan.partitions.append(PartitionPlan(ref.key, rows_deleted, rows, sorted(objects), rows_deleted == rows))
        plan.rows += rows_deleted
    if drop is not None:
        plan.partitions = [p for p in plan.partitions if p.rows or p.removed]
    # retained files of earlier deletions are no roots here: they expire before this deletion's own copies do, so
    # an asset only they and the deleted rows reference is one GC takes once this deletion's retention passes
    others = refs.lake_references(lake, skip=touched, with_retained=False)
    sizes = refs.sizes(lake.storage, deleted - kept - others)
    plan.assets_freed, plan.bytes_freed = len(sizes), sum(sizes.values())
    plan.waiting = _waiting(lake, selection, {p.partition for p in plan.partitions})
    return plan


def _waiting(lake, selection: DeleteSelection, partitions: set[str]) -> list[dict[str, Any]]:
    """Batches of the selection's partitions still in staging (``pending``, or ``claimed`` by a run): a delete
    does not touch them, so a pending one re-creates its partition when it is processed after the delete (and a
    claimed one makes the real delete refused). One manifest read per batch in staging."""
    reader = BatchReader(lake.storage, lake.kind == "local")
    found = []
    for job_id, places in sorted(reader.everywhere().items()):
        if not places & {"pending", "processing"}:
            continue
        entry = reader.entry(job_id, places, lambda claim: ("claimed", None)) or {}
        partition = str(entry.get("partition") or "")
        try:
            ours = bool(partition) and (
                partition in partitions or (not selection.batch and selection.matches(PartitionRef.parse(partition)))
            )
        except ValueError:  # a hand drop naming no valid partition yet
            ours = False
        if ours:
            found.append({"job_id": job_id, "state": entry["state"], "partition": partition})
    return found


def delete(
    lake, selection: DeleteSelection, dry_run: bool = False, batch_size: int = 10_000, refresh: bool = True
) -> dict[str, Any]:
    """Delete ``selection`` from the catalog of ``lake`` (see the module); return the plan's JSON plus
    ``dry_run``, ``deletion_id``, ``who``, ``deleted_at``, ``retained`` (the retained folder's key) and
    ``warehouse`` (the refresh summary, or None). Raises ValueError when nothing matches and
    :class:`~..lake.locks.PartitionBusy` while a run holds one of the partitions (nothing is changed then). The
    real run plans while it holds the partitions, so what it reports is what it removed."""
    if dry_run:
        return _document(plan_delete(lake, selection), True)
    finished = finish_open(lake, refresh=refresh)  # a deletion killed midway first (it may be this selection)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        held: set[PartitionRef] = set()

        def hold(refs_: list[PartitionRef]) -> None:
            for ref in refs_:
                if ref not in held:
                    stack.enter_context(lake.hold_partition(ref))
                    held.add(ref)

        hold(_partitions_of(lake, selection))  # every partition held before any is read for the plan or changed
        plan = plan_delete(lake, selection)
        wanted = [PartitionRef.parse(p.partition) for p in plan.partitions]
        hold(wanted)  # a partition of the dataset or provider created meanwhile
        doc = _document(plan, False)
        gone = [selection.batch] if selection.batch else sorted(set().union(*(_batches(lake, r) for r in wanted)))
        doc["batches_deleted"] = gone
        doc["deletions_finished"] = finished
        _write_lifecycle(lake, {**doc, "state": "started"})  # before any catalog change: a kill leaves it open
        lake.storage.write_bytes(keys.deletion_open(doc["deletion_id"]), b"")
        retained.write_record(lake.storage, doc["deletion_id"], doc)
        doc["catalog_versions"] = [
            _delete_in_partition(lake, ref, selection, doc["deletion_id"], batch_size) for ref in wanted
        ]
        _mark_deleted(lake, gone, doc)
    if refresh:
        with exclusive_lock(lake.warehouse_lock):
            doc["warehouse"] = lake.refresh_warehouse()
    doc["seconds"] = round(time.monotonic() - started, 3)
    _close(lake, {**doc, "state": "done"})
    return doc


def _write_lifecycle(lake, doc: dict[str, Any]) -> None:
    record = {"action": "delete", **doc}
    lake.storage.write_bytes(
        keys.lifecycle_record(doc["deletion_id"]), json.dumps(record, indent=2, default=str).encode()
    )


def _close(lake, doc: dict[str, Any]) -> None:
    """The record says ``done`` first, then the marker goes: a kill in between leaves a marker the next run
    finishes again, harmlessly."""
    _write_lifecycle(lake, doc)
    lake.storage.delete([keys.deletion_open(doc["deletion_id"])])


def open_deletions(lake) -> list[str]:
    """The ids of the deletions started and never finished (killed midway), oldest first."""
    return sorted(o.key.rsplit("/", 1)[-1] for o in lake.storage.list(keys.DELETIONS_OPEN))


def finish_open(lake, refresh: bool = True, batch_size: int = 10_000) -> list[str]:
    """Finish every deletion left ``started`` by a run killed midway: delete the selection in the partitions
    that still hold it (under the same deletion id), mark its batches deleted, refresh ``catalog.duckdb`` and
    complete its lifecycle record (``recovered_at``, ``recovered_by``). Its record is read from
    ``logs/lifecycle`` (else the retained ``deletion.json``). Returns the ids finished."""
    finished = []
    for deletion_id in open_deletions(lake):
        doc: dict[str, Any] = {"deletion_id": deletion_id}
        for key in (keys.lifecycle_record(deletion_id), keys.deletion_record(deletion_id)):
            with contextlib.suppress(OSError, ValueError):
                doc = {**json.loads(lake.storage.read_bytes(key)), **doc}
                break
        doc.pop("action", None)
        doc.setdefault("retained", keys.retained(deletion_id))
        selection = DeleteSelection(**doc["selection"]) if isinstance(doc.get("selection"), dict) else None
        if selection is not None:
            with contextlib.ExitStack() as stack:
                try:
                    left = _partitions_of(lake, selection)
                except ValueError:  # every partition was done before the kill
                    left = []
                for ref in left:
                    stack.enter_context(lake.hold_partition(ref))
                versions_ = [_delete_in_partition(lake, ref, selection, deletion_id, batch_size) for ref in left]
                doc["catalog_versions"] = [*doc.get("catalog_versions", []), *versions_]
        if {"who", "deleted_at"} <= doc.keys():
            _mark_deleted(lake, list(doc.get("batches_deleted") or []), doc)
        if refresh:
            with exclusive_lock(lake.warehouse_lock):
                doc["warehouse"] = lake.refresh_warehouse()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _close(lake, {**doc, "state": "done", "recovered_at": now, "recovered_by": refs.who()})
        finished.append(deletion_id)
    return finished


def _mark_deleted(lake, batches: list[str], doc: dict[str, Any]) -> None:
    """Record the deletion in the job record of every deleted batch, so ``process status`` and lineage say
    ``deleted`` (with who and when) instead of pointing at a part file that is gone."""
    note = {k: doc[k] for k in ("deletion_id", "who", "deleted_at")}
    note["retained"] = f"{lake.storage.uri}/{doc['retained']}"
    for batch in batches:
        key = keys.job_record(batch)
        try:
            record = json.loads(lake.storage.read_bytes(key))
        except (OSError, ValueError):
            continue  # a batch with no job record (processed before records were written): nothing to mark
        if isinstance(record, dict):
            lake.storage.write_bytes(key, json.dumps({**record, "deleted": note}, indent=2, default=str).encode())


def mark_purged(lake, deletion_id: str, when: str) -> None:
    """GC is about to purge ``deletion_id``'s retained folder: its batches' job records say so (``retained``
    None, ``purged_at``), so status and lineage stop naming a folder that is gone. Before the purge, so a kill
    in between leaves a note naming a folder the next GC purges anyway."""
    try:
        doc = json.loads(lake.storage.read_bytes(keys.deletion_record(deletion_id)))
    except (OSError, ValueError):
        return  # no record: an old or interrupted purge, nothing names its batches
    for batch in doc.get("batches_deleted") or []:
        key = keys.job_record(str(batch))
        try:
            record = json.loads(lake.storage.read_bytes(key))
        except (OSError, ValueError):
            continue
        note = record.get("deleted") if isinstance(record, dict) else None
        if isinstance(note, dict) and note.get("deletion_id") == deletion_id:
            record["deleted"] = {**note, "retained": None, "purged_at": when}
            lake.storage.write_bytes(key, json.dumps(record, indent=2, default=str).encode())


def _document(plan: DeletePlan, dry_run: bool) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    deletion_id = retained.new_deletion_id(now)
    return {
        **plan.to_json(),
        "dry_run": dry_run,
        "deletion_id": None if dry_run else deletion_id,
        "who": refs.who(),
        "deleted_at": now.isoformat(timespec="seconds"),
        "deleted_at_ts": now.timestamp(),
        "retained": None if dry_run else keys.retained(deletion_id),
        "warehouse": None,
    }


def _delete_in_partition(lake, ref: PartitionRef, selection: DeleteSelection, deletion_id: str, batch_size: int) -> str:
    """Retain, then delete ``selection`` in one partition; return the catalog version recorded after.

    The retained copy is finished by a marker (``_retained_complete``, a name readers of retained files skip)
    before anything in the partition changes. A run that finishes a killed deletion copies again only without
    the marker: with it, the partition may already hold the rewritten ``data.parquet``, and copying that beside
    the originals would give time travel every kept row twice."""
    marker = keys.retained_file(deletion_id, f"{keys.partition(ref)}/{RETAINED_COMPLETE}")
    if not lake.storage.exists(marker):
        for key in lake.storage.list(keys.partition(ref)):
            name = key.key.rsplit("/", 1)[-1]
            if name.endswith(".parquet") or name == keys.PARTITION_METADATA:
                lake.storage.copy(key.key, keys.retained_file(deletion_id, key.key))
        lake.storage.write_bytes(marker, b"")
    drop = selection.drop_batches()
    if drop is None:  # a whole partition; a batch's partition goes only once compaction finds no row left
        lake.drop_partition(ref)
    else:
        _delete_batches(lake, ref, drop, deletion_id, batch_size)
    detail = {"deletion_id": deletion_id, "selection": selection.describe()}
    return versions.record_version(lake.storage, ref, "delete", detail)["version_id"]


def _delete_batches(lake, ref: PartitionRef, drop: frozenset[str], deletion_id: str, batch_size: int) -> None:
    with lake.partition_view(ref) as view:
        folder = view.partition_dir(ref)
        before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        result = compact_partition(view, ref, batch_size, drop_batches=drop)
        if result.rows == 0 or not partition_files(view, ref):
            lake.drop_partition(ref)
            return
        meta = read_partition_metadata(view, ref)
        if meta:
            meta["batches"] = [b for b in meta.get("batches", []) if b.get("job_id") not in drop]
            meta.setdefault("deletions", []).append(
                {"deletion_id": deletion_id, "batches": sorted(drop), "rows": result.rows_deleted}
            )
            write_json_atomic(view.partition_metadata(ref), meta)
        lake.publish_partition(view, ref, before)
