"""Where a batch is and what happened to it, on either backend: one reader over the lake's storage, one record
shape (:func:`batch_entry`) and the rules for when a job id is taken.

A batch is found in up to four places, the most current first:

* ``processing``: claimed (locally its folder moved into ``staging/processing/``; on S3 the claim object
  ``staging/processing/<job>/_claim.json``, the batch's objects staying in ``staging/pending/``);
* ``pending``: anything under ``staging/pending/<job>/``, with or without a readable ``_metadata.json``;
* ``record``: the job record ``logs/jobs/<job>.json`` written when processing ended (done or failed);
* ``failed``: ``staging/failed/<job>/`` with ``error.json`` (rejected before a run, or failed in one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from ..storage.backends import LocalStorage, Storage
from ..storage.pool import s3_map
from . import keys
from .keys import BATCH_MANIFEST, ERROR_FILE
from .layout import PartitionRef

# Given the claim marker of a claimed batch (a dict), the orchestrator's view: (state, run_id).
RunState = Callable[[dict[str, Any]], "tuple[str, str | None]"]

# Every entry of ``process status`` / ``process list`` has these keys, in this order (None when unknown).
ENTRY_KEYS = (
    "job_id",
    "state",
    "partition",
    "rows",
    "rows_added",
    "rows_duplicate",
    "rows_rejected",
    "error",
    "path",
    "run_id",
    "finished_at",
)
STATE_ORDER = {
    "pending": 0,
    "queued": 1,
    "processing": 1,
    "running": 1,
    "done": 2,
    "failed": 3,
    "quarantined": 4,
    "deleted": 5,
}
JOB_ID_USED = "job id {job_id!r} is already used in this lake; pick another"

# Every place whose presence means a job id is taken (uploads and stage_url refuse it): a batch being written,
# waiting, claimed, failed or recorded, and a zip being streamed in for it.
JOB_ID_PLACES = (
    keys.pending_batch,
    keys.pending_temp,
    keys.processing_batch,
    keys.failed_batch,
    keys.job_record,
    keys.incoming_zip,
)


def key_present(storage: Storage, key: str) -> bool:
    """Whether anything is at ``key``: a file or folder (also an empty one) locally; an object, or objects under
    ``key/``, on S3 (where folders do not exist)."""
    if isinstance(storage, LocalStorage):
        return os.path.lexists(storage.path(key))
    return storage.exists(key) or next(iter(storage.list(key)), None) is not None


def check_job_id_free(storage: Storage, job_id: str) -> None:
    """Raise :class:`ValidationError` (``JOB_ID_USED``) when any of :data:`JOB_ID_PLACES` holds ``job_id``."""
    places = [place(job_id) for place in JOB_ID_PLACES]
    if isinstance(storage, LocalStorage):
        used = any(key_present(storage, k) for k in places)
    else:  # a HEAD and a listing per place, all at once: sequential they cost 12 round trips per upload
        used = any(s3_map(lambda k: key_present(storage, k), places))
    if used:
        deleted = _doc(storage, keys.job_record(job_id)).get("deleted")
        why = f": its batch was deleted ({deletion_note(deleted)})" if isinstance(deleted, dict) else ""
        raise ValidationError(JOB_ID_USED.format(job_id=job_id) + why)


def done_job_reused(storage: Storage, job_id: str) -> str | None:
    """Why a pending batch must not be processed under its job id, or None: a batch of that id is done already
    (its rows are in ``part-<job>.parquet``, which processing this one would replace). Uploads refuse a used
    job id; this catches a hand drop (its folder name is its job id) or a folder put into ``pending/`` by hand.
    A failed batch's id stays usable: a failed batch is moved back to ``pending/`` to try again."""
    record = _doc(storage, keys.job_record(job_id))
    if record.get("status") != "done":
        return None
    used = JOB_ID_USED.format(job_id=job_id)
    deleted = record.get("deleted")
    if isinstance(deleted, dict):  # its rows were deleted, yet the id stays taken: the record says who and when
        return f"{used}: a batch of that id was deleted ({deletion_note(deleted)}); rename the folder"
    return f"{used}: a batch of that id is done ({keys.job_record(job_id)}); rename the folder"


def _doc(storage: Storage, key: str) -> dict[str, Any]:
    """A JSON object from ``key``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(storage.read_bytes(key))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def partition_of(manifest: dict[str, Any]) -> str | None:
    """The partition key a manifest (full or hand-drop shape) names, or None when it names none validly."""
    if manifest.get("partition"):
        return str(manifest["partition"])
    try:
        task = manifest.get("task") or "raw"
        variant = manifest.get("variant") or ("image" if task == "raw" else "default")
        return PartitionRef(manifest["provider"], manifest["dataset"], task, variant).key
    except (KeyError, TypeError, ValueError):
        return None


def quarantine_of(name: str, error: dict[str, Any]) -> str | None:
    """The done batch whose set-aside files folder ``staging/failed/<name>`` holds (rows it rejected, files a
    hand drop did not use: ``<job>-rejected``, ``<job>-unreferenced``), from its ``error.json``; else None."""
    job_id = error.get("job_id")
    return job_id if isinstance(job_id, str) and job_id != name and name.startswith(f"{job_id}-") else None


def record_state(record: dict[str, Any]) -> str:
    if isinstance(record.get("deleted"), dict):  # ``datalake delete`` removed its rows (core/lifecycle/delete.py)
        return "deleted"
    return record["status"] if record.get("status") in ("done", "failed") else "failed"


def deletion_note(deleted: dict[str, Any]) -> str:
    """The ``error`` of a deleted batch's status: its deletion id, who deleted it and when."""
    head = f"deleted by deletion {deleted.get('deletion_id')} ({deleted.get('who')}, {deleted.get('deleted_at')}); "
    if deleted.get("purged_at"):  # GC's retention passed: the retained folder is gone
        return head + f"its catalog files were purged by GC at {deleted['purged_at']}"
    return head + f"its catalog files are retained at {deleted.get('retained')}"


def current_part_file(storage: Storage, record: dict[str, Any]) -> str | None:
    """The file holding a done batch's rows now: the recorded part file, or the partition's ``data.parquet``
    once a compaction (or a deletion of another batch) merged it; None when neither exists (or it was deleted)."""
    part = record.get("part_file")
    if not part or isinstance(record.get("deleted"), dict):
        return None
    part = str(part)
    key = part[len(storage.uri) + 1 :] if part.startswith(f"{storage.uri}/") else None
    if storage.exists(key) if key is not None else os.path.exists(part):
        return part
    try:
        compacted = keys.compacted_file(PartitionRef.parse(str(record.get("partition"))))
    except ValueError:
        return None
    return f"{storage.uri}/{compacted}" if storage.exists(compacted) else None


def batch_entry(
    job_id: str,
    state: str,
    *,
    path: str | None = None,
    manifest: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The one shape of a batch's status: :data:`ENTRY_KEYS` in order, None when unknown.

    ``record`` (the job record, once processing ended) gives partition, row counts, error, path (the part file or
    the failed/ folder), run id and ``finished_at``; without one, ``manifest`` (the batch's ``_metadata.json``)
    gives partition and ``rows`` (its ``row_count``; None for a hand drop) and ``error`` (``error.json`` of a
    failed/ folder) the reason, the rejected rows, the run id and ``finished_at`` (its ``failed_at``).
    """
    manifest, record, error = manifest or {}, record or {}, error or {}
    entry: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    entry.update(job_id=job_id, state=state, path=path, run_id=run_id)
    if record:
        entry.update(
            partition=record.get("partition"),
            rows=record.get("rows_in"),
            rows_added=record.get("rows_added"),
            rows_duplicate=record.get("rows_duplicate"),
            rows_rejected=record.get("rows_rejected"),
            error=record.get("error"),
            path=record.get("rejected_dir") or record.get("part_file"),
            run_id=record.get("run_id") or run_id,
            finished_at=record.get("finished_at"),
        )
        if state == "deleted":  # the deletion in the existing fields: the key set stays ENTRY_KEYS
            deleted = record.get("deleted") or {}
            entry.update(error=deletion_note(deleted), path=deleted.get("retained"))
        return entry
    entry.update(partition=partition_of(manifest) or error.get("partition"), rows=manifest.get("row_count"))
    if state in ("failed", "quarantined"):
        entry.update(
            error=error.get("error") or f"(no {ERROR_FILE})",
            rows_rejected=len(error.get("rejected") or []) or None,
            run_id=error.get("run_id") or run_id,
            finished_at=error.get("failed_at"),
        )
    return entry


class BatchReader:
    """Status of the batches of a lake from its storage; ``local`` says where a claimed batch's files are
    (``staging/processing/<job>/`` locally, still ``staging/pending/<job>/`` on S3) and its claim marker."""

    def __init__(self, storage: Storage, local: bool):
        self.storage = storage
        self.local = local

    def where(self, job_id: str) -> set[str]:
        """The places holding ``job_id`` (see the module docstring); none for a job id that is no key segment."""
        if not job_id or job_id.startswith(".") or "/" in job_id:
            return set()
        found = {
            "processing": key_present(self.storage, keys.processing_batch(job_id)),
            "pending": key_present(self.storage, keys.pending_batch(job_id)),
            "record": self.storage.exists(keys.job_record(job_id)),
            "failed": key_present(self.storage, keys.failed_batch(job_id)),
        }
        return {place for place, here in found.items() if here}

    def everywhere(self) -> dict[str, set[str]]:
        """Every job id of the lake with the places holding it (four listings)."""
        found: dict[str, set[str]] = {}
        for place, prefix in (("processing", keys.PROCESSING), ("pending", keys.PENDING), ("failed", keys.FAILED)):
            for name in self.storage.list_dirs(prefix):
                if not name.startswith("."):  # a batch being written or deleted
                    found.setdefault(name, set()).add(place)
        for obj in self.storage.list(keys.JOBS):
            name = obj.key[len(keys.JOBS) + 1 :]
            if "/" not in name and name.endswith(".json") and len(name) > len(".json"):
                found.setdefault(name[: -len(".json")], set()).add("record")
        return found

    def entry(self, job_id: str, places: set[str], run_state: RunState) -> dict[str, Any] | None:
        """The status of a batch found in ``places``, from the most current one; None when it is nowhere."""
        if "processing" in places:
            folder = keys.processing_batch(job_id) if self.local else keys.pending_batch(job_id)
            claim = _doc(self.storage, keys.claim_marker(job_id, local=self.local))
            state, run_id = run_state({**claim, "job_id": job_id})
            return batch_entry(job_id, state, path=self._path(folder), manifest=self._manifest(folder), run_id=run_id)
        if "pending" in places:
            folder = keys.pending_batch(job_id)
            return batch_entry(job_id, "pending", path=self._path(folder), manifest=self._manifest(folder))
        if "record" in places:
            record = _doc(self.storage, keys.job_record(job_id))
            if record.get("part_file"):  # never a part file a compaction or deletion removed
                record["part_file"] = current_part_file(self.storage, record)
            entry = batch_entry(job_id, record_state(record), record=record)
            if "failed" in places and entry["state"] in ("done", "deleted"):
                # A later hand drop under a taken id, refused into failed/: the record still wins (its rows are
                # the lake's), but the status names the refused drop, or nothing would point at it.
                folder = keys.failed_batch(job_id)
                refused = _doc(self.storage, f"{folder}/{ERROR_FILE}").get("error") or f"(no {ERROR_FILE})"
                note = f"a later hand drop under this id was refused, kept at {self._path(folder)}: {refused}"
                entry["error"] = f"{entry['error']}; {note}" if entry["error"] else note
            return entry
        if "failed" in places:
            folder = keys.failed_batch(job_id)
            error = _doc(self.storage, f"{folder}/{ERROR_FILE}")
            state = "quarantined" if quarantine_of(job_id, error) else "failed"
            return batch_entry(job_id, state, path=self._path(folder), manifest=self._manifest(folder), error=error)
        return None

    def status(self, job_id: str, run_state: RunState) -> dict[str, Any] | None:
        return self.entry(job_id, self.where(job_id), run_state)

    def list_all(self, run_state: RunState) -> list[dict[str, Any]]:
        """Every batch, one entry per job id, by state (pending, claimed, done, failed) then job id."""
        entries = [e for job_id, places in self.everywhere().items() if (e := self.entry(job_id, places, run_state))]
        return sorted(entries, key=lambda e: (STATE_ORDER.get(e["state"], 9), e["job_id"]))

    def _manifest(self, folder: str) -> dict[str, Any]:
        return _doc(self.storage, f"{folder}/{BATCH_MANIFEST}")

    def _path(self, key: str) -> str:
        return f"{self.storage.uri}/{key}"
